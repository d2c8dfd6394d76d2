"""Timing and reporting shared by the benchmark modules.

The machines these run on are shared and noisy, so no absolute figure means much on its
own: every table has a baseline measured in the same run, and each case is reported as
a ratio to it. Cases are timed in rounds (every case once per round, the order rotated)
so that a burst of noise lands on all of them rather than on one.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

# A timed loop: runs the operation n times and returns the elapsed nanoseconds.
Loop = Callable[[int], int]


class Skip(Exception):
    """A benchmark cannot run here (e.g. its server is missing); run.py reports why."""


@attrs.frozen
class Config:
    quick: bool
    repeat: int
    # Each timed loop runs about this long; the loop count is calibrated per case.
    target_seconds: float

    @classmethod
    def make(cls, *, quick: bool) -> Config:
        if quick:
            return cls(quick=True, repeat=5, target_seconds=0.02)
        return cls(quick=False, repeat=7, target_seconds=0.2)


@attrs.frozen
class Case:
    name: str
    loop: Loop


@attrs.frozen
class Row:
    name: str
    number: int
    samples_ns: tuple[float, ...]  # ns per call, one per repeat
    best_ratio: float
    median_ratio: float

    @property
    def best_ns(self) -> float:
        return min(self.samples_ns)

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "number": self.number,
            "repeat": len(self.samples_ns),
            "best_ns_per_call": round(self.best_ns, 1),
            "median_ns_per_call": round(self.median_ns, 1),
            "ratio_best": round(self.best_ratio, 3),
            "ratio_median": round(self.median_ratio, 3),
            "samples_ns_per_call": [round(s, 1) for s in self.samples_ns],
        }


@attrs.frozen
class Table:
    title: str
    baseline: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "baseline": self.baseline,
            "rows": [r.to_json() for r in self.rows],
            "notes": list(self.notes),
        }

    def render(self) -> str:
        headers = ("case", "calls x repeat", "best ns/call", "median ns/call", "x baseline")
        body = [
            (
                r.name + (" (baseline)" if r.name == self.baseline else ""),
                f"{r.number:,} x {len(r.samples_ns)}",
                f"{r.best_ns:,.1f}",
                f"{r.median_ns:,.1f}",
                f"{r.best_ratio:,.2f}",
            )
            for r in self.rows
        ]
        return render_table(self.title, headers, body, self.notes)


def render_table(
    title: str, headers: Sequence[str], body: Sequence[Sequence[str]], notes: Sequence[str]
) -> str:
    """A plain-text table: first column left-aligned, the rest right-aligned, notes after."""
    widths = [max(len(line[i]) for line in (headers, *body)) for i in range(len(headers))]

    def fmt(line: Sequence[str]) -> str:
        first = line[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(line[1:], widths[1:], strict=True))
        return "  ".join((first, *rest))

    out = [title, fmt(headers), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in body]
    out += [f"  note: {n}" for n in notes]
    return "\n".join(out)


def sync_loop(fn: Callable[[Any], object], arg: Any) -> Loop:
    """Time ``fn(arg)`` called n times back to back."""

    def loop(n: int) -> int:
        it = itertools.repeat(None, n)
        start = time.perf_counter_ns()
        for _ in it:
            fn(arg)
        return time.perf_counter_ns() - start

    return loop


def async_loop(runner: asyncio.Runner, fn: Callable[[Any], Awaitable[object]], arg: Any) -> Loop:
    """Time ``await fn(arg)`` n times back to back, inside ``runner``'s event loop.

    The clock is read inside the coroutine so loop start-up is not counted.
    """

    async def timed(n: int) -> int:
        it = itertools.repeat(None, n)
        start = time.perf_counter_ns()
        for _ in it:
            await fn(arg)
        return time.perf_counter_ns() - start

    def loop(n: int) -> int:
        return runner.run(timed(n))

    return loop


def _timed(loop: Loop, n: int) -> int:
    # As timeit does: a collection landing inside one sample is noise, not signal.
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return loop(n)
    finally:
        if was_enabled:
            gc.enable()


def calibrate(loop: Loop, target_seconds: float) -> int:
    """The smallest 1-2-5 step loop count that runs at least ``target_seconds``."""
    target_ns = target_seconds * 1e9
    scale = 1
    while True:
        for step in (1, 2, 5):
            n = step * scale
            if _timed(loop, n) >= target_ns:
                return n
        scale *= 10


def measure(cases: Sequence[Case], baseline: str, config: Config) -> tuple[Row, ...]:
    """Time every case ``config.repeat`` times, in rotating order, and rate each against
    the case named ``baseline`` (by best and by median ns per call)."""
    numbers = {c.name: calibrate(c.loop, config.target_seconds) for c in cases}
    samples: dict[str, list[float]] = {c.name: [] for c in cases}
    for round_ in range(config.repeat):
        shift = round_ % len(cases)
        for case in (*cases[shift:], *cases[:shift]):
            n = numbers[case.name]
            samples[case.name].append(_timed(case.loop, n) / n)
    base_best = min(samples[baseline])
    base_median = statistics.median(samples[baseline])
    return tuple(
        Row(
            name=c.name,
            number=numbers[c.name],
            samples_ns=tuple(samples[c.name]),
            best_ratio=min(samples[c.name]) / base_best,
            median_ratio=statistics.median(samples[c.name]) / base_median,
        )
        for c in cases
    )
