//! Hostile and damaged queue files: opening and using them returns errors, never panics, hangs
//! or crashes; and the clear, deterministic errors for common mistakes.
//!
//! The property tests start from one valid template file (several laps of records, an aborted
//! record, a gating and a lapped non-gating group with commits) and damage it in five ways:
//! random byte edits, truncation/extension, extreme values in the shared tables and ring,
//! header-field edits with a recomputed checksum, and wholly random files (some behind a valid
//! header). Each damaged file is then driven through the whole API in a watchdog thread.
//!
//! One module a theme: `damaged_files` (the property tests), `damaged_work` (work files), `damaged_ids` (producer-id files), `damaged_inbox` (inbox files), `clear_errors` (deterministic
//! errors), `damaged_cursors` (regressions); `file`, `template`, `exercise` and `strategies`
//! are what they share.

#[path = "../common/mod.rs"]
mod common;

mod clear_errors;
mod damaged_cursors;
mod damaged_files;
mod damaged_ids;
mod damaged_inbox;
mod damaged_work;
mod exercise;
mod file;
mod strategies;
mod template;
