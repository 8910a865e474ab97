//! Inboxes from the shell: `info` (table and JSON) and `inbox list` show each inbox with its
//! fill and counters, `inbox delete` removes one (refused while a key is held).

mod common;

use common::{fails, info, ok, path_in};
use shmq::{Admit, InboxOptions, Queue};

#[test]
fn info_and_inbox_list_show_each_inbox_with_its_fill() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "orders.q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    let none = ok(&["info", &q]);
    assert!(!none.contains("INBOX"), "{none}");
    assert!(info(&q).get("inboxes").is_none());

    let queue = Queue::open(&q).unwrap();
    let mut inbox = queue
        .inbox("payments", &InboxOptions { window: 64 })
        .unwrap();
    for k in 0..3u8 {
        inbox.once(&[k], || ()).unwrap();
    }
    inbox.once(&[0], || ()).unwrap();
    let Admit::Fresh(held) = inbox.begin(b"held").unwrap() else {
        panic!("a new key is fresh")
    };

    let table = ok(&["info", &q]);
    let row = table
        .lines()
        .find(|l| l.starts_with("payments"))
        .unwrap_or_else(|| panic!("no inbox row in:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // INBOX WINDOW FILL (PERCENT) HELD DONE ADMITTED DUPLICATES BUSY RETAKEN EVICTED
    assert_eq!(
        cells,
        ["payments", "64", "4", "(6.3%)", "1", "3", "4", "1", "0", "0", "0"],
        "{table}"
    );
    let json = info(&q);
    let i = &json["inboxes"][0];
    assert_eq!(i["name"], "payments");
    assert_eq!(
        (i["fill"].as_u64(), i["window"].as_u64()),
        (Some(4), Some(64))
    );
    assert_eq!(
        (i["held"].as_u64(), i["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    let listed = ok(&["inbox", "list", &q]);
    assert!(
        listed.lines().any(|l| l.starts_with("payments")),
        "{listed}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["inbox", "list", &q, "--json"])).unwrap();
    assert_eq!(listed[0]["admitted"].as_u64(), Some(4));

    fails(
        &["inbox", "delete", &q, "payments"],
        &["orders.q.inbox-payments", "held by another live process"],
    );
    held.done().unwrap();
    drop(inbox);
    ok(&["inbox", "delete", &q, "payments"]);
    assert_eq!(ok(&["inbox", "list", &q]).trim(), "no inboxes");
    fails(&["inbox", "delete", &q, "payments"], &["no such inbox"]);
}
