//! Topic configuration: the keys a topic may set, their checks, and the
//! values the broker reads from them. Values are Kafka's: plain numbers
//! (bytes, milliseconds) and names.

use std::collections::BTreeMap;

/// A refused topic setting, naming the key, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic config {key}={value:?} is invalid: {allowed}")]
pub struct TopicConfigError {
    /// The key.
    pub key: String,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

type Check = fn(&str) -> Result<(), String>;

fn int_at_least(v: &str, min: i64) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        _ => Err(format!("a whole number >= {min}")),
    }
}

fn int_between(v: &str, min: u64, max: u64) -> Result<(), String> {
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        _ => Err(format!("a whole number from {min} to {max}")),
    }
}

fn one_of(v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) { Ok(()) } else { Err(format!("one of {}", allowed.join(" | "))) }
}

/// Every key a topic may set, with its check.
pub const TOPIC_KEYS: &[(&str, Check)] = &[
    ("max.message.bytes", |v| int_between(v, 1, strata_log::limits::BATCH_BYTES_MAX as u64)),
    ("retention.ms", |v| int_at_least(v, -1)),
    ("retention.bytes", |v| int_at_least(v, -1)),
    ("cleanup.policy", |v| one_of(v, &["delete", "compact", "compact,delete", "delete,compact"])),
    ("segment.bytes", |v| int_between(v, strata_log::limits::SEGMENT_BYTES_MIN, strata_log::limits::SEGMENT_BYTES_MAX)),
    ("segment.ms", |v| int_at_least(v, 1)),
    ("min.compaction.lag.ms", |v| int_at_least(v, 0)),
    ("delete.retention.ms", |v| int_at_least(v, 0)),
    ("compression.type", |v| one_of(v, &["producer", "uncompressed", "lz4"])),
    ("flush.policy", |v| one_of(v, &["always", "interval"])),
];

/// Checks every key and value of a topic's configuration.
pub fn validate(configs: &BTreeMap<String, String>) -> Result<(), TopicConfigError> {
    for (key, value) in configs {
        let error = |allowed: String| TopicConfigError { key: key.clone(), value: value.clone(), allowed };
        let Some((_, check)) = TOPIC_KEYS.iter().find(|(k, _)| k == key) else {
            let known = TOPIC_KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ");
            return Err(error(format!("unknown key; known keys: {known}")));
        };
        check(value).map_err(error)?;
    }
    Ok(())
}

/// A topic's settings in force: its own keys over the cluster's defaults
/// (`ServerConfig::topic_defaults`), parsed. Values were checked when they
/// were set; one that does not parse falls back to the default's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    /// Delete sealed segments whose newest record is older (ms); `None`: keep.
    pub retention_ms: Option<u64>,
    /// Delete oldest segments while the partition is larger; `None`: keep.
    pub retention_bytes: Option<u64>,
    /// cleanup.policy includes `delete`.
    pub delete: bool,
    /// cleanup.policy includes `compact`.
    pub compact: bool,
    /// Roll a segment before it grows past this.
    pub segment_bytes: u64,
    /// Roll a segment once its first record is this old (ms).
    pub segment_ms: Option<u64>,
    /// Leave records younger than this uncompacted (ms).
    pub min_compaction_lag_ms: u64,
    /// Keep tombstones this long after they were written (ms).
    pub delete_retention_ms: u64,
    /// The largest batch a producer may send.
    pub max_message_bytes: u64,
    /// `producer`, `uncompressed` or `lz4`.
    pub compression_type: String,
    /// `always` or `interval`.
    pub flush_policy: String,
}

impl TopicSettings {
    /// The settings of a topic with configs `configs` under `defaults`.
    pub fn resolve(defaults: &BTreeMap<String, String>, configs: &BTreeMap<String, String>) -> TopicSettings {
        let get = |key: &str| configs.get(key).or_else(|| defaults.get(key)).map(String::as_str).unwrap_or("");
        let int = |key: &str| -> i64 {
            let parsed = configs.get(key).and_then(|v| v.parse().ok());
            parsed.or_else(|| defaults.get(key).and_then(|v| v.parse().ok())).unwrap_or(-1)
        };
        let positive = |n: i64| (n >= 0).then_some(n as u64);
        let policy = get("cleanup.policy");
        let produce = ProduceSettings::resolve(defaults, configs);
        TopicSettings {
            retention_ms: positive(int("retention.ms")),
            retention_bytes: positive(int("retention.bytes")),
            delete: policy.contains("delete"),
            compact: policy.contains("compact"),
            segment_bytes: positive(int("segment.bytes")).unwrap_or(128 << 20),
            segment_ms: positive(int("segment.ms")),
            min_compaction_lag_ms: positive(int("min.compaction.lag.ms")).unwrap_or(0),
            delete_retention_ms: positive(int("delete.retention.ms")).unwrap_or(86_400_000),
            max_message_bytes: produce.max_message_bytes,
            compression_type: produce.compression_type.to_string(),
            flush_policy: get("flush.policy").to_string(),
        }
    }
}

