//! `shmq inbox list|delete QUEUE`: a queue's inboxes (de-duplication filters next to it) with
//! their fill and counters, and removing one.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::{At, CliError};
use crate::info;
use crate::trust::TrustArgs;

/// Arguments of `shmq inbox`.
#[derive(Args)]
pub struct InboxArgs {
    /// What to do.
    #[command(subcommand)]
    command: InboxCommand,
}

/// The `shmq inbox` subcommands.
#[derive(Subcommand)]
enum InboxCommand {
    /// List the queue's inboxes: window, fill, held and done keys, counters.
    List {
        /// The queue file.
        path: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Whom to trust with a file another user made.
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Remove an inbox (refused while a running process holds one of its keys).
    Delete {
        /// The queue file.
        path: PathBuf,
        /// The inbox.
        name: String,
        /// Whom to trust with a file another user made.
        #[command(flatten)]
        trust: TrustArgs,
    },
}

/// Runs `shmq inbox`.
pub fn run(args: &InboxArgs) -> Result<(), CliError> {
    match &args.command {
        InboxCommand::List { path, json, trust } => {
            let queue = trust.open_queue(path)?;
            let inboxes = info::inboxes(&queue);
            let text = match (json, inboxes.is_empty()) {
                (true, _) => info::to_json(path, &inboxes)?,
                (false, true) => "no inboxes".to_string(),
                (false, false) => info::inbox_table(&inboxes),
            };
            info::print(&text)
        }
        InboxCommand::Delete { path, name, trust } => {
            let queue = trust.open_queue(path)?;
            queue.delete_inbox(name).at(path)?;
            info::print(&format!("deleted inbox {name:?}"))
        }
    }
}
