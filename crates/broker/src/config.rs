//! The server's configuration: defaults, then a TOML file, then `STRATA_*`
//! environment variables, then command-line settings, each overriding the
//! one before; every value is checked and an error names the key, the
//! value, where it came from, and what is accepted.
//!
//! Keys are dotted (`limits.max_message_bytes`); a TOML table `[limits]`
//! holds the keys under it. The environment variable of a key is `STRATA_`
//! and the key upper-cased with dots as underscores
//! (`STRATA_LIMITS_MAX_MESSAGE_BYTES`). Sizes take units (`"1 GiB"`,
//! `"64KiB"`, `"1000"` bytes), durations too (`"30s"`, `"100ms"`, `"7d"`).
//! `deploy/strata.toml` documents every key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_log::{FlushPolicy, LogConfig};

/// A configuration error: which key, what value, from where, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is not acceptable.
    #[error("invalid {key} = {value:?} (from {source_name}): {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// The value given.
        value: String,
        /// Where it came from (file, environment, flag).
        source_name: String,
        /// What is accepted.
        reason: String,
    },
    /// A key nobody reads: probably a typo.
    #[error("unknown setting {key} (from {source_name}); known settings: {known}")]
    Unknown {
        /// The key.
        key: String,
        /// Where it came from.
        source_name: String,
        /// The known keys.
        known: String,
    },
    /// The file could not be read or is not TOML.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Settings that are fine alone but not together.
    #[error("{0}")]
    Inconsistent(String),
}

/// Every key the server reads, with its default (`None`: derived).
pub const KEYS: &[(&str, Option<&str>)] = &[
    ("node_id", Some("1")),
    ("data_dir", Some("./data")),
    ("peers", None),
    ("listen.client", Some("0.0.0.0:7070")),
    ("listen.peer", Some("0.0.0.0:7071")),
    ("listen.http", Some("0.0.0.0:7072")),
    ("advertise.client", None),
    ("advertise.peer", None),
    ("log.segment_bytes", Some("128 MiB")),
    ("log.segment_age", Some("7d")),
    ("log.flush_policy", Some("always")),
    ("log.flush_interval", Some("1s")),
    ("log.direct_io", Some("true")),
    ("log.retention", Some("7d")),
    ("log.retention_bytes", Some("unlimited")),
    ("log.cleanup_policy", Some("delete")),
    ("log.delete_retention", Some("1d")),
    ("log.min_compaction_lag", Some("0s")),
    ("log.compression_type", Some("producer")),
    ("log.retention_check_interval", Some("30s")),
    ("log.retention_follower_hold", Some("60s")),
    ("log.cleaner_io_bytes_per_second", Some("64 MiB")),
    ("raft.heartbeat_interval", Some("100ms")),
    ("raft.election_timeout_min", Some("1s")),
    ("raft.election_timeout_max", Some("2s")),
    ("limits.max_message_bytes", Some("1 MiB")),
    ("limits.request_bytes", Some("64 MiB")),
    ("limits.connections", Some("1024")),
    ("limits.produce_memory_bytes", Some("256 MiB")),
    ("limits.min_free_disk_bytes", Some("1 GiB")),
    ("shutdown.grace", Some("10s")),
    ("runtime.worker_threads", Some("auto")),
    ("runtime.keep_cpus_awake", Some("false")),
    ("groups.offsets_partitions", Some("12")),
    ("tls.cert_file", None),
    ("tls.key_file", None),
    ("tls.client_ca_file", None),
    ("tls.peer_ca_file", None),
    ("authorization.enabled", Some("false")),
    ("authorization.super_users", None),
    ("testing.ack_before_quorum", Some("false")),
    ("testing.journal_unsynced", Some("false")),
];

