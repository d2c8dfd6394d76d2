"""What a cache hit costs on each backend: ``broker.token(instance_id)`` with a fresh token
stored, with the near cache (the default) and without it (``near_cache=False``: every
call reads the store).

Each backend is rated against its own raw client doing the same lookup, timed in the
same run: a dict lookup and a clock read for memory; a SQLAlchemy Core
``select(table).where(pk == value)`` on a small table of our own, one pooled connection
per call (``engine.connect()``), for the SQL backends; redis-py ``r.get(key)`` of a
300-byte value for Redis.

The servers are shared: everything this creates carries a prefix of its own
(``bench_<hex>_`` tables, ``bench-<hex>:`` keys) and only that is removed afterwards.
A server that does not answer is left out with a note. ``herd.py`` uses the same
servers and clean-up through ``find_backends`` and ``Backend.cleanup``.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa

from harness import Case, Config, Table, measure, sync_loop
from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.servers import (
    CONNECT_TIMEOUT,
    MYSQL_URLS,
    POSTGRES_URLS,
    REDIS_URLS,
    delete_redis_keys,
    drop_tables,
    first_reachable,
)

NAME = "backends"

APP_ID = "bench-app"
APP_SECRET = "bench-secret"
INSTANCE = "inst-1"

# The servers on a development machine; the test suite's variables override them.

NEAR = "broker.token, near cache (default)"
FAR = "broker.token, near_cache=False"
MEMORY_BASELINE = "dict lookup + time.time()"
SQL_BASELINE = "raw select by pk, engine.connect() per call"
SQL_STORE_SHAPE = "raw select, tuned: statement built once, autocommit"
REDIS_BASELINE = "redis-py r.get(key), 300 B value"
RAW_VALUE = "x" * 300


@attrs.frozen
class Backend:
    """A shared store to benchmark: where it lives and the prefix that is ours in it."""

    label: str
    kind: str  # "sqlite", "sql" (a server) or "redis"
    base_url: str  # without our prefix
    prefix: str

    @property
    def store_url(self) -> str:
        option = "key_prefix" if self.kind == "redis" else "table_prefix"
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}{option}={self.prefix}"

    def cleanup(self) -> None:
        """Remove what carries our prefix, and nothing else."""
        if self.kind == "redis":
            delete_redis_keys(self.base_url, self.prefix)
        else:
            drop_tables(self.base_url, self.prefix)


def find_backends(tmp: Path) -> tuple[list[Backend], list[str]]:
    """SQLite in ``tmp`` and every server that answers; notes for those that do not."""
    run_id = secrets.token_hex(4)
    sql_prefix, redis_prefix = f"bench_{run_id}_", f"bench-{run_id}:"
    found = [Backend("SQLite (temp file)", "sqlite", f"sqlite:///{tmp / 'bench.db'}", sql_prefix)]
    notes = []
    servers = (
        ("PostgreSQL", "sql", POSTGRES_URLS, "TOKENBROKER_TEST_POSTGRES_URL"),
        ("MariaDB", "sql", MYSQL_URLS, "TOKENBROKER_TEST_MYSQL_URL"),
        ("Redis", "redis", REDIS_URLS, "TOKENBROKER_TEST_REDIS_URL"),
    )
    for label, kind, candidates, env_var in servers:
        url, reasons = first_reachable(candidates, env_var, redis=kind == "redis")
        if url is None:
            notes.append(f"{label} skipped: not reachable ({'; '.join(reasons)})")
        else:
            found.append(Backend(label, kind, url, redis_prefix if kind == "redis" else sql_prefix))
    return found, notes


def _redis_client(url: str) -> Any:
    import redis  # noqa: PLC0415 - only when a Redis row is wanted

    return redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT)


# --- the benchmark -----------------------------------------------------------------


def run(config: Config) -> list[Table]:
    with WixEmulator(APP_ID, APP_SECRET) as emu, tempfile.TemporaryDirectory() as tmp:
        emu.install(INSTANCE)
        backends, notes = find_backends(Path(tmp))
        tables = [_memory_table(emu, config)]
        for backend in backends:
            try:
                tables.append(_shared_table(emu, backend, config))
            except Exception as error:  # one backend failing leaves the others' tables
                notes.append(f"{backend.label} failed: {type(error).__name__}: {error}")
            finally:
                backend.cleanup()
    # Servers left out are told under the first table, the one that always runs.
    tables[0] = attrs.evolve(tables[0], notes=(*tables[0].notes, *notes))
    return tables


def _broker(emu: WixEmulator, store: str, near_cache: bool = True) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=emu.url, near_cache=near_cache
    )


def _time_brokers(
    emu: WixEmulator,
    stack: contextlib.ExitStack,
    urls: dict[str, str],
    raw: list[Case],
    config: Config,
) -> tuple[tuple[Any, ...], int]:
    """Rows for the raw cases (the first is the baseline) and a near and a far broker,
    and how many token requests reached the emulator while they were timed."""
    near = stack.enter_context(_broker(emu, urls[NEAR]))
    far = stack.enter_context(_broker(emu, urls[FAR], near_cache=False))
    for broker in (near, far):
        broker.token(INSTANCE)  # the one miss (or a store hit, when the store is shared)
    before = emu.token_requests
    cases = [*raw, Case(NEAR, sync_loop(near.token, INSTANCE))]
    cases.append(Case(FAR, sync_loop(far.token, INSTANCE)))
    rows = measure(cases, raw[0].name, config)
    return rows, emu.token_requests - before


def _memory_table(emu: WixEmulator, config: Config) -> Table:
    table: dict[str, str] = {INSTANCE: "a-token"}

    def dict_and_clock(key: str) -> str:
        value = table[key]
        time.time()
        return value

    raw = [Case(MEMORY_BASELINE, sync_loop(dict_and_clock, INSTANCE))]
    with contextlib.ExitStack() as stack:
        urls = {NEAR: "memory://", FAR: "memory://"}
        rows, misses = _time_brokers(emu, stack, urls, raw, config)
    return Table(
        title="memory://: broker.token(instance_id), a hit",
        baseline=MEMORY_BASELINE,
        rows=rows,
        notes=_misses_note(misses),
    )


def _shared_table(emu: WixEmulator, backend: Backend, config: Config) -> Table:
    with contextlib.ExitStack() as stack:
        if backend.kind == "redis":
            raw = _redis_cases(backend, stack)
            baseline = REDIS_BASELINE
        else:
            raw = _sql_cases(backend, stack)
            baseline = SQL_BASELINE
        # Both brokers share the store: the far one's first call is a store hit.
        urls = {NEAR: backend.store_url, FAR: backend.store_url}
        rows, misses = _time_brokers(emu, stack, urls, raw, config)
    notes = list(_misses_note(misses))
    best = {row.name: row.best_ns for row in rows}
    extra = best[FAR] - best[baseline]
    notes.append(
        f"a near-cache hit takes 1/{best[baseline] / best[NEAR]:,.0f} of the raw lookup; "
        f"without it a hit costs {abs(extra):,.0f} ns {'more' if extra >= 0 else 'less'} "
        "than the raw lookup"
    )
    if backend.kind == "sql":
        notes.append(
            f"'{SQL_STORE_SHAPE}': the raw select the way SQLStore runs its reads (a "
            "prepared-once statement with bound parameters on an autocommit connection, "
            "no pre-ping): the fairest raw floor for the store-only row"
        )
    return Table(
        title=f"{backend.label}: broker.token(instance_id), a hit",
        baseline=baseline,
        rows=rows,
        notes=tuple(notes),
    )


def _sql_cases(backend: Backend, stack: contextlib.ExitStack) -> list[Case]:
    """The raw lookups, on a small table of our own next to the store's."""
    table = sa.Table(
        f"{backend.prefix}raw",
        sa.MetaData(),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    engine = sa.create_engine(backend.base_url)
    stack.callback(engine.dispose)
    expires = int((time.time() + 14400) * 1_000_000)
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(
            table.insert(),
            [{"id": f"inst-{i}", "value": RAW_VALUE, "expires_at": expires} for i in range(1, 11)],
        )

    # The statement is built on each call, as the store builds its own.
    def lookup(key: str) -> object:
        with engine.connect() as conn:
            return conn.execute(sa.select(table).where(table.c.id == key)).first()

    lookup(INSTANCE)  # connect now: a first call must not set the loop count
    cases = [Case(SQL_BASELINE, sync_loop(lookup, INSTANCE))]
    if backend.kind == "sql":
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"}
        shaped = sa.create_engine(backend.base_url, **options)
        stack.callback(shaped.dispose)
        prepared = sa.select(table).where(table.c.id == sa.bindparam("b_id"))

        def store_shaped(key: str) -> object:
            with shaped.connect() as conn:
                return conn.execute(prepared, {"b_id": key}).first()

        store_shaped(INSTANCE)
        cases.append(Case(SQL_STORE_SHAPE, sync_loop(store_shaped, INSTANCE)))
    return cases


def _redis_cases(backend: Backend, stack: contextlib.ExitStack) -> list[Case]:
    client = _redis_client(backend.base_url)
    stack.callback(client.close)
    key = f"{backend.prefix}raw"
    client.set(key, RAW_VALUE.encode())
    client.get(key)
    return [Case(REDIS_BASELINE, sync_loop(client.get, key))]


def _misses_note(misses: int) -> tuple[str, ...]:
    if misses:
        return (f"WARNING: {misses} token request(s) reached the emulator while timing hits",)
    return ()
