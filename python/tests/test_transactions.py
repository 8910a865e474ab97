"""Transactions across a topic's partitions from Python: a commit over several partitions
read back whole, an abort and a closed producer publishing nothing, the id held by one
handle at a time, consume-transform-produce, and `Topic.transactions()`."""

import pytest

import shmq


def read_all(topic, want):
    """Every record of `topic` from the start, {(partition, offset): (key, payload)}."""
    got = {}
    with topic.consumer("check") as c:
        for msg in c.iter(timeout=0.5):
            got[(msg.partition, msg.offset)] = (msg.key, bytes(msg.payload))
            if len(got) > want:
                break
    return got


def test_commit_abort_and_busy_id(tmp_path):
    path = str(tmp_path / "ledger.topic")
    with shmq.Topic.create(path, partitions=3, capacity=1 << 16, max_message=1024) as topic:
        assert topic.transactions() == []
        with topic.transactional_producer("transfers") as tx:
            assert tx.id == "transfers"
            tx.send(b"dropped", key=b"k")
            tx.abort()
            assert tx.pending == 0
            # crc32c("order-42") % 3 picks its partition, the same as a plain producer's.
            p = tx.send(b"debit", key=b"order-42")
            tx.send_to((p + 1) % 3, b"credit")
            assert tx.pending == 2
            with pytest.raises(shmq.Busy) as busy:
                topic.transactional_producer("transfers")
            assert busy.value.id == "transfers"
            placed = tx.commit()
            assert [partition for partition, _ in placed] == [p, (p + 1) % 3]
            assert tx.commit() == []
            with pytest.raises(shmq.InvalidArgument):
                tx.send_to(3, b"no such partition")
            tx.send(b"never committed")
        got = read_all(topic, 2)
        assert got == {placed[0]: (b"order-42", b"debit"), placed[1]: (None, b"credit")}
        [info] = topic.transactions()
        assert (info.id, info.state, info.epoch, info.settled) == ("transfers", "committed", 1, 1)
        assert info.holder is None and not info.holder_alive
        with pytest.raises(ValueError):
            tx.commit()


def test_commit_consumed_moves_the_input_with_the_output(tmp_path):
    small = {"capacity": 1 << 16, "max_message": 1024}
    with shmq.Queue.create(str(tmp_path / "in.q"), **small) as q, shmq.Topic.create(
        str(tmp_path / "out.topic"), partitions=2, **small
    ) as topic:
        producer = q.producer()
        for i in range(3):
            producer.publish(bytes([i]))
        tx = topic.transactional_producer("xform")
        c = q.consumer("xform")
        last = None
        for _ in range(2):
            msg = c.poll(timeout=5)
            tx.send(b"o" + bytes(msg.payload))
            last = msg.offset
        assert len(tx.commit_consumed(c, last)) == 2
        c.close()
        tx.close()
        assert sorted(v for _, v in read_all(topic, 2).values()) == [b"o\x00", b"o\x01"]
        again = q.consumer("xform")
        assert again.poll(timeout=5).offset == 2
        again.close()
