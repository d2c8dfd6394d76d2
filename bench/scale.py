"""Does a cache hit stay at the floor as the fleet grows? ``broker.token(instance_id)``
and ``await broker.atoken(instance_id)`` with 1,000, 100,000 and 1,000,000 installations
(1,000 and 100,000 with --quick), every one with a fresh token in the near cache.

Each size gets a ``memory://`` broker whose near cache, key memo and store hold the whole
fleet (``near_cache_size`` and ``max_tokens`` raised to the size), filled with pre-made
tokens (built here, stamped by the broker's own policy, written to its store, then brought
into the near cache by one ``broker.token()`` each), and is timed on instances drawn at
random. The random sequence is drawn before timing, so the RNG is outside the timed loop.

The floors walk the same sequence through a plain dict of the same size plus a clock read
(a freshness check needs the time): a plain function for ``token()``, an ``async def``
awaited in the same event loop for ``atoken()``. A big dict misses the CPU caches more
than a small one, and the floors pay that too, so the ratios tell the broker's own
overhead at each size. When Authlib is installed, its hit is timed too: a dict of
``OAuth2Token`` (one per instance, the same sequence) and ``client.ensure_active_token``
on the one it finds, then its access token, which is the least an app using Authlib's
client-credentials client per installation does per call.

What counting costs: each size also times a second broker of the same app built with
``metrics=False`` over the same store and the same near cache (so the same entries, no
second fill): the hit it takes is the counted one without its increment.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from harness import Case, Config, Loop, Row, Table, measure
from tokenbroker import Token, TokenBroker
from tokenbroker.testing.emulator import WixEmulator

NAME = "scale"

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
LIFETIME = 14_400.0
# Long enough that every timed call is a near-cache hit however long the fill took;
# the max age is one comparison on the hit path, whatever its value.
MAX_AGE = 3_600.0
# How many random picks are drawn; timed loops cycle through them.
SEQUENCE_LENGTH = 1 << 20
SEED = 20_240_601

FLOOR = "floor: dict lookup + time.time()"
BROKER = "broker.token(instance_id)"
AUTHLIB = "Authlib: dict lookup + client.ensure_active_token(token)"
ASYNC_FLOOR = "floor: async def, dict lookup + time.time()"
ABROKER = "await broker.atoken(instance_id)"
BROKER_OFF = "broker.token(instance_id), metrics=False"
ABROKER_OFF = "await broker.atoken(instance_id), metrics=False"

GOALS = {BROKER: 2.0, ABROKER: 2.5}
AUTHLIB_GOAL = 0.6


def run(config: Config) -> list[Table]:
    rng = random.Random(SEED)
    sizes = QUICK_SIZES if config.quick else SIZES
    authlib = _authlib_client()
    with WixEmulator(APP_ID, APP_SECRET) as emu:
        tables = [t for size in sizes for t in _tables(emu, size, rng, config, authlib)]
    return _with_summary(tables, sizes, authlib is not None)


def _authlib_client() -> Any:
    """Authlib's requests client for client credentials, or ``None`` if not installed."""
    try:
        from authlib.integrations.requests_client import OAuth2Session  # noqa: PLC0415
    except ImportError:
        return None
    return OAuth2Session(
        APP_ID, APP_SECRET, token_endpoint="http://127.0.0.1:9/oauth2/token",
        grant_type="client_credentials",
    )  # fmt: skip


def _ids(size: int) -> list[str]:
    return [f"scale-{size}-{i:07d}" for i in range(size)]


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


def _awalk(
    runner: asyncio.Runner, fn: Callable[[str], Awaitable[object]], sequence: Sequence[str]
) -> Loop:
    """Time ``await fn(instance_id)`` over ``sequence`` (cycled) for n calls, the clock
    read inside the coroutine so the loop's start-up is not counted."""

    async def timed(n: int) -> int:
        picks = itertools.islice(itertools.cycle(sequence), n)
        start = time.perf_counter_ns()
        for instance_id in picks:
            await fn(instance_id)
        return time.perf_counter_ns() - start

    def loop(n: int) -> int:
        return runner.run(timed(n))

    return loop


def _authlib_case(client: Any, table: dict[str, Token], sequence: Sequence[str]) -> Case:
    from authlib.oauth2.rfc6749 import OAuth2Token  # noqa: PLC0415

    tokens = {
        instance_id: OAuth2Token(
            {
                "access_token": token.access_token,
                "token_type": "Bearer",
                "expires_at": int(token.expires_at.timestamp()),
            }
        )
        for instance_id, token in table.items()
    }
    ensure = client.ensure_active_token

    def hit(instance_id: str) -> str:
        token = tokens[instance_id]
        ensure(token)
        return str(token["access_token"])

    return Case(AUTHLIB, _walk(hit, sequence))


