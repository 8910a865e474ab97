"""asyncio support: ``await consumer.next()`` and ``async for msg in consumer``.

A message that is already there is taken at once, on the event loop's thread. Otherwise the
blocking wait runs in the loop's default executor (a thread), with the GIL released and no
spinning: while it waits, one executor thread per waiting consumer sits in a futex sleep,
and each message that had to be waited for costs a thread hand-off (tens of microseconds).

Cancellation loses nothing: the waiting thread parks what it receives inside the consumer
(the message, or the error the poll raised), and the next ``poll``, ``next`` or iteration hands
it out first. A cancelled wait ends within one wait slice (0.1 s) if nothing arrived.

One task at a time should await a given consumer; waits of two tasks are served in turn.
"""

import asyncio


async def next_message(consumer, timeout):
    """The next message of ``consumer`` within ``timeout`` seconds (``None``: no limit)."""
    msg = consumer.poll(0)
    if msg is not None:
        return msg
    if timeout == 0:
        return None
    loop = asyncio.get_running_loop()
    ticket = consumer._ticket()
    wait = loop.run_in_executor(None, consumer._wait_park, ticket, timeout)
    try:
        ready = await wait
    except asyncio.CancelledError:
        # The thread goes on until its slice ends; whatever it gets stays parked.
        consumer._cancel(ticket)
        raise
    return consumer._take_parked() if ready else None
