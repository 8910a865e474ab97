//! `shmq create`: creates a queue file.

use shmq::{Durability, Options, Queue, Topic, TopicOptions};

use crate::error::CliError;
use crate::size::format_size;
use crate::{CreateArgs, DurabilityArg};

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
            Some(Topic::create(&args.path, &options).map_err(|e| CliError::queue(&args.path, e))?)
        }
        None => None,
    };
    let queue = match &topic {
        Some(topic) => topic.partitions()[0].clone(),
        None => Queue::create(&args.path, &options).map_err(|e| CliError::queue(&args.path, e))?,
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
}