/// The whole server configuration, checked.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This node's id, unique in the cluster and never reused.
    pub node_id: u64,
    /// Where partitions are stored.
    pub data_dir: PathBuf,
    /// Every node of the cluster, this one included, by id → peer address.
    pub peers: BTreeMap<u64, String>,
    /// Client gRPC listener.
    pub listen_client: SocketAddr,
    /// Peer (Raft) listener.
    pub listen_peer: SocketAddr,
    /// HTTP (health) listener.
    pub listen_http: SocketAddr,
    /// The client address other brokers hand to clients.
    pub advertise_client: String,
    /// Settings of every partition log.
    pub log: LogConfig,
    /// The sync period of logs whose topic sets flush.policy=interval.
    pub flush_interval: Duration,
    /// Raft heartbeat period.
    pub heartbeat_interval: Duration,
    /// Raft election timeout range.
    pub election_timeout: (Duration, Duration),
    /// Default max.message.bytes of a topic.
    pub max_message_bytes: u64,
    /// Largest request a client may send.
    pub request_bytes: u64,
    /// Client connections served at once; more wait to be accepted.
    pub connections: usize,
    /// Bytes of produce data in flight at once; beyond, THROTTLED.
    pub produce_memory_bytes: u64,
    /// Produce is refused (UNAVAILABLE) while the data directory's file
    /// system has less than this available; 0: never (see `disk.rs`).
    pub min_free_disk_bytes: u64,
    /// How long a graceful shutdown may take.
    pub shutdown_grace: Duration,
    /// Threads of the async runtime that serves clients, peers and Raft
    /// (`auto`: one per CPU). The flusher threads come on top.
    pub worker_threads: usize,
    /// While the node runs, ask Linux to keep idle CPUs polling instead of
    /// letting them sleep (a CPU latency request of 0 µs held open on
    /// `/dev/cpu_dma_latency`, as tuned's latency-performance profile
    /// does). Every request crosses several threads and processes, and
    /// waking a sleeping CPU for each costs tens of microseconds, more in a
    /// virtual machine. The price: idle CPUs spin (power, or a host's CPU
    /// time). Needs write access to that file (root); Linux only.
    pub keep_cpus_awake: bool,
    /// Partitions of `__consumer_offsets` (fixed once created).
    pub offsets_partitions: u32,
    /// Every topic's settings where the topic sets none: Kafka's topic keys
    /// (`retention.ms`, `cleanup.policy`, ...) as a topic would set them.
    pub topic_defaults: BTreeMap<String, String>,
    /// How often each node applies retention and looks for partitions to
    /// compact.
    pub retention_check_interval: Duration,
    /// How long a due retention purge waits for a follower that still needs
    /// the entries before going ahead (the follower then installs a
    /// snapshot).
    pub retention_follower_hold: Duration,
    /// The compaction cleaner's I/O budget (bytes rewritten per second).
    pub cleaner_io_bytes_per_second: u64,
    /// UNSAFE, for the chaos harness's control run only: answer acks=all
    /// as soon as the leader has proposed the batch, before a majority has
    /// it, so acknowledged writes can be lost. It exists so the chaos
    /// checker can be shown to catch lost writes. Default false.
    pub testing_ack_before_quorum: bool,
    /// UNSAFE, for the chaos harness's disk nemesis only: run every
    /// partition directory under `data_dir` in the storage engine's
    /// journaled mode (`strata_log::io::journaled`), which records what
    /// each file held at its last fdatasync and each directory's names at
    /// its last fsync, so that once the process is killed
    /// `strata_log::io::journaled::lose_unsynced` can make the directory
    /// lose what was not synced, as a power loss would. Every byte written
    /// is written twice. Default false.
    pub testing_journal_unsynced: bool,
    /// TLS on the client port, and on the peer port too when
    /// `tls.peer_ca_file` is set (`tls.*`; `None`: plain TCP).
    pub tls: Option<TlsConfig>,
    /// Whether requests are checked against the access control bindings,
    /// and who is exempt (`authorization.*`).
    pub authorization: crate::auth::Authorizer,
}

