"""Releasing per-event-loop resources when their loop shuts down.

A broker used from ``asyncio.run(...)`` in a script, a Celery task or a sync
view sees a new event loop each time. What it made for one loop (an HTTP client,
a Redis connection pool) must go when that loop goes, or each call leaks a
client, its sockets and the loop itself.

``on_loop_close(callback)`` parks an async generator on the running loop;
``asyncio.run`` (and anything else that calls ``loop.shutdown_asyncgens()``)
closes every async generator before the loop closes, which runs the
generator's ``finally`` block on that loop: there the callback is awaited. It
is the only hook asyncio offers that runs *on* the loop at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable

log = logging.getLogger("tokenbroker")

Closer = Callable[[], Awaitable[None]]

# The parked generators, kept alive until their loop shuts them down: a
# generator collected earlier would run its finally block too soon.
_parked: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[AsyncGenerator[None, None]]]
_parked = weakref.WeakKeyDictionary()
_lock = threading.Lock()


async def _run_at_shutdown(callback: Closer) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        try:
            await callback()
        except Exception:  # a failing close must not hide the loop's own shutdown
            log.warning("releasing a per-loop resource failed", exc_info=True)
        # The parked generators hold the loop (through its asyncgen hooks), so the
        # weak key alone would never let go of it: forget the loop here.
        with _lock:
            _parked.pop(asyncio.get_running_loop(), None)


def on_loop_close(callback: Closer) -> None:
    """Await ``callback()`` on the running loop when it shuts down.

    Must be called from a coroutine running on that loop. Loops closed without
    ``shutdown_asyncgens()`` (a hand-driven ``loop.close()``) never run it; the
    resource's own finalizers are then the last resort.
    """
    loop = asyncio.get_running_loop()
    parked = _run_at_shutdown(callback)
    # Step it to its ``yield`` without awaiting: the body before the yield has no
    # await, so one send finishes the step, and asyncio's first-iteration hook
    # has registered the generator with this loop for shutdown_asyncgens().
    step = parked.asend(None)
    with contextlib.suppress(StopIteration):
        step.send(None)
    with _lock:
        _parked.setdefault(loop, []).append(parked)