/// What a produce request needs of a topic's settings, read without
/// [`TopicSettings::resolve`]'s other lookups and allocations (a produce
/// request runs this once per batch; `TopicSettings` takes these two from
/// here).
#[derive(Debug, PartialEq, Eq)]
pub struct ProduceSettings<'a> {
    /// `max.message.bytes`: the largest batch the topic takes.
    pub max_message_bytes: u64,
    /// `compression.type` as set ("" when neither the topic nor the
    /// defaults set it).
    pub compression_type: &'a str,
}

impl<'a> ProduceSettings<'a> {
    /// The settings of a topic with configs `configs` under `defaults`.
    pub fn resolve(defaults: &'a BTreeMap<String, String>, configs: &'a BTreeMap<String, String>) -> Self {
        let parsed = |map: &BTreeMap<String, String>| map.get("max.message.bytes").and_then(|v| v.parse::<i64>().ok());
        let max = parsed(configs).or_else(|| parsed(defaults)).unwrap_or(-1);
        let compression_type =
            configs.get("compression.type").or_else(|| defaults.get("compression.type")).map_or("", String::as_str);
        ProduceSettings { max_message_bytes: if max >= 0 { max as u64 } else { 1 << 20 }, compression_type }
    }
}

/// Checks a topic name as Kafka does: 1–249 of `[a-zA-Z0-9._-]`, not `.`
/// or `..`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > crate::limits::TOPIC_NAME_MAX {
        return Err(format!("a topic name has 1 to {} characters", crate::limits::TOPIC_NAME_MAX));
    }
    if name == "." || name == ".." {
        return Err("a topic may not be named . or ..".into());
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{bad:?} is not allowed in a topic name (use letters, digits, '.', '_', '-')"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_topic_configs_are_refused_naming_key_and_range() {
        let ok = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
        assert!(validate(&ok).is_ok());
        let bad = BTreeMap::from([("segment.bytes".to_string(), "10".to_string())]);
        let err = validate(&bad).expect_err("too small").to_string();
        assert!(err.contains("segment.bytes") && err.contains("\"10\"") && err.contains("65536"), "{err}");
        let unknown = BTreeMap::from([("retention.mss".to_string(), "1".to_string())]);
        assert!(validate(&unknown).expect_err("unknown").to_string().contains("unknown key"));
        assert!(validate_name("orders.v1_x-2").is_ok());
        assert!(validate_name("bad name").is_err() && validate_name("..").is_err() && validate_name("").is_err());
    }

    #[test]
    fn produce_settings_fall_back_from_the_topic_to_the_defaults_to_kafkas_default() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let none = map(&[]);
        let defaults = map(&[("max.message.bytes", "2097152"), ("compression.type", "lz4")]);
        let junk = map(&[("max.message.bytes", "junk")]);
        let set = map(&[("max.message.bytes", "1000"), ("compression.type", "uncompressed")]);
        let negative = map(&[("max.message.bytes", "-1")]);
        let unparsable = map(&[("max.message.bytes", "x"), ("compression.type", "producer")]);
        type Configs = BTreeMap<String, String>;
        let cases: [(&Configs, &Configs, u64, &str); 6] = [
            (&none, &none, 1 << 20, ""),
            (&defaults, &none, 2_097_152, "lz4"),
            (&junk, &none, 1 << 20, ""),
            (&defaults, &set, 1000, "uncompressed"),
            (&defaults, &negative, 1 << 20, "lz4"),
            (&defaults, &unparsable, 2_097_152, "producer"),
        ];
        for (d, c, max, compression) in cases {
            let quick = ProduceSettings::resolve(d, c);
            assert_eq!(quick, ProduceSettings { max_message_bytes: max, compression_type: compression }, "{d:?} {c:?}");
            let full = TopicSettings::resolve(d, c);
            assert_eq!((full.max_message_bytes, full.compression_type.as_str()), (max, compression));
        }
    }
}