/// The node's TLS settings, with the PEM files as read when the
/// configuration was built.
#[derive(Clone)]
pub struct TlsConfig {
    /// The node's certificate (chain), for clients and peers.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// Set: clients must present a certificate this authority signed.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Set: the peer port speaks mutual TLS, peers checked against this
    /// authority.
    pub peer_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("client_auth", &self.client_ca_pem.is_some())
            .field("peer_tls", &self.peer_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// The peer transport's share of it, when the peer port uses TLS.
    pub fn peer(&self) -> Option<strata_raft::PeerTls> {
        let ca_pem = self.peer_ca_pem.clone()?;
        Some(strata_raft::PeerTls { cert_pem: self.cert_pem.clone(), key_pem: self.key_pem.clone(), ca_pem })
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    source_name: String,
}

/// Collects settings from each source, then checks them.
#[derive(Debug, Default, Clone)]
pub struct ConfigBuilder {
    settings: BTreeMap<String, Setting>,
}

impl ConfigBuilder {
    /// A builder with nothing set (every key at its default).
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Reads a TOML file.
    pub fn file(mut self, path: &Path) -> Result<ConfigBuilder, ConfigError> {
        let file_error = |reason: String| ConfigError::File { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| file_error(e.to_string()))?;
        let mut flat = Vec::new();
        flatten("", &table, &mut flat);
        let source_name = path.display().to_string();
        for (key, value) in flat {
            self.set_from(&key, value, &source_name)?;
        }
        Ok(self)
    }

    /// Reads `STRATA_*` variables from `vars` (the process environment in
    /// production). Variables that match no key are ignored: the
    /// environment holds other programs' settings too.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> ConfigBuilder {
        let by_name: BTreeMap<String, &str> = KEYS.iter().map(|(k, _)| (env_name(k), *k)).collect();
        for (name, value) in vars {
            if let Some(key) = by_name.get(&name) {
                self.settings.insert(key.to_string(), Setting { value, source_name: format!("${name}") });
            }
        }
        self
    }

    /// Sets one key from the command line.
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Result<ConfigBuilder, ConfigError> {
        self.set_from(key, value.into(), "the command line")?;
        Ok(self)
    }

    fn set_from(&mut self, key: &str, value: String, source_name: &str) -> Result<(), ConfigError> {
        if !KEYS.iter().any(|(k, _)| *k == key) {
            let known = KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ");
            return Err(ConfigError::Unknown { key: key.into(), source_name: source_name.into(), known });
        }
        self.settings.insert(key.into(), Setting { value, source_name: source_name.into() });
        Ok(())
    }

    fn get(&self, key: &str) -> Option<Setting> {
        self.settings.get(key).cloned().or_else(|| {
            let default = KEYS.iter().find(|(k, _)| *k == key).and_then(|(_, d)| *d)?;
            Some(Setting { value: default.into(), source_name: "the default".into() })
        })
    }

    fn parse<T>(&self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
        let Some(setting) = self.get(key) else { return Ok(None) };
        parse(setting.value.trim()).map(Some).map_err(|reason| ConfigError::Invalid {
            key: key.into(),
            value: setting.value.clone(),
            source_name: setting.source_name.clone(),
            reason,
        })
    }

    fn required<T>(&self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        self.parse(key, parse)?.ok_or_else(|| ConfigError::Inconsistent(format!("{key} must be set")))
    }

    /// Checks every setting and builds the configuration.
    pub fn build(&self) -> Result<ServerConfig, ConfigError> {
        let node_id = self.required("node_id", |v| parse_int(v, 1, u64::MAX >> 1))?;
        let data_dir = PathBuf::from(self.required("data_dir", parse_nonempty)?);
        let listen_client = self.required("listen.client", parse_addr)?;
        let listen_peer = self.required("listen.peer", parse_addr)?;
        let listen_http = self.required("listen.http", parse_addr)?;
        let advertise_client =
            self.parse("advertise.client", parse_host_port)?.unwrap_or_else(|| advertised(listen_client));
        let advertise_peer = self.parse("advertise.peer", parse_host_port)?.unwrap_or_else(|| advertised(listen_peer));
        let peers = match self.parse("peers", parse_peers)? {
            Some(peers) => peers,
            None => BTreeMap::from([(node_id, advertise_peer)]),
        };
        if !peers.contains_key(&node_id) {
            return Err(ConfigError::Inconsistent(format!(
                "node_id {node_id} is not in peers ({}); every node lists the whole cluster, itself included",
                peers.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",")
            )));
        }
        let flush_policy = match self.required("log.flush_policy", parse_nonempty)?.as_str() {
            "always" => FlushPolicy::Always,
            "interval" => FlushPolicy::Interval(self.required("log.flush_interval", parse_duration)?),
            _ => {
                return Err(ConfigError::Invalid {
                    key: "log.flush_policy".into(),
                    value: self.get("log.flush_policy").map(|s| s.value).unwrap_or_default(),
                    source_name: self.get("log.flush_policy").map(|s| s.source_name).unwrap_or_default(),
                    reason: "expected \"always\" or \"interval\"".into(),
                });
            }
        };
        let log = LogConfig {
            segment_bytes: self.required("log.segment_bytes", |v| {
                parse_size(v).and_then(|n| {
                    in_range(n, strata_log::limits::SEGMENT_BYTES_MIN, strata_log::limits::SEGMENT_BYTES_MAX)
                })
            })?,
            segment_age_max: Some(self.required("log.segment_age", parse_duration)?),
            flush_policy,
            direct_io: self.required("log.direct_io", parse_bool)?,
            ..LogConfig::default()
        };
        let heartbeat_interval = self.required("raft.heartbeat_interval", parse_duration)?;
        let election_min = self.required("raft.election_timeout_min", parse_duration)?;
        let election_max = self.required("raft.election_timeout_max", parse_duration)?;
        if heartbeat_interval.is_zero() || election_min <= heartbeat_interval * 2 || election_max <= election_min {
            return Err(ConfigError::Inconsistent(format!(
                "raft timing: need 0 < heartbeat_interval ({heartbeat_interval:?}) < election_timeout_min / 2 \
                 ({election_min:?}) and election_timeout_min < election_timeout_max ({election_max:?})"
            )));
        }
        let batch_max = strata_log::limits::BATCH_BYTES_MAX as u64;
        let max_message_bytes =
            self.required("limits.max_message_bytes", |v| parse_size(v).and_then(|n| in_range(n, 1, batch_max)))?;
        let topic_defaults = self.topic_defaults(&log, max_message_bytes)?;
        Ok(ServerConfig {
            node_id,
            data_dir,
            peers,
            listen_client,
            listen_peer,
            listen_http,
            advertise_client,
            log,
            flush_interval: self.required("log.flush_interval", parse_duration)?,
            heartbeat_interval,
            election_timeout: (election_min, election_max),
            max_message_bytes,
            request_bytes: self.required("limits.request_bytes", |v| {
                parse_size(v).and_then(|n| in_range(n, 1024, crate::limits::REQUEST_BYTES_MAX))
            })?,
            connections: self.required("limits.connections", |v| parse_int(v, 1, 1_000_000))? as usize,
            produce_memory_bytes: self.required("limits.produce_memory_bytes", |v| {
                parse_size(v).and_then(|n| in_range(n, 1 << 20, 1 << 40))
            })?,
            min_free_disk_bytes: self
                .required("limits.min_free_disk_bytes", |v| parse_size(v).and_then(|n| in_range(n, 0, 1 << 50)))?,
            shutdown_grace: self.required("shutdown.grace", parse_duration)?,
            worker_threads: self.required("runtime.worker_threads", parse_threads)?,
            keep_cpus_awake: self.required("runtime.keep_cpus_awake", parse_bool)?,
            offsets_partitions: self.required("groups.offsets_partitions", |v| parse_int(v, 1, 1000))? as u32,
            topic_defaults,
            retention_check_interval: self.required("log.retention_check_interval", |v| {
                parse_duration(v).and_then(|d| duration_in(d, Duration::from_millis(10), Duration::from_secs(3600)))
            })?,
            retention_follower_hold: self.required("log.retention_follower_hold", parse_duration)?,
            cleaner_io_bytes_per_second: self.required("log.cleaner_io_bytes_per_second", |v| {
                parse_size(v).and_then(|n| in_range(n, 1 << 20, 1 << 40))
            })?,
            testing_ack_before_quorum: self.required("testing.ack_before_quorum", parse_bool)?,
            testing_journal_unsynced: self.required("testing.journal_unsynced", parse_bool)?,
            tls: self.tls()?,
            authorization: self.authorization()?,
        })
    }

