//! Zig-zag varints, as in Kafka's record format and protobuf's `sint64`.
//!
//! Lengths and deltas inside a batch are small most of the time, so a varint keeps a
//! 100-byte record from paying 20 bytes of fixed-width fields.

use bytes::BufMut;

/// The most bytes a zig-zag encoded `i64` can take.
pub const VARLONG_BYTES_MAX: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VarintError {
    #[error("varint runs past the end of the buffer")]
    Truncated,
    #[error("varint is longer than {VARLONG_BYTES_MAX} bytes")]
    Overlong,
}

/// Appends `value` zig-zag encoded.
pub fn put_varlong(buf: &mut impl BufMut, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// The encoded size of `value`, without encoding it.
pub fn varlong_len(value: i64) -> usize {
    let v = ((value << 1) ^ (value >> 63)) as u64;
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads one zig-zag varint from the front of `buf`, returning it and the bytes used.
///
/// Inlined, with the one-byte case first: a batch's decoder reads several varints per
/// record (length, deltas, key and value lengths), most of them a single byte.
#[inline]
pub fn get_varlong(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    if let Some(&byte) = buf.first()
        && byte & 0x80 == 0
    {
        let raw = u64::from(byte);
        return Ok((((raw >> 1) as i64) ^ -((raw & 1) as i64), 1));
    }
    let mut raw: u64 = 0;
    for (i, byte) in buf.iter().copied().enumerate() {
        if i >= VARLONG_BYTES_MAX {
            return Err(VarintError::Overlong);
        }
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= VARLONG_BYTES_MAX {
        Err(VarintError::Overlong)
    } else {
        Err(VarintError::Truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let mut buf = Vec::new();
        put_varlong(&mut buf, 0);
        put_varlong(&mut buf, -1);
        put_varlong(&mut buf, 1);
        put_varlong(&mut buf, 64);
        assert_eq!(buf, vec![0x00, 0x01, 0x02, 0x80, 0x01]);
    }

    #[test]
    fn truncated_and_overlong_are_errors() {
        assert_eq!(get_varlong(&[0x80]), Err(VarintError::Truncated));
        assert_eq!(get_varlong(&[0xff; 11]), Err(VarintError::Overlong));
        assert_eq!(get_varlong(&[]), Err(VarintError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trip(value: i64) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, value);
            prop_assert_eq!(buf.len(), varlong_len(value));
            prop_assert_eq!(get_varlong(&buf), Ok((value, buf.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes: Vec<u8>) {
            let _ = get_varlong(&bytes);
        }
    }
}
