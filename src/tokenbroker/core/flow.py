"""One decision core, two drivers.

Logic that needs I/O is written once as a generator that yields ``Op``s (what
to do) and receives their results. ``run_sync`` performs each op on a sync
port object, ``run_async`` awaits it on an async one; the port objects have
methods of the same names. This is how httpx's ``Auth.auth_flow`` keeps sync
and async clients on one code path, and it keeps blocking calls off the event
loop by construction.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import attrs

T = TypeVar("T")


@attrs.frozen
class Op:
    """A request from a flow to its driver: call ``name(*args)`` on the port."""

    name: str
    args: tuple[Any, ...] = ()


Flow = Generator[Op, Any, T]


def run_sync(flow: Flow[T], port: object) -> T:
    """Drive ``flow`` to completion, calling the sync ``port``'s methods."""
    try:
        op = next(flow)
        while True:
            try:
                result = getattr(port, op.name)(*op.args)
            except BaseException as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], port: object) -> T:
    """Drive ``flow`` to completion, awaiting the async ``port``'s methods."""
    try:
        op = next(flow)
        while True:
            try:
                result = await getattr(port, op.name)(*op.args)
            except BaseException as exc:
                op = flow.throw(exc)
            else:
                op = flow.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