    /// `authorization.*`: only with client certificates, which name the
    /// principals.
    fn authorization(&self) -> Result<crate::auth::Authorizer, ConfigError> {
        let enabled = self.required("authorization.enabled", parse_bool)?;
        let super_users = self
            .parse("authorization.super_users", |v| {
                v.split([';', ','])
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| match p.split_once(':') {
                        Some(("User", "*")) => Err("User:* would make everyone a super user".to_string()),
                        Some(("User", name)) if !name.is_empty() => Ok(p.to_string()),
                        _ => Err(format!("{p:?} is not of the form User:NAME")),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })?
            .unwrap_or_default();
        let set = |key: &str| self.get(key).is_some_and(|s| !s.value.trim().is_empty());
        if enabled && !set("tls.client_ca_file") {
            return Err(ConfigError::Inconsistent(
                "authorization.enabled needs tls.client_ca_file: principals are the names in client certificates \
                 (without them every client would be User:ANONYMOUS)"
                    .into(),
            ));
        }
        if enabled && !set("tls.peer_ca_file") {
            return Err(ConfigError::Inconsistent(
                "authorization.enabled needs tls.peer_ca_file: on a plain peer port anyone who reaches it could \
                 pass for a node, replicate, and change the bindings through the controller"
                    .into(),
            ));
        }
        Ok(crate::auth::Authorizer { enabled, super_users })
    }

    /// Reads the `tls.*` files, each checked to hold PEM of the right kind
    /// (their contents are parsed when the node starts).
    fn tls(&self) -> Result<Option<TlsConfig>, ConfigError> {
        const CERT: &str = "-----BEGIN CERTIFICATE-----";
        const KEY: &str = "PRIVATE KEY-----";
        let read = |key: &str, marker: &'static str| {
            self.parse(key, |path| {
                if path.is_empty() {
                    return Ok(None);
                }
                let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
                if !String::from_utf8_lossy(&bytes).contains(marker) {
                    return Err(format!("the file holds no PEM \"{}\"", marker.trim_matches('-')));
                }
                Ok(Some(bytes))
            })
            .map(Option::flatten)
        };
        let cert = read("tls.cert_file", CERT)?;
        let key = read("tls.key_file", KEY)?;
        let client_ca = read("tls.client_ca_file", CERT)?;
        let peer_ca = read("tls.peer_ca_file", CERT)?;
        if client_ca.is_some() && client_ca == peer_ca {
            return Err(ConfigError::Inconsistent(
                "tls.client_ca_file and tls.peer_ca_file are the same authority: every client certificate would \
                 pass for a node on the peer port; sign clients' certificates with an authority of their own"
                    .into(),
            ));
        }
        match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => {
                Ok(Some(TlsConfig { cert_pem, key_pem, client_ca_pem: client_ca, peer_ca_pem: peer_ca }))
            }
            (None, None) if client_ca.is_none() && peer_ca.is_none() => Ok(None),
            (None, None) => Err(ConfigError::Inconsistent(
                "tls.client_ca_file and tls.peer_ca_file need tls.cert_file and tls.key_file \
                 (this node's certificate and its key)"
                    .into(),
            )),
            (Some(_), None) => Err(ConfigError::Inconsistent("tls.cert_file is set but not tls.key_file".into())),
            (None, Some(_)) => Err(ConfigError::Inconsistent("tls.key_file is set but not tls.cert_file".into())),
        }
    }

    /// The cluster-wide topic defaults, as Kafka topic keys, each checked
    /// as a topic's own setting would be.
    fn topic_defaults(&self, log: &LogConfig, max_message_bytes: u64) -> Result<BTreeMap<String, String>, ConfigError> {
        let millis = |d: Duration| d.as_millis().to_string();
        let forever = |v: &str| matches!(v, "forever" | "unlimited" | "-1");
        let retention_ms = self
            .required("log.retention", |v| if forever(v) { Ok("-1".into()) } else { parse_duration(v).map(millis) })?;
        let retention_bytes = self.required("log.retention_bytes", |v| {
            if forever(v) { Ok("-1".into()) } else { parse_size(v).map(|n| n.to_string()) }
        })?;
        let mut defaults = BTreeMap::from([
            ("retention.ms".to_string(), retention_ms),
            ("retention.bytes".to_string(), retention_bytes),
            ("cleanup.policy".to_string(), self.required("log.cleanup_policy", parse_nonempty)?),
            ("delete.retention.ms".to_string(), millis(self.required("log.delete_retention", parse_duration)?)),
            ("min.compaction.lag.ms".to_string(), millis(self.required("log.min_compaction_lag", parse_duration)?)),
            ("segment.bytes".to_string(), log.segment_bytes.to_string()),
            ("max.message.bytes".to_string(), max_message_bytes.to_string()),
            ("compression.type".to_string(), self.required("log.compression_type", parse_nonempty)?),
            (
                "flush.policy".to_string(),
                match log.flush_policy {
                    FlushPolicy::Always => "always".to_string(),
                    FlushPolicy::Interval(_) => "interval".to_string(),
                },
            ),
        ]);
        if let Some(age) = log.segment_age_max {
            defaults.insert("segment.ms".into(), age.as_millis().max(1).to_string());
        }
        crate::topic_config::validate(&defaults).map_err(|e| {
            let key = match e.key.as_str() {
                "cleanup.policy" => "log.cleanup_policy",
                "compression.type" => "log.compression_type",
                _ => "log.*",
            };
            ConfigError::Inconsistent(format!("{key}: {e}"))
        })?;
        Ok(defaults)
    }
}

