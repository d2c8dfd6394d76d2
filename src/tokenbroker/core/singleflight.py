"""In-process single-flight: one caller per key does the work, the rest wait.

Threads share ``concurrent.futures.Future``s; asyncio tasks share
``asyncio.Future``s of their own event loop (a broker may be used from
several loops, each in its own thread). Across sync and async callers, and
across processes, the store's lease is what keeps the upstream call single.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ThreadFlights(Generic[K, V]):
    """Flights shared by threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[K, Future[V]] = {}

    def join(self, key: K) -> tuple[Future[V], bool]:
        """Return the flight for ``key`` and whether the caller leads it."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Future()
            return flight, True

    def in_flight(self, key: K) -> bool:
        return key in self._flights

    def land(self, key: K, flight: Future[V]) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]


class TaskFlights(Generic[K, V]):
    """Flights shared by the tasks of one event loop, kept per loop."""

    def __init__(self) -> None:
        self._per_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[K, asyncio.Future[V]]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _flights(self) -> dict[K, asyncio.Future[V]]:
        loop = asyncio.get_running_loop()
        flights = self._per_loop.get(loop)
        if flights is None:
            with self._lock:
                flights = self._per_loop.setdefault(loop, {})
        return flights

    def join(self, key: K) -> tuple[asyncio.Future[V], bool]:
        flights = self._flights()
        flight = flights.get(key)
        if flight is not None:
            return flight, False
        flight = flights[key] = asyncio.get_running_loop().create_future()
        return flight, True

    def in_flight(self, key: K) -> bool:
        return key in self._flights()

    def land(self, key: K, flight: asyncio.Future[V]) -> None:
        flights = self._flights()
        if flights.get(key) is flight:
            del flights[key]
