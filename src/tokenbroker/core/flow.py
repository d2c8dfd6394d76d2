"""One decision core, two drivers, typed operations.

Logic that needs I/O is written once as a generator. Each step it needs done is
an ``Op``: a small frozen class that says what to do and knows how to do it on a
port, both ways (``run`` blocking, ``arun`` awaited). The flow writes

    stored = yield from GetToken(key)

and mypy knows ``stored`` is what ``GetToken`` gives back, because ``Op[R]`` is
iterable as a one-step generator that yields itself and returns the ``R`` the
driver sends in. ``run_sync`` drives a flow on threads, ``run_async`` on an
event loop: the same decisions, no sync I/O on a loop and no loop inside a sync
call. This is httpx's ``Auth.auth_flow`` shape with typed requests in place of
strings.

A port is whatever object the ops of one flow act on; each op types the port it
needs as a ``Protocol``, so a port missing a method is a type error in the op.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any, Generic, TypeAlias, TypeVar

import attrs

T = TypeVar("T")
R = TypeVar("R")


class Op(Generic[R]):
    """A step a flow asks its driver to take; ``R`` is what the step gives back."""

    __slots__ = ()

    def run(self, port: Any) -> R:
        """Do the step, blocking (the sync driver)."""
        raise NotImplementedError

    async def arun(self, port: Any) -> R:
        """Do the step, awaited (the async driver): never blocks the loop."""
        raise NotImplementedError

    def __iter__(self) -> Generator[Op[R], R, R]:
        # `yield from op` in a flow: hand the op to the driver, return its result.
        return (yield self)


Flow: TypeAlias = Generator[Op[Any], Any, T]
"""A decision core: yields ``Op``s, is sent their results, returns a ``T``."""


@attrs.frozen
class Sleep(Op[None]):
    """Wait ``seconds``: ``time.sleep`` on a thread, ``asyncio.sleep`` on a loop."""

    seconds: float

    def run(self, port: object) -> None:
        time.sleep(self.seconds)

    async def arun(self, port: object) -> None:
        await asyncio.sleep(self.seconds)


def run_sync(flow: Flow[T], port: object) -> T:
    """Drive ``flow`` to completion, running each op blocking on ``port``."""
    try:
        op = next(flow)
        while True:
            try:
                result = op.run(port)
            except BaseException as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], port: object) -> T:
    """Drive ``flow`` to completion, awaiting each op on ``port``."""
    try:
        op = next(flow)
        while True:
            try:
                result = await op.arun(port)
            except BaseException as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