fn duration_in(d: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if d < min || d > max {
        return Err(format!("must be between {min:?} and {max:?}"));
    }
    Ok(d)
}

impl ServerConfig {
    /// The Raft timing this configuration asks for.
    pub fn raft_config(&self) -> openraft::Config {
        openraft::Config {
            heartbeat_interval: self.heartbeat_interval.as_millis() as u64,
            election_timeout_min: self.election_timeout.0.as_millis() as u64,
            election_timeout_max: self.election_timeout.1.as_millis() as u64,
            ..strata_raft::default_raft_config()
        }
    }
}

/// The environment variable of a key.
pub fn env_name(key: &str) -> String {
    format!("STRATA_{}", key.to_uppercase().replace('.', "_"))
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::String(s) => out.push((key, s.clone())),
            toml::Value::Array(items) => {
                let joined = items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                out.push((key, joined));
            }
            other => out.push((key, other.to_string())),
        }
    }
}

/// A listen address made reachable: 0.0.0.0 becomes 127.0.0.1.
fn advertised(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() { format!("127.0.0.1:{}", listen.port()) } else { listen.to_string() }
}

fn in_range(n: u64, min: u64, max: u64) -> Result<u64, String> {
    if n < min || n > max {
        return Err(format!("must be between {} and {}", show_size(min), show_size(max)));
    }
    Ok(n)
}

