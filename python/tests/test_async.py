"""asyncio: `await consumer.next()`, `async for`, and cancellation that loses no message."""

import asyncio

import shmq


def test_next_waits_without_blocking_the_loop(queue):
    producer = queue.producer()
    consumer = queue.consumer("a")

    async def main():
        waiter = asyncio.ensure_future(consumer.next(timeout=10))
        ticks = 0
        for _ in range(5):  # the loop keeps running while next() waits
            await asyncio.sleep(0.02)
            ticks += 1
        assert not waiter.done()
        producer.publish(b"late")
        msg = await waiter
        assert msg.payload == b"late" and ticks == 5
        assert await consumer.next(timeout=0.2) is None

    asyncio.run(main())


def test_async_for(queue):
    producer = queue.producer()
    for i in range(3):
        producer.publish(b"%d" % i)
    consumer = queue.consumer("a")

    async def main():
        got = []
        async for msg in consumer:
            got.append(msg.payload)
            consumer.commit(msg)
            if len(got) == 3:
                break
        return got

    assert asyncio.run(main()) == [b"0", b"1", b"2"]


def test_cancelled_wait_keeps_its_message(queue):
    """A message that arrives after the awaiting task was cancelled, while the executor thread
    still waits, is parked and returned by the next call."""
    producer = queue.producer()
    consumer = queue.consumer("a")

    async def main():
        waiter = asyncio.ensure_future(consumer.next())
        await asyncio.sleep(0.2)  # the executor thread is now blocked in a poll
        waiter.cancel()
        try:
            await waiter
            raise AssertionError("not cancelled")
        except asyncio.CancelledError:
            pass
        producer.publish(b"after cancel")  # the cancelled thread may still receive it
        msg = await consumer.next(timeout=10)
        assert msg is not None and msg.payload == b"after cancel"
        assert await consumer.next(timeout=0.2) is None

    asyncio.run(main())


def test_cancelled_wait_keeps_it_for_a_sync_poll(queue):
    producer = queue.producer()
    consumer = queue.consumer("a")

    async def main():
        waiter = asyncio.ensure_future(consumer.next())
        await asyncio.sleep(0.1)
        producer.publish(b"x")
        waiter.cancel()
        try:
            return await waiter  # may have completed before the cancel
        except asyncio.CancelledError:
            return None

    got = asyncio.run(main())
    if got is None:
        msg = consumer.poll(10)
        assert msg is not None and msg.payload == b"x"
    else:
        assert got.payload == b"x"
    assert consumer.poll(0) is None


def test_errors_come_through_await(qpath):
    with shmq.Queue.create(qpath, capacity=4096, max_message=100, full="overwrite") as q:
        consumer = q.consumer("lap", gating=False)
        producer = q.producer()
        for i in range(300):
            producer.publish(b"%03d" % i + b"." * 60)

        async def main():
            try:
                await consumer.next(timeout=10)
            except shmq.Lagged as e:
                return e.lost
            raise AssertionError("not lagged")

        lost = asyncio.run(main())
        assert lost > 0
        assert consumer.poll(0).offset == lost


def test_a_parked_zero_copy_message_does_not_keep_its_consumer(queue):
    """A parked zero-copy message refers back to its consumer; the cycle is collected, so
    dropping the consumer still releases the group."""
    import gc

    queue.producer().publish(b"parked")
    consumer = queue.consumer("zc", zero_copy=True)
    assert consumer._wait_park(consumer._ticket(), 10) is True  # what an async wait does
    del consumer
    gc.collect()
    again = queue.consumer("zc")  # shmq.Busy if the old member were still alive
    assert again.poll(1).payload == b"parked"  # never handed out, so never committed
