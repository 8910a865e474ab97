//! The topic descriptor: a 64-byte file naming the topic's partition count, written whole to a
//! temporary file, `fsync`ed and renamed into place, so a reader sees the old or the new one,
//! never a mix. Layout (FORMAT.md, "Topic descriptor"):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SHMQTOPC` |
//! | 8 | 4 | version `1` |
//! | 12 | 4 | partitions, 1 to [`MAX_PARTITIONS`] |
//! | 16 | 4 | routing: `1` = CRC32C of the key modulo the partition count |
//! | 20 | 4 | reserved, 0 |
//! | 24 | 8 | created, nanoseconds since the Unix epoch |
//! | 32 | 8 | generation: 0 at creation, +1 at every growth |
//! | 40 | 20 | reserved, 0 |
//! | 60 | 4 | CRC32C of bytes 0–59 |

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, DescriptorFault, Error, Result};
use crate::mapping::file::{io_err, TOPIC_DESCRIPTOR as FILE};
use crate::mapping::trust::Trust;
use crate::protocol::crc;

const MAGIC: [u8; 8] = *b"SHMQTOPC";
const VERSION: u32 = 1;
const SIZE: usize = 64;
/// The only routing so far: CRC32C of the key, modulo the partition count.
const ROUTING_CRC32C: u32 = 1;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// What a topic's descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub partitions: u32,
    pub created_ns: u64,
    pub generation: u64,
}

/// Checks a partition count requested by a caller.
pub(crate) fn check_partitions(n: u32) -> Result<()> {
    if n == 0 || n > MAX_PARTITIONS {
        return Err(Error::InvalidArgument {
            argument: "partitions",
            why: format!("a topic has 1 to {MAX_PARTITIONS} partitions, not {n}"),
        });
    }
    Ok(())
}

impl Descriptor {
    fn encode(&self) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.partitions.to_le_bytes());
        b[16..20].copy_from_slice(&ROUTING_CRC32C.to_le_bytes());
        b[24..32].copy_from_slice(&self.created_ns.to_le_bytes());
        b[32..40].copy_from_slice(&self.generation.to_le_bytes());
        let crc = crc::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Validates `b`, in this order: size, magic, version, checksum, then each field.
    fn decode(b: &[u8]) -> Result<Descriptor, DescriptorFault> {
        if b.len() != SIZE {
            return Err(DescriptorFault::Size {
                len: b.len() as u64,
                expected: SIZE as u64,
            });
        }
        if b[0..8] != MAGIC {
            return Err(DescriptorFault::BadMagic);
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(DescriptorFault::Version {
                found: version,
                supported: VERSION,
            });
        }
        let (stored, computed) = (u32_at(60), crc::crc32c(&b[..60]));
        if stored != computed {
            return Err(DescriptorFault::Checksum { stored, computed });
        }
        let partitions = u32_at(12);
        check_partitions(partitions).map_err(|_| DescriptorFault::Partitions {
            found: partitions,
            max: MAX_PARTITIONS,
        })?;
        let routing = u32_at(16);
        if routing != ROUTING_CRC32C {
            return Err(DescriptorFault::Routing { found: routing });
        }
        if u32_at(20) != 0 || b[40..60].iter().any(|&x| x != 0) {
            return Err(DescriptorFault::Reserved);
        }
        Ok(Descriptor {
            partitions,
            created_ns: u64_at(24),
            generation: u64_at(32),
        })
    }
}

fn corrupt(dir: &Path, why: DescriptorFault) -> Error {
    Error::Corrupt {
        path: dir.to_path_buf(),
        kind: Corruption::Descriptor(why),
    }
}

/// Reads and validates the descriptor of the topic in `dir`, which `trust` must accept.
pub(crate) fn read(dir: &Path, trust: &Trust) -> Result<Descriptor> {
    let path = dir.join(FILE);
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if dir.is_dir() {
                corrupt(dir, DescriptorFault::Missing { file: path })
            } else {
                Error::TopicNotFound {
                    path: dir.to_path_buf(),
                }
            });
        }
        Err(e) => return Err(io_err(&path, "open descriptor")(e)),
    };
    trust.check(&path, &file.metadata().map_err(io_err(&path, "stat"))?)?;
    // One more byte than a descriptor holds, so an oversized file is seen as such.
    let mut b = Vec::with_capacity(SIZE + 1);
    (&mut file)
        .take(SIZE as u64 + 1)
        .read_to_end(&mut b)
        .map_err(io_err(&path, "read descriptor"))?;
    Descriptor::decode(&b).map_err(|why| corrupt(dir, why))
}

/// Writes `d` as the descriptor of `dir`: to a temporary file, `fsync`, then renamed over the
/// old one (atomic replacement), then the directory is `fsync`ed.
pub(crate) fn write(dir: &Path, d: &Descriptor, mode: u32) -> Result<()> {
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(&tmp, "create descriptor"))?;
        f.write_all(&d.encode())
            .map_err(io_err(&tmp, "write descriptor"))?;
        f.sync_all().map_err(io_err(&tmp, "fsync descriptor"))?;
        std::fs::rename(&tmp, dir.join(FILE)).map_err(io_err(&tmp, "rename descriptor"))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `fsync`s a directory so the names in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

/// The file of partition `i` inside the topic directory `dir`.
pub(crate) fn partition_file(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("partition-{i:04}.q"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_rejection() {
        let d = Descriptor {
            partitions: 8,
            created_ns: 7,
            generation: 2,
        };
        let b = d.encode();
        assert_eq!(Descriptor::decode(&b), Ok(d));
        assert_eq!(
            Descriptor::decode(&b[..63]),
            Err(DescriptorFault::Size {
                len: 63,
                expected: 64
            })
        );
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(Descriptor::decode(&bad), Err(DescriptorFault::BadMagic));
        let mut bad = b;
        bad[8] = 2;
        assert_eq!(
            Descriptor::decode(&bad),
            Err(DescriptorFault::Version {
                found: 2,
                supported: VERSION
            })
        );
        let mut bad = b;
        bad[12] = 9;
        assert!(matches!(
            Descriptor::decode(&bad),
            Err(DescriptorFault::Checksum { .. })
        ));
        let reseal = |mut bad: [u8; SIZE]| {
            let crc = crc::crc32c(&bad[..60]);
            bad[60..].copy_from_slice(&crc.to_le_bytes());
            Descriptor::decode(&bad)
        };
        let mut bad = b;
        bad[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            reseal(bad),
            Err(DescriptorFault::Partitions {
                found: 0,
                max: MAX_PARTITIONS
            })
        );
        let mut bad = b;
        bad[16..20].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(reseal(bad), Err(DescriptorFault::Routing { found: 2 }));
        let mut bad = b;
        bad[50] = 1;
        assert_eq!(reseal(bad), Err(DescriptorFault::Reserved));
    }
}