fn show_size(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    n.to_string()
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_nonempty(v: &str) -> Result<String, String> {
    if v.is_empty() { Err("must not be empty".into()) } else { Ok(v.to_string()) }
}

fn parse_int(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|_| "expected a whole number".to_string())?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

/// `auto` (one per CPU the process may use) or a count.
fn parse_threads(v: &str) -> Result<usize, String> {
    if v == "auto" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    parse_int(v, 1, 1024).map(|n| n as usize).map_err(|reason| format!("expected \"auto\" or a count: {reason}"))
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse().map_err(|_| "expected IP:PORT, e.g. 0.0.0.0:7070".to_string())
}

fn parse_host_port(v: &str) -> Result<String, String> {
    match v.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(v.to_string()),
        _ => Err("expected HOST:PORT".into()),
    }
}

/// `1=host:7071,2=host:7081`.
pub fn parse_peers(v: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("{part:?}: the node id must be a number"))?;
        let addr = parse_host_port(addr.trim()).map_err(|e| format!("{part:?}: {e}"))?;
        if peers.insert(id, addr).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("expected at least one ID=HOST:PORT".into());
    }
    Ok(peers)
}

/// A size: a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB,
/// TB, TiB; K/M/G as binary).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let split = v.find(|c: char| !c.is_ascii_digit() && c != '_').unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.replace('_', "").parse().map_err(|_| "expected a size like \"1 GiB\" or \"512KiB\"")?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "k" | "kib" => 1 << 10,
        "mb" => 1_000_000,
        "m" | "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "g" | "gib" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "t" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")),
    };
    n.checked_mul(multiplier).ok_or_else(|| "too large".to_string())
}

