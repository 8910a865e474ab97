//! Keyed routing and the keyed-record framing.
//!
//! **Routing.** A keyed record goes to partition `crc32c(key) mod N`: CRC-32C (Castagnoli,
//! reflected polynomial `0x82F63B78`, initial value `0xFFFFFFFF`, final XOR `0xFFFFFFFF`, the
//! CRC of iSCSI and ext4) of the key's bytes as a `u32`, modulo the partition count `N`. Test
//! vector: `crc32c("123456789") = 0xE3069283`, so with 8 partitions the key `123456789` goes to
//! partition 3 (`0xE3069283 mod 8`), and `crc32c("order-42") = 0xF2452E86` to partition 6. Every shmq interface (Rust, C, CLI) uses this one function.
//!
//! **Framing.** A topic record's payload is `key length (u16, little-endian) | key | value`.
//! Key length `0xFFFF` means "no key" and is followed directly by the value; an empty key (length
//! 0) is a key. So a payload is at least 2 bytes, and a key at most 65,534 bytes. Readers check
//! the length against the payload before slicing: a file can hold any bytes.

use std::path::Path;

use crate::error::{Corruption, Error, Malformed, Result};
use crate::protocol::crc;
use crate::queue::cursor::Message;
use crate::queue::tail::TailReader;

/// The key-length value that marks a record without a key.
const NO_KEY: u16 = 0xFFFF;
/// Bytes of framing before the key.
pub(crate) const FRAME_HEADER: usize = 2;
/// Longest key a record can carry.
pub const MAX_KEY: usize = NO_KEY as usize - 1;

/// The partition a record with `key` goes to in a topic of `partitions` partitions:
/// `crc32c(key) % partitions` (see the module docs for the exact CRC). `partitions` must not
/// be 0.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    crc::crc32c(key) % partitions
}

/// Bytes a framed record of `key` and `value_len` value bytes takes.
pub(crate) fn framed_len(key: Option<&[u8]>, value_len: usize) -> Result<usize> {
    let key_len = key.map_or(0, <[u8]>::len);
    if key_len > MAX_KEY {
        return Err(Error::KeyTooBig {
            len: key_len,
            max: MAX_KEY,
        });
    }
    Ok(FRAME_HEADER + key_len + value_len)
}

/// Writes the framing and `key` at the start of `out`; returns where the value starts. `out`
/// is [`framed_len`] bytes long.
pub(crate) fn write_frame(out: &mut [u8], key: Option<&[u8]>) -> usize {
    let (len, key) = match key {
        Some(k) => (k.len() as u16, k),
        None => (NO_KEY, &[][..]),
    };
    out[..FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
    let end = FRAME_HEADER + key.len();
    out[FRAME_HEADER..end].copy_from_slice(key);
    end
}

/// Splits the framed payload of record `offset` into `(key, value)`, or says why it is not a
/// framed record.
pub(crate) fn split(offset: u64, payload: &[u8]) -> Result<(Option<&[u8]>, &[u8]), Malformed> {
    let Some((len, rest)) = payload.split_first_chunk::<FRAME_HEADER>() else {
        return Err(Malformed::ShortFrame {
            offset,
            len: payload.len(),
        });
    };
    match u16::from_le_bytes(*len) {
        NO_KEY => Ok((None, rest)),
        n if n as usize <= rest.len() => {
            let (key, value) = rest.split_at(n as usize);
            Ok((Some(key), value))
        }
        n => Err(Malformed::KeyLength {
            offset,
            key_len: n,
            rest: rest.len(),
        }),
    }
}

/// [`split`] for the record at `offset` of the partition file `path`: a payload without valid
/// framing is [`Error::Corrupt`], naming the file, the offset and why.
pub(crate) fn split_record<'a>(
    path: &Path,
    offset: u64,
    payload: &'a [u8],
) -> Result<(Option<&'a [u8]>, &'a [u8])> {
    split(offset, payload).map_err(|why| Error::Corrupt {
        path: path.to_path_buf(),
        kind: Corruption::Shared(why),
    })
}

/// Reading a topic partition with a group-less reader.
impl TailReader {
    /// Splits a message read from the topic partition file `partition` into its key (if it
    /// has one) and its value: a partition's records carry their key in front of the value
    /// (FORMAT.md). [`Error::Corrupt`], naming `partition`, for a record without valid
    /// framing (a queue file that is no partition, or a damaged record).
    pub fn split_key<'m>(
        partition: &Path,
        message: &Message<'m>,
    ) -> Result<(Option<&'m [u8]>, &'m [u8])> {
        split_record(partition, message.offset, message.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_test_vector() {
        assert_eq!(crc::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(partition_for_key(b"123456789", 8), 3);
        assert_eq!(crc::crc32c(b"order-42"), 0xF245_2E86);
        assert_eq!(partition_for_key(b"order-42", 8), 6);
    }

    #[test]
    fn frames_round_trip_and_hostile_ones_are_refused() {
        for key in [None, Some(&b""[..]), Some(&b"order-42"[..])] {
            let mut buf = vec![0u8; framed_len(key, 5).unwrap()];
            let at = write_frame(&mut buf, key);
            buf[at..].copy_from_slice(b"value");
            assert_eq!(split(0, &buf), Ok((key, &b"value"[..])));
        }
        assert_eq!(
            split(7, &[]),
            Err(Malformed::ShortFrame { offset: 7, len: 0 })
        );
        assert_eq!(
            split(7, &[1]),
            Err(Malformed::ShortFrame { offset: 7, len: 1 })
        );
        assert_eq!(
            split(7, &[3, 0, b'a', b'b']),
            Err(Malformed::KeyLength {
                offset: 7,
                key_len: 3,
                rest: 2
            })
        );
        assert_eq!(
            split(0, &[2, 0, b'a', b'b']),
            Ok((Some(&b"ab"[..]), &b""[..]))
        );
        assert!(matches!(
            framed_len(Some(&vec![0; MAX_KEY + 1]), 0),
            Err(Error::KeyTooBig { len, max: MAX_KEY }) if len == MAX_KEY + 1
        ));
    }
}
