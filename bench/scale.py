"""Does a cache hit stay flat as the fleet grows? ``broker.token(instance_id)`` with
1,000, 10,000 and 100,000 installations, every one with a fresh token in the near cache.

Each size gets a ``memory://`` broker filled with pre-made tokens (built here, stamped
by the broker's own policy, written to its store, then brought into the near cache by
one ``broker.token()`` each), and is timed on instances drawn at random. The random
sequence is drawn before timing, so the RNG is outside the timed loop; the baseline
walks the same sequence through a plain dict of the same size, plus a clock read (a
freshness check needs the time). A big dict misses the CPU caches more than a small
one, and the baseline pays that too, so its ratio tells the broker's own overhead at
each size.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import attrs

from harness import Case, Config, Loop, Row, Table, measure
from tokenbroker import Token, TokenBroker
from tokenbroker.testing.emulator import WixEmulator

NAME = "scale"

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
SIZES = (1_000, 10_000, 100_000)
LIFETIME = 14_400.0
# How many random picks are drawn; timed loops cycle through them.
SEQUENCE_LENGTH = 1 << 20
SEED = 20_240_601

BASELINE = "dict lookup + time.time(), same size"
BROKER = "broker.token(instance_id), memory://"


def run(config: Config) -> list[Table]:
    rng = random.Random(SEED)
    with WixEmulator(APP_ID, APP_SECRET) as emu:
        tables = [_table(emu, size, rng, config) for size in SIZES]
    return _with_summary(tables)


def _ids(size: int) -> list[str]:
    return [f"scale-{size}-{i:06d}" for i in range(size)]


def _fill(broker: TokenBroker, ids: Sequence[str]) -> dict[str, Token]:
    """A fresh, stamped token per instance in the store, then one ``broker.token()`` per
    instance (a store hit) to bring it into the near cache; returns the tokens."""
    now = time.time()
    obtained = datetime.fromtimestamp(now, UTC)
    expires = datetime.fromtimestamp(now + LIFETIME, UTC)
    tokens = {}
    for instance_id in ids:
        token = broker.policy.stamp(
            Token(
                key=broker.key(instance_id),
                access_token=f"OAUTH2.{instance_id}",
                token_type="Bearer",
                expires_at=expires,
                obtained_at=obtained,
            )
        )
        broker.store.put_token(token)
        tokens[instance_id] = token
    for instance_id in ids:
        broker.token(instance_id)
    return tokens


def _walk(fn: Callable[[str], object], sequence: Sequence[str]) -> Loop:
    """Time ``fn(instance_id)`` over ``sequence`` (cycled) for n calls."""

    def loop(n: int) -> int:
        picks = itertools.islice(itertools.cycle(sequence), n)
        start = time.perf_counter_ns()
        for instance_id in picks:
            fn(instance_id)
        return time.perf_counter_ns() - start

    return loop


def _table(emu: WixEmulator, size: int, rng: random.Random, config: Config) -> Table:
    ids = _ids(size)
    for instance_id in ids:
        emu.install(instance_id)  # a miss, should one happen, is then answered and counted
    sequence = [rng.choice(ids) for _ in range(SEQUENCE_LENGTH)]
    before = emu.token_requests
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url=emu.url
    ) as broker:
        table = _fill(broker, ids)
        warmed = time.monotonic()

        def dict_and_clock(instance_id: str) -> Token:
            value = table[instance_id]
            time.time()
            return value

        near = broker.engine.near
        cached = len(near) if near is not None else 0
        cases = [
            Case(BASELINE, _walk(dict_and_clock, sequence)),
            Case(BROKER, _walk(broker.token, sequence)),
        ]
        rows = measure(cases, BASELINE, config)
        elapsed = time.monotonic() - warmed
        misses = emu.token_requests - before
        wrong = sum(broker.token(i).access_token != table[i].access_token for i in ids)
    notes = [f"{size:,} installations, {cached:,} of them in the near cache"]
    # The near cache serves an entry for at most max_age seconds, then asks the store.
    max_age = getattr(near, "max_age", None)
    if max_age is not None and elapsed > max_age:
        notes.append(
            f"WARNING: timing ended {elapsed:.0f}s after the near cache was warmed, past its "
            f"max_age ({max_age:.0f}s): some timed calls went on to the store"
        )
    if misses:
        notes.append(f"WARNING: {misses} token request(s) reached the emulator")
    if wrong:
        notes.append(f"WARNING: {wrong} installation(s) got another token than the one stored")
    return Table(
        title=f"scale: broker.token(), {size:,} installations, random instance per call",
        baseline=BASELINE,
        rows=rows,
        notes=tuple(notes),
    )


def _row(table: Table, name: str) -> Row:
    return next(r for r in table.rows if r.name == name)


def _with_summary(tables: list[Table]) -> list[Table]:
    """Under the last table: how the cost moved from the smallest size to the largest."""
    first, last = tables[0], tables[-1]
    growth = {
        name: _row(last, name).best_ns / _row(first, name).best_ns for name in (BASELINE, BROKER)
    }
    ratios = ", ".join(
        f"{size:,}: {_row(t, BROKER).best_ratio:.2f}x"
        for size, t in zip(SIZES, tables, strict=True)
    )
    summary = (
        f"flatness, best ns/call at {SIZES[-1]:,} over {SIZES[0]:,}: broker.token "
        f"{growth[BROKER]:.2f}x, the dict baseline {growth[BASELINE]:.2f}x; "
        f"broker.token x baseline by size: {ratios}",
        "100,000 is the default near_cache_size and memory:// max_tokens: a bigger fleet "
        "needs both raised (the near cache evicts oldest-first when full)",
    )
    tables[-1] = attrs.evolve(last, notes=(*last.notes, *summary))
    return tables