/// A duration: a number with a unit (ms, s, m, h, d).
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| "expected a duration like \"30s\" or \"100ms\"")?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err("give a unit: ms, s, m, h or d".into()),
        other => return Err(format!("unknown duration unit {other:?}; use ms, s, m, h or d")),
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| "too large".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_are_auto_or_a_count() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(ConfigBuilder::new().build().expect("defaults").worker_threads, cpus);
        let set = |v: &str| ConfigBuilder::new().set("runtime.worker_threads", v).expect("known").build();
        assert_eq!(set("3").expect("a count").worker_threads, 3);
        for bad in ["0", "1025", "many", "-1"] {
            let err = set(bad).expect_err(bad).to_string();
            assert!(err.contains("runtime.worker_threads") && err.contains("auto"), "{err}");
        }
    }

    #[test]
    fn sizes_and_durations_take_units() {
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2 MB"), Ok(2_000_000));
        assert!(parse_size("1 parsec").expect_err("no such unit").contains("unknown size unit"));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("30").expect_err("no unit").contains("unit"));
    }

    #[test]
    fn later_sources_override_earlier_ones_and_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("strata-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("strata.toml");
        std::fs::write(&file, "node_id = 2\npeers = \"1=a:1,2=b:2\"\n[limits]\nmax_message_bytes = \"2 MiB\"\n")
            .expect("write");
        let env = vec![("STRATA_LIMITS_CONNECTIONS".to_string(), "7".to_string()), ("STRATA_SEED".into(), "1".into())];
        let config = ConfigBuilder::new().file(&file).expect("file").env(env).build().expect("valid");
        assert_eq!((config.node_id, config.max_message_bytes, config.connections), (2, 2 << 20, 7));
        let flagged = ConfigBuilder::new().file(&file).expect("file").set("node_id", "1").expect("known");
        assert_eq!(flagged.build().expect("valid").node_id, 1);

        let bad = ConfigBuilder::new().set("limits.max_message_bytes", "1 TiB").expect("known").build();
        let message = bad.expect_err("too large").to_string();
        assert!(message.contains("limits.max_message_bytes") && message.contains("the command line"), "{message}");
        let typo = ConfigBuilder::new().set("limits.max_mesage_bytes", "1").expect_err("unknown");
        assert!(typo.to_string().contains("unknown setting limits.max_mesage_bytes"), "{typo}");
        let alone = ConfigBuilder::new().set("node_id", "3").expect("known").set("peers", "1=a:1").expect("known");
        assert!(alone.build().expect_err("not in peers").to_string().contains("not in peers"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn the_cluster_wide_compression_default_reaches_topics_and_bad_values_name_the_key() {
        let defaults = ConfigBuilder::new().build().expect("defaults").topic_defaults;
        assert_eq!(defaults.get("compression.type").map(String::as_str), Some("producer"));
        let lz4 = ConfigBuilder::new().set("log.compression_type", "lz4").expect("known").build().expect("valid");
        assert_eq!(lz4.topic_defaults.get("compression.type").map(String::as_str), Some("lz4"));
        let bad = ConfigBuilder::new().set("log.compression_type", "zstd").expect("known").build();
        let message = bad.expect_err("zstd is not offered").to_string();
        assert!(message.contains("log.compression_type") && message.contains("zstd"), "{message}");
    }

    #[test]
    fn cpus_sleep_unless_asked_to_stay_awake() {
        assert!(!ConfigBuilder::new().build().expect("defaults").keep_cpus_awake);
        let on = ConfigBuilder::new().set("runtime.keep_cpus_awake", "true").expect("known").build().expect("valid");
        assert!(on.keep_cpus_awake);
        let bad = ConfigBuilder::new().set("runtime.keep_cpus_awake", "always").expect("known").build();
        let message = bad.expect_err("not a boolean").to_string();
        assert!(message.contains("runtime.keep_cpus_awake"), "{message}");
    }

    #[test]
    fn ack_before_quorum_is_off_unless_set_and_takes_only_true_or_false() {
        assert!(!ConfigBuilder::new().build().expect("defaults").testing_ack_before_quorum);
        let on = ConfigBuilder::new().set("testing.ack_before_quorum", "true").expect("known").build().expect("valid");
        assert!(on.testing_ack_before_quorum);
        let bad = ConfigBuilder::new().set("testing.ack_before_quorum", "yes").expect("known").build();
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn journal_unsynced_is_off_unless_set_and_takes_only_true_or_false() {
        assert!(!ConfigBuilder::new().build().expect("defaults").testing_journal_unsynced);
        let on = ConfigBuilder::new().set("testing.journal_unsynced", "true").expect("known").build().expect("valid");
        assert!(on.testing_journal_unsynced);
        let env = vec![("STRATA_TESTING_JOURNAL_UNSYNCED".to_string(), "true".to_string())];
        assert!(ConfigBuilder::new().env(env).build().expect("valid").testing_journal_unsynced);
        let bad = ConfigBuilder::new().set("testing.journal_unsynced", "1").expect("known").build();
        assert!(bad.is_err(), "{bad:?}");
    }

    #[test]
    fn the_documented_config_file_sets_every_key_and_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/strata.toml");
        let text = std::fs::read_to_string(&path).expect("deploy/strata.toml");
        let table: toml::Table = text.parse().expect("toml");
        let mut flat = Vec::new();
        flatten("", &table, &mut flat);
        let documented: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        for (key, _) in KEYS {
            assert!(documented.contains(key), "deploy/strata.toml does not document {key}");
        }
        ConfigBuilder::new().file(&path).expect("file").build().expect("valid");
    }
}
