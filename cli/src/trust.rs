//! `--trust-owner` and `--trust-group`: whom a command trusts with a queue file or topic that
//! another user made or may write (the library refuses one by default).

use std::path::Path;

use clap::Args;
use nix::unistd::{Group, User};
use shmq::{Queue, Topic, Trust};

use crate::error::{At, CliError};

/// The trust options of every command that opens a queue file or topic.
#[derive(Args)]
pub struct TrustArgs {
    /// Also open a queue file or topic that belongs to this user (a name or a uid); its group
    /// and others still may not write it.
    #[arg(long, global = true, value_name = "USER", value_parser = parse_user)]
    trust_owner: Option<u32>,
    /// Also open one whose group is this group (a name or a gid), whoever owns it, and let
    /// that group write it: how users share a queue (mode 0660).
    #[arg(long, global = true, value_name = "GROUP", value_parser = parse_group)]
    trust_group: Option<u32>,
}

impl TrustArgs {
    /// The library's trust for these options.
    pub fn trust(&self) -> Trust {
        Trust {
            owner: self.trust_owner,
            group: self.trust_group,
        }
    }

    /// Opens the queue file at `path`.
    pub fn open_queue(&self, path: &Path) -> Result<Queue, CliError> {
        Queue::open_trusting(path, &self.trust()).at(path)
    }

    /// Opens the topic at `path`.
    pub fn open_topic(&self, path: &Path) -> Result<Topic, CliError> {
        Topic::open_trusting(path, &self.trust()).at(path)
    }
}

/// Parses `--trust-owner`: a uid, or a user name from the user database.
fn parse_user(s: &str) -> Result<u32, String> {
    match s.parse() {
        Ok(uid) => Ok(uid),
        Err(_) => match User::from_name(s) {
            Ok(Some(user)) => Ok(user.uid.as_raw()),
            Ok(None) => Err(format!("no user named {s:?}")),
            Err(e) => Err(format!("looking up user {s:?}: {e}")),
        },
    }
}

/// Parses `--trust-group`: a gid, or a group name from the group database.
fn parse_group(s: &str) -> Result<u32, String> {
    match s.parse() {
        Ok(gid) => Ok(gid),
        Err(_) => match Group::from_name(s) {
            Ok(Some(group)) => Ok(group.gid.as_raw()),
            Ok(None) => Err(format!("no group named {s:?}")),
            Err(e) => Err(format!("looking up group {s:?}: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_ids() {
        assert_eq!(parse_user("0"), Ok(0));
        assert_eq!(parse_user("root"), Ok(0));
        assert_eq!(parse_group("4242"), Ok(4242));
        assert_eq!(parse_group("root"), Ok(0));
        assert_eq!(
            parse_user("no-such-user-here"),
            Err("no user named \"no-such-user-here\"".to_string())
        );
        assert!(parse_group("no-such-group-here")
            .unwrap_err()
            .contains("no group named"));
    }
}