def _tables(
    emu: WixEmulator, size: int, rng: random.Random, config: Config, authlib: Any
) -> list[Table]:
    ids = _ids(size)
    sequence = [rng.choice(ids) for _ in range(SEQUENCE_LENGTH)]
    before = emu.token_requests
    started = time.monotonic()
    with (
        asyncio.Runner() as runner,
        TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=f"memory://?max_tokens={size}",
            api_url=emu.url,
            near_cache_size=size,
            near_cache_max_age=MAX_AGE,
        ) as broker,
    ):
        table = _fill(broker, ids)
        fill_seconds = time.monotonic() - started
        warmed = time.monotonic()

        def dict_and_clock(instance_id: str) -> Token:
            value = table[instance_id]
            time.time()
            return value

        async def adict_and_clock(instance_id: str) -> Token:
            value = table[instance_id]
            time.time()
            return value

        near = broker.engine.near
        cached = len(near) if near is not None else 0
        # the same app over the same store and near cache: the same entries, uncounted
        uncounted = TokenBroker(
            app_id=APP_ID,
            app_secret=APP_SECRET,
            store=broker.store,
            api_url=emu.url,
            near_cache=near if near is not None else False,
            near_cache_size=size,
            metrics=False,
        )
        cases = [
            Case(FLOOR, _walk(dict_and_clock, sequence)),
            Case(BROKER, _walk(broker.token, sequence)),
            Case(BROKER_OFF, _walk(uncounted.token, sequence)),
        ]
        if authlib is not None:
            cases.append(_authlib_case(authlib, table, sequence))
        rows = measure(cases, FLOOR, config)
        runner.run(broker.atoken(ids[0]))  # any first-call set-up on this loop, untimed
        runner.run(uncounted.atoken(ids[0]))
        acases = [
            Case(ASYNC_FLOOR, _awalk(runner, adict_and_clock, sequence)),
            Case(ABROKER, _awalk(runner, broker.atoken, sequence)),
            Case(ABROKER_OFF, _awalk(runner, uncounted.atoken, sequence)),
        ]
        arows = measure(acases, ASYNC_FLOOR, config)
        elapsed = time.monotonic() - warmed
        misses = emu.token_requests - before
        wrong = sum(broker.token(i).access_token != table[i].access_token for i in ids)
        runner.run(uncounted.aclose())
        runner.run(broker.aclose())
    notes = [
        f"{size:,} installations, {cached:,} of them in the near cache; filling took "
        f"{fill_seconds:.1f}s (not timed)"
    ]
    if elapsed > MAX_AGE:
        notes.append(
            f"WARNING: timing ended {elapsed:.0f}s after the near cache was warmed, past its "
            f"max_age ({MAX_AGE:.0f}s): some timed calls went on to the store"
        )
    if cached < size:
        notes.append(f"WARNING: only {cached:,} of {size:,} in the near cache")
    if misses:
        notes.append(f"WARNING: {misses} token request(s) reached the emulator")
    if wrong:
        notes.append(f"WARNING: {wrong} installation(s) got another token than the one stored")
    return [
        Table(
            title=f"scale: broker.token(), {size:,} installations, random instance per call",
            baseline=FLOOR,
            rows=rows,
            notes=tuple(notes),
        ),
        Table(
            title=f"scale: await broker.atoken(), {size:,} installations, random instance",
            baseline=ASYNC_FLOOR,
            rows=arows,
        ),
    ]


def _row(tables: Sequence[Table], name: str) -> Row:
    return next(r for t in tables for r in t.rows if r.name == name)


def _with_summary(tables: list[Table], sizes: Sequence[int], authlib: bool) -> list[Table]:
    """Under the last table: each ratio by size against its goal, and how each cost
    moved from the smallest size to the largest."""
    by_size = [tables[i : i + 2] for i in range(0, len(tables), 2)]
    first, last = by_size[0], by_size[-1]
    summary = []
    for name, floor in ((BROKER, FLOOR), (ABROKER, ASYNC_FLOOR)):
        ratios = ", ".join(
            f"{size:,}: {_row(pair, name).best_ratio:.2f}x"
            for size, pair in zip(sizes, by_size, strict=True)
        )
        grow = _row(last, name).best_ns / _row(first, name).best_ns
        floor_grow = _row(last, floor).best_ns / _row(first, floor).best_ns
        summary.append(
            f"{name} x its floor (goal <= {GOALS[name]}x), best by size: {ratios}; "
            f"best ns/call at {sizes[-1]:,} over {sizes[0]:,}: {grow:.2f}x, the floor's "
            f"{floor_grow:.2f}x"
        )
    for on, off in ((BROKER, BROKER_OFF), (ABROKER, ABROKER_OFF)):
        costs = ", ".join(
            f"{size:,}: {_row(pair, on).best_ns / _row(pair, off).best_ns:.2f}x "
            f"({_row(pair, on).best_ns - _row(pair, off).best_ns:+.0f} ns)"
            for size, pair in zip(sizes, by_size, strict=True)
        )
        summary.append(f"{on}: metrics on over off, best by size: {costs}")
    if authlib:
        ratios = ", ".join(
            f"{size:,}: {_row(pair, BROKER).best_ns / _row(pair, AUTHLIB).best_ns:.2f}x"
            for size, pair in zip(sizes, by_size, strict=True)
        )
        summary.append(f"broker.token x Authlib's hit (goal <= {AUTHLIB_GOAL}x): {ratios}")
    else:
        summary.append("Authlib not installed: its hit was not timed (pip install authlib)")
    tables[-1] = attrs.evolve(tables[-1], notes=(*tables[-1].notes, *summary))
    return tables
