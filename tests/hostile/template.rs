//! The template file the property tests damage: several laps of records, an aborted record,
//! a gating and a lapped non-gating group with commits.

use std::sync::OnceLock;
use std::time::Duration;

use shmq::{FullPolicy, Options, Queue, Start, Subscribe};

use crate::common::format::*;
use crate::file::*;

pub(crate) const T_CAPACITY: u64 = 4096;
pub(crate) const T_GROUPS: u32 = 4;
pub(crate) const T_PRODUCERS: u32 = 4;
pub(crate) const T_RECORDS: u64 = 150;

pub(crate) struct Template {
    pub(crate) bytes: Vec<u8>,
    pub(crate) layout: Layout,
    /// File offsets of the record headers of committed records still described by the index.
    pub(crate) record_heads: Vec<u64>,
}

pub(crate) fn t_payload(i: u64) -> Vec<u8> {
    (0..(i * 53 % 200) as usize)
        .map(|k| (i as usize ^ k) as u8)
        .collect()
}

pub(crate) fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(build_template)
}

pub(crate) fn build_template() -> Template {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.q");
    let opts = Options {
        capacity: T_CAPACITY,
        max_message: 256,
        full_policy: FullPolicy::Block,
        group_slots: T_GROUPS,
        producer_slots: T_PRODUCERS,
        claim_timeout: Duration::from_millis(100),
        ..Options::default()
    };
    {
        let q = Queue::create(&path, &opts).unwrap();
        let mut alpha = q.consumer("alpha").unwrap();
        let beta_opts = Subscribe {
            gating: false,
            start: Start::Earliest,
            session_timeout: None,
        };
        let mut beta = q.subscribe("beta", &beta_opts).unwrap();
        let mut p = q.producer().unwrap();
        p.set_timeout(Some(Duration::from_secs(5)));
        let mut expect = 0;
        for i in 0..T_RECORDS {
            if i == 70 {
                drop(p.claim(16).unwrap()); // an aborted record
                expect += 1;
            }
            let offset = p.publish(&t_payload(i)).unwrap();
            assert_eq!(offset, expect);
            expect += 1;
            let m = alpha.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
            assert_eq!(m.payload, &t_payload(i)[..]);
            let o = m.offset;
            if i < T_RECORDS - 5 {
                alpha.commit(o).unwrap();
            }
            if i < 40 {
                let m = beta.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
                let o = m.offset;
                if i < 30 {
                    beta.commit(o).unwrap();
                }
            }
        }
        assert_eq!(q.tail_offset(), T_RECORDS + 1);
        let groups = q.groups();
        assert_eq!(groups.len(), 2);
    }
    let bytes = std::fs::read(&path).unwrap();
    let layout = Layout::new(T_CAPACITY, T_GROUPS as u64, T_PRODUCERS as u64);
    assert_eq!(
        bytes.len() as u64,
        layout.file_size,
        "layout drifted from FORMAT.md"
    );
    // The tail must have wrapped the ring several times.
    assert!(get64(&bytes, TAIL_POSITION_AT) > 3 * T_CAPACITY);
    let mut record_heads = Vec::new();
    for e in 0..layout.entries {
        let pos = get64(&bytes, layout.pos_at(e) as usize);
        let tag = get64(&bytes, layout.tag_at(e) as usize);
        if tag & 1 == 1 {
            let start = if tag & 4 != 0 {
                pos + (T_CAPACITY - pos % T_CAPACITY)
            } else {
                pos
            };
            let head = layout.ring + start % T_CAPACITY;
            // Only records whose header still carries their offset (not overwritten).
            if get64(&bytes, head as usize) == tag >> 3 {
                record_heads.push(head);
            }
        }
    }
    assert!(record_heads.len() > 10, "template has too few live records");
    Template {
        bytes,
        layout,
        record_heads,
    }
}
