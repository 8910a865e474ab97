//! `shmq create`: creates a queue file.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use shmq::{Durability, Options, Queue, Topic, TopicOptions};

use crate::error::{At, CliError};
use crate::size::format_size;
use crate::{duration, size};

/// What a full queue does, as spelled on the command line.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Full {
    /// Producers wait for the slowest gating group.
    Block,
    /// Publishing fails at once.
    Reject,
    /// The oldest records are overwritten.
    Overwrite,
}

impl From<Full> for shmq::FullPolicy {
    fn from(f: Full) -> Self {
        match f {
            Full::Block => shmq::FullPolicy::Block,
            Full::Reject => shmq::FullPolicy::Reject,
            Full::Overwrite => shmq::FullPolicy::Overwrite,
        }
    }
}

/// A durability policy, as spelled on the command line.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Page cache only: survives any process crash, not a machine crash.
    None,
    /// Group commit: flushed within --batch-delay or every --batch-bytes.
    Batch,
    /// Each publish returns once its message is on disk.
    Sync,
}

/// Arguments of `shmq create`.
#[derive(Args)]
pub struct CreateArgs {
    /// The queue file (or, with --partitions, the topic directory) to create; must not exist.
    path: PathBuf,
    /// Create a topic: a directory of this many partitions (queue files with the options
    /// below), to which keyed messages are routed by CRC32C(key) mod N.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(shmq::MAX_PARTITIONS)))]
    partitions: Option<u32>,
    /// Ring size: a power of two from 4KiB to 1TiB.
    #[arg(long, default_value = "64MiB", value_parser = size::parse_capacity, value_name = "SIZE")]
    capacity: u64,
    /// Largest message [default: 1MiB, or the most a smaller ring allows].
    #[arg(long, value_parser = size::parse_size, value_name = "SIZE")]
    max_message: Option<u64>,
    /// What producers do when the ring is full.
    #[arg(long, value_enum, default_value_t = Full::Block)]
    full: Full,
    /// What a publish promises about surviving a machine crash.
    #[arg(long, value_enum, default_value_t = DurabilityArg::None)]
    durability: DurabilityArg,
    /// Batch: longest time a message waits for its flush.
    #[arg(long, default_value = "10ms", value_parser = duration::parse_duration, value_name = "DURATION")]
    batch_delay: Duration,
    /// Batch: unflushed bytes that trigger a flush.
    #[arg(long, default_value = "1MiB", value_parser = size::parse_size, value_name = "SIZE")]
    batch_bytes: u64,
    /// Permission bits of the file, in octal. 0660 shares it with its group, whose users open
    /// it with --trust-group; a mode that lets every user write is refused.
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    mode: u32,
}

/// Parses `--mode`: octal permission bits such as `0600` or `0o644`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(m),
        _ => Err("expected octal permission bits from 0000 to 0777, like 0600".to_string()),
    }
}

/// Bytes of one record header in the ring (the largest message is half the ring minus this).
const RECORD_HEADER: u64 = 32;

/// Default largest message: 1 MiB, or the most a smaller ring allows.
fn default_max_message(capacity: u64) -> u64 {
    (1 << 20)
        .min((capacity / 2).saturating_sub(RECORD_HEADER))
        .max(1)
}

/// Creates the queue file and prints its parameters.
pub fn run(args: &CreateArgs) -> Result<(), CliError> {
    let max = args
        .max_message
        .unwrap_or_else(|| default_max_message(args.capacity));
    let max_message = u32::try_from(max).map_err(|_| {
        CliError::new(
            format_args!("--max-message {}", format_size(max)),
            "too large (at most 4 GiB - 1)",
        )
    })?;
    let durability = match args.durability {
        DurabilityArg::None => Durability::None,
        DurabilityArg::Batch => Durability::Batch {
            max_delay: args.batch_delay,
            max_bytes: args.batch_bytes,
        },
        DurabilityArg::Sync => Durability::Sync,
    };
    let options = Options {
        capacity: args.capacity,
        max_message,
        full_policy: args.full.into(),
        mode: args.mode,
        durability,
        ..Options::default()
    };
    // Say plainly when the directory is missing (the library would name its temporary file).
    if let Some(dir) = args.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(CliError::new(
                args.path.display(),
                format_args!("directory {} does not exist", dir.display()),
            ));
        }
    }
    let topic = match args.partitions {
        Some(partitions) => {
            let options = TopicOptions {
                partitions,
                queue: options.clone(),
            };
            Some(Topic::create(&args.path, &options).at(&args.path)?)
        }
        None => None,
    };
    let queue = match &topic {
        Some(topic) => topic.partitions()[0].clone(),
        None => Queue::create(&args.path, &options).at(&args.path)?,
    };
    let g = queue.geometry();
    let what = match &topic {
        Some(t) => format!("topic of {} partitions, each with", t.partition_count()),
        None => "queue with".to_string(),
    };
    outln!(
        "created {}: {what} capacity {}, max message {}, full policy {}, durability {}, mode {:04o}",
        args.path.display(),
        format_size(g.capacity),
        format_size(u64::from(g.max_message)),
        g.full_policy.name(),
        g.durability.name(),
        args.mode
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_max_message_fits_the_ring() {
        assert_eq!(default_max_message(64 << 20), 1 << 20);
        assert_eq!(default_max_message(4096), 2048 - 32);
        assert_eq!(default_max_message(0), 1);
    }

    #[test]
    fn parses_mode() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("0o644"), Ok(0o644));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("").is_err());
    }
}
