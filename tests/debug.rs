//! Every handle prints something useful with `{:?}`: its file, and its slot, group and offsets
//! where it has them.

use shmq::{Options, Queue, Topic, TopicOptions};

#[test]
fn handles_show_their_file_slot_group_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let options = Options {
        capacity: 4096,
        max_message: 1024,
        ..Options::default()
    };
    let queue = Queue::create(&path, &options).unwrap();
    let mut producer = queue.producer().unwrap();
    producer.publish(b"m").unwrap();
    let mut consumer = queue.consumer("audit").unwrap();
    consumer.poll(None).unwrap();
    let shown = path.display();
    assert_eq!(
        format!("{queue:?}"),
        format!("Queue {{ path: {shown:?}, capacity: 4096, tail_offset: 1, .. }}")
    );
    assert_eq!(
        format!("{producer:?}"),
        format!("Producer {{ path: {shown:?}, slot: 0, timeout: None, timestamps: Precise, .. }}")
    );
    assert_eq!(
        format!("{consumer:?}"),
        format!(
            "Consumer {{ path: {shown:?}, group: \"audit\", slot: 0, position: 1, committed: 0, .. }}"
        )
    );
    let claim = producer.claim(3).unwrap();
    assert!(
        format!("{claim:?}").ends_with("offset: 1, .. }"),
        "{claim:?}"
    );
    drop(claim);
    let tail = queue.tail_reader(shmq::SeekTo::Earliest).unwrap();
    assert_eq!(
        format!("{tail:?}"),
        format!("TailReader {{ path: {shown:?}, position: 0, verify: true, .. }}")
    );

    let tdir = dir.path().join("t");
    let topic = Topic::create(
        &tdir,
        &TopicOptions {
            partitions: 2,
            queue: options,
        },
    )
    .unwrap();
    let t = tdir.display();
    assert_eq!(
        format!("{topic:?}"),
        format!("Topic {{ path: {t:?}, partitions: 2, .. }}")
    );
    let producer = topic.producer().unwrap();
    assert_eq!(
        format!("{producer:?}"),
        format!("TopicProducer {{ path: {t:?}, partitions: 2, timeout: None, .. }}")
    );
    let member = topic.consumer("billing").unwrap();
    let text = format!("{member:?}");
    assert!(
        text.starts_with(&format!(
            "TopicConsumer {{ path: {t:?}, group: \"billing\", member_slot: "
        )),
        "{text}"
    );
}
