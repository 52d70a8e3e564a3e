//! Zig-zag varints as Kafka's record format uses them.

/// Appends `value` zig-zag encoded.
pub(crate) fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a 32-bit value zig-zag encoded.
pub(crate) fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_varlong(out, i64::from(value));
}

/// How many bytes `value` takes zig-zag encoded.
pub(crate) fn varlong_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a zig-zag varlong from the front of `buf`, returning it and the bytes
/// consumed, or `None` when the buffer ends first or the value overflows.
pub(crate) fn get_varlong(buf: &[u8]) -> Option<(i64, usize)> {
    // One or two bytes, the common case: a small record's deltas, lengths
    // and counts. The loop below costs some 25 instructions a varint.
    let short = match *buf {
        [b0, ..] if b0 & 0x80 == 0 => Some((u64::from(b0), 1)),
        [b0, b1, ..] if b1 & 0x80 == 0 => Some((u64::from(b0 & 0x7f) | u64::from(b1) << 7, 2)),
        _ => None,
    };
    if let Some((raw, n)) = short {
        return Some(((raw >> 1) as i64 ^ -((raw & 1) as i64), n));
    }
    get_varlong_by_loop(buf)
}

/// [`get_varlong`] for any length: byte by byte, up to ten bytes.
fn get_varlong_by_loop(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

/// Reads a zig-zag varint that must fit in 32 bits.
pub(crate) fn get_varint(buf: &[u8]) -> Option<(i32, usize)> {
    let (value, n) = get_varlong(buf)?;
    i32::try_from(value).ok().map(|v| (v, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for value in [0, 1, -1, 63, -64, 64, 300, -300, i64::from(i32::MAX), i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(get_varlong(&out), Some((value, out.len())), "value {value}");
            assert_eq!(varlong_len(value), out.len(), "length of {value}");
        }
        // Every one- and two-byte value (-8192..=8191, read by a path of
        // their own) and the three-byte ones beside them.
        for value in -9000..9000 {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            let expected_len = match value {
                -64..64 => 1,
                -8192..8192 => 2,
                _ => 3,
            };
            assert_eq!(out.len(), expected_len, "length of {value}");
            assert_eq!(get_varlong(&out), Some((value, out.len())), "value {value}");
        }
    }

    #[test]
    fn the_short_path_reads_every_two_byte_start_as_the_loop_does() {
        for b0 in 0..=255u8 {
            assert_eq!(get_varlong(&[b0]), get_varlong_by_loop(&[b0]), "[{b0}]");
            for b1 in 0..=255u8 {
                for buf in [&[b0, b1][..], &[b0, b1, 0x01], &[b0, b1, 0x80]] {
                    assert_eq!(get_varlong(buf), get_varlong_by_loop(buf), "{buf:?}");
                }
            }
        }
    }

    #[test]
    fn truncated_varint_is_none() {
        assert_eq!(get_varlong(&[0x80, 0x80]), None);
        assert_eq!(get_varlong(&[]), None);
        assert_eq!(get_varlong(&[0xff; 11]), None);
    }
}
