//! Python arguments as shmq's option types: queue creation options from keyword arguments,
//! policies from strings, trust from ids, reset targets.

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use shmq::{Durability, FullPolicy, Options, SeekTo, Start, Trust};

/// The keyword arguments of `Queue.create` (and of `Topic.create`, for its partitions).
const KEYS: &str = "capacity, max_message, full, durability, batch_delay, batch_bytes, \
                    group_slots, producer_slots, claim_timeout, mode, checksums";

/// Queue creation options from keyword arguments; unknown keywords are a `TypeError`.
pub fn queue_options(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Options> {
    let mut o = Options::default();
    let Some(kwargs) = kwargs else {
        return Ok(o);
    };
    let mut batch_delay = Duration::from_millis(10);
    let mut batch_bytes: u64 = 1 << 20;
    let mut durability = String::from("none");
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "capacity" => o.capacity = value.extract()?,
            "max_message" => o.max_message = value.extract()?,
            "full" => o.full_policy = full_policy(&value.extract::<String>()?)?,
            "durability" => durability = value.extract()?,
            "batch_delay" => batch_delay = seconds(&key, value.extract()?)?,
            "batch_bytes" => batch_bytes = value.extract()?,
            "group_slots" => o.group_slots = value.extract()?,
            "producer_slots" => o.producer_slots = value.extract()?,
            "claim_timeout" => o.claim_timeout = seconds(&key, value.extract()?)?,
            "mode" => o.mode = value.extract()?,
            "checksums" => o.checksums = value.extract()?,
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "unexpected keyword argument {key:?} (expected one of: {KEYS})"
                )))
            }
        }
    }
    o.durability = match durability.as_str() {
        "none" => Durability::None,
        "batch" => Durability::Batch {
            max_delay: batch_delay,
            max_bytes: batch_bytes,
        },
        "sync" => Durability::Sync,
        other => {
            return Err(PyValueError::new_err(format!(
                "durability must be \"none\", \"batch\" or \"sync\", got {other:?}"
            )))
        }
    };
    Ok(o)
}

/// A non-negative number of seconds as a duration.
pub fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| PyValueError::new_err(format!("{name} must be >= 0 seconds, got {s}")))
}

fn full_policy(s: &str) -> PyResult<FullPolicy> {
    match s {
        "block" => Ok(FullPolicy::Block),
        "reject" => Ok(FullPolicy::Reject),
        "overwrite" => Ok(FullPolicy::Overwrite),
        other => Err(PyValueError::new_err(format!(
            "full must be \"block\", \"reject\" or \"overwrite\", got {other:?}"
        ))),
    }
}

/// Where a new group starts: `"earliest"` or `"latest"`.
pub fn start(s: &str) -> PyResult<Start> {
    match s {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        other => Err(PyValueError::new_err(format!(
            "start must be \"earliest\" or \"latest\", got {other:?}"
        ))),
    }
}

/// A reset or seek target: `"earliest"`, `"latest"`, `"committed"`, an offset (`int`), or a
/// time (a `datetime.datetime` or a `float` of seconds since the Unix epoch).
pub fn seek_to(to: &Bound<'_, PyAny>) -> PyResult<SeekTo> {
    if let Ok(s) = to.cast::<PyString>() {
        return match s.to_str()? {
            "earliest" => Ok(SeekTo::Earliest),
            "latest" => Ok(SeekTo::Latest),
            "committed" => Ok(SeekTo::Committed),
            other => Err(PyValueError::new_err(format!(
                "to must be \"earliest\", \"latest\", \"committed\", an offset or a time, got {other:?}"
            ))),
        };
    }
    if let Ok(offset) = to.extract::<u64>() {
        return Ok(SeekTo::Offset(offset));
    }
    let secs: f64 = if to.hasattr("timestamp")? {
        to.call_method0("timestamp")?.extract()?
    } else {
        to.extract().map_err(|_| {
            PyTypeError::new_err(
                "to must be a str, an int offset, a datetime or a float of seconds since the epoch",
            )
        })?
    };
    let ns = seconds("a time", secs)?.as_nanos();
    Ok(SeekTo::Time(u64::try_from(ns).unwrap_or(u64::MAX)))
}

/// Whose files an opener accepts besides its own: a uid, a gid, or both.
pub fn trust(owner: Option<u32>, group: Option<u32>) -> Trust {
    Trust { owner, group }
}
