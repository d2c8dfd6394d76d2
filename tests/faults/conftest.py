"""What every fault scenario shares: the invariants it checks, a recorder for the
store hooks, a private ``redis-server`` it may kill, a PostgreSQL store whose
connections it may terminate, and a lease holder in another process.

The invariants (``Invariants``):

* no expired token is ever handed out (judged by the broker's own clock);
* nothing the emulator did not issue is ever stored, or kept in the near cache;
* no installation recorded before a fault is missing after it;
* upstream requests stay within the retry budget (checked by each test against
  ``wix_emulator.token_requests``, since what the budget allows depends on the fault).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
import sqlalchemy as sa

from tokenbroker import Token, TokenBroker, TokenKey, hookimpl
from tokenbroker.core.clock import to_timestamp
from tokenbroker.plugins import plugin_manager, reset_plugins
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.pytest_plugin import TEST_APP_ID, TEST_APP_SECRET
from tokenbroker.testing.servers import POSTGRES_URLS, drop_tables

from ..backends.conftest import find_server, server_unavailable
from ..polling import wait_until
from ..workers import go, kill
from ..workers import start as start_worker

APP_ID = TEST_APP_ID
APP_SECRET = TEST_APP_SECRET
# Requests one token fetch may make (the Wix provider's documented default).
BUDGET = 3

T = TypeVar("T")


# --- the invariants ------------------------------------------------------------------


class Invariants:
    """Hands out tokens through ``broker`` and checks the promises around each fault."""

    def __init__(self, broker: TokenBroker, emulator: WixEmulator) -> None:
        self.broker = broker
        self.emulator = emulator
        self.registry: frozenset[str] = frozenset()

    def token(self, instance_id: str) -> Token:
        return self.check_handed_out(self.broker.token(instance_id))

    async def atoken(self, instance_id: str) -> Token:
        return self.check_handed_out(await self.broker.atoken(instance_id))

    def check_handed_out(self, token: Token) -> Token:
        now = self.broker.clock.time()
        assert to_timestamp(token.expires_at) > now, (
            f"an expired token was handed out for {token.key} "
            f"(expired {now - to_timestamp(token.expires_at):.1f}s ago by the broker's clock)"
        )
        assert token.access_token in self.emulator.issued_tokens_for(token.instance_id), (
            f"a token the emulator never issued was handed out for {token.key}"
        )
        return token

    def record_registry(self) -> frozenset[str]:
        """Remember the installations recorded now, to compare after the fault."""
        self.registry = self.installed()
        assert self.registry, "record some installations before the fault"
        return self.registry

    def installed(self) -> frozenset[str]:
        return frozenset(i.instance_id for i in self.broker.installations())

    def assert_registry_kept(self) -> None:
        missing = self.registry - self.installed()
        assert not missing, f"installations lost to the fault: {sorted(missing)}"

    def assert_nothing_foreign_kept(self, instance_ids: Iterable[str]) -> None:
        """The store and the near cache hold only tokens the emulator issued."""
        near = self.broker.engine.near
        for instance_id in instance_ids:
            key = self.broker.key(instance_id)
            issued = set(self.emulator.issued_tokens_for(instance_id))
            stored = self.broker.store.get_token(key)
            assert stored is None or stored.access_token in issued, (
                f"the store holds a token for {key} that the emulator never issued"
            )
            entry = near.get(key) if near is not None else None
            assert entry is None or entry.token.access_token in issued, (
                f"the near cache holds a token for {key} that the emulator never issued"
            )

    def assert_kept(self, *instance_ids: str) -> None:
        """After the fault: the registry is whole, and nothing foreign is kept for the
        recorded installations nor for ``instance_ids``."""
        self.assert_registry_kept()
        self.assert_nothing_foreign_kept(self.registry | set(instance_ids))


class Requests:
    """Token requests the emulator received since this was made."""

    def __init__(self, emulator: WixEmulator) -> None:
        self.emulator = emulator
        self.start = emulator.token_requests

    @property
    def count(self) -> int:
        return self.emulator.token_requests - self.start


def stored_token(broker: TokenBroker, instance_id: str) -> Token | None:
    return broker.store.get_token(broker.key(instance_id))


# --- concurrency -------------------------------------------------------------------------


@attrs.define
class Outcomes:
    """What each of several concurrent callers got."""

    results: list[Any] = attrs.Factory(list)
    errors: list[BaseException] = attrs.Factory(list)


def in_threads(count: int, call: Callable[[], T], *, timeout: float = 30.0) -> Outcomes:
    """Run ``call`` in ``count`` threads at once; collect results and errors."""
    outcomes = Outcomes()
    lock = threading.Lock()
    start = threading.Barrier(count)

    def work() -> None:
        start.wait(timeout)
        try:
            result = call()
        except Exception as exc:
            with lock:
                outcomes.errors.append(exc)
        else:
            with lock:
                outcomes.results.append(result)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {count} callers were still waiting after {timeout:g}s"
    return outcomes


def in_background(call: Callable[[], T]) -> Future[T]:
    """Run ``call`` in a thread of its own; its outcome arrives in the future."""
    future: Future[T] = Future()

    def work() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=work, daemon=True).start()
    return future


@contextlib.contextmanager
def held_until_first_request(emulator: WixEmulator, timeout: float = 15.0) -> Iterator[None]:
    """Hold token requests in the emulator until one arrives, then let them all go.

    Keeps the first caller's request in flight while the other callers start, so
    they find its flight open; the callers themselves run inside the block.
    """
    emulator.pause()

    def release() -> None:
        emulator.wait_for_in_flight(1, timeout=timeout)
        emulator.resume()

    releaser = threading.Thread(target=release, daemon=True)
    releaser.start()
    try:
        yield
    finally:
        emulator.resume()
        releaser.join(timeout)


# --- plugin hooks ------------------------------------------------------------------------


class HookRecorder:
    """A plugin that records the store and failure hooks (registered like any plugin)."""

    def __init__(self) -> None:
        self.degraded: list[tuple[str, BaseException]] = []
        self.recovered: list[str] = []
        self.failed: list[tuple[TokenKey, BaseException]] = []

    @hookimpl
    def tokenbroker_store_degraded(self, store_url: str, error: BaseException) -> None:
        self.degraded.append((store_url, error))

    @hookimpl
    def tokenbroker_store_recovered(self, store_url: str) -> None:
        self.recovered.append(store_url)

    @hookimpl
    def tokenbroker_token_failed(self, key: TokenKey, error: BaseException) -> None:
        self.failed.append((key, error))


@pytest.fixture
def hooks() -> Iterator[HookRecorder]:
    """A fresh plugin manager with a ``HookRecorder`` registered; reset afterwards."""
    reset_plugins()
    recorder = HookRecorder()
    plugin_manager().register(recorder, name="fault-hook-recorder")
    yield recorder
    reset_plugins()


# --- a private redis-server ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of our own on a loopback port, keeping nothing on disk."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def store_url(self, key_prefix: str = "tb_fault_") -> str:
        # Short socket timeouts: a dead server must be reported quickly.
        return f"{self.url}?socket_timeout=2&socket_connect_timeout=2&key_prefix={key_prefix}"

    def start(self) -> None:
        assert self.process is None, "already running"
        self.starts += 1
        log = (self.workdir / f"redis-{self.port}-{self.starts}.log").open("wb")
        with log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {process.returncode}"
                )
            return self.ping()

        try:
            wait_until(up, f"redis-server on port {self.port} to answer PING")
        except BaseException:
            self.kill()
            raise

    def ping(self) -> bool:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=1, socket_timeout=1
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the clients."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
        if process is not None:
            process.wait(timeout=15)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running private ``redis-server`` (never the shared one on 6379)."""
    binary = shutil.which("redis-server")
    if binary is None:
        server_unavailable("redis-server is not on PATH")
    try:
        import redis  # noqa: F401
    except ImportError as error:
        server_unavailable(f"redis-py missing: {error}")
    server = None
    for _ in range(3):  # another process may take the free port before we bind it
        server = RedisServer(binary, free_port(), tmp_path)
        try:
            server.start()
        except RuntimeError:
            server = None
            continue
        break
    if server is None:
        pytest.fail("could not start a private redis-server on a free port")
    try:
        yield server
    finally:
        server.kill()


# --- PostgreSQL ------------------------------------------------------------------------


@attrs.frozen
class PostgresTarget:
    """A store URL whose tables and connections are this test's alone."""

    base_url: str
    url: str
    table_prefix: str
    application_name: str

    def _admin(self) -> sa.Engine:
        return sa.create_engine(self.base_url, poolclass=sa.pool.NullPool)

    def connections(self) -> int:
        """Server backends the store has open now."""
        engine = self._admin()
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": self.application_name},
                ).scalar_one()
        finally:
            engine.dispose()
        return int(found)

    def terminate(self) -> int:
        """``pg_terminate_backend`` every connection of the store; how many there were."""
        engine = self._admin()
        try:
            with engine.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :n AND pid <> pg_backend_pid()"
                    ),
                    {"n": self.application_name},
                ).scalars()
                count = sum(bool(k) for k in killed)
        finally:
            engine.dispose()
        wait_until(lambda: self.connections() == 0, "the terminated backends to go")
        return count

    def terminate_pid(self, pid: int) -> None:
        engine = self._admin()
        try:
            with engine.connect() as conn:
                done = conn.execute(
                    sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
                ).scalar_one()
        finally:
            engine.dispose()
        assert done, f"could not terminate backend {pid}"

        def gone() -> bool:
            engine = self._admin()
            try:
                with engine.connect() as conn:
                    return not conn.execute(
                        sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                    ).first()
            finally:
                engine.dispose()

        wait_until(gone, f"backend {pid} to go")

    @contextlib.contextmanager
    def killed_at_statement(self, matches: Callable[[str], bool]) -> Iterator[list[str]]:
        """Terminate the store's connection right before the first statement that
        ``matches`` (its SQL text) runs on it: after the pool's pre-ping, inside the
        call. Yields the statements that were cut off (one, once it happened)."""
        cut: list[str] = []

        def before(conn: sa.Connection, cursor: Any, statement: str, *_: Any, **__: Any) -> None:
            if cut or conn.engine.url.query.get("application_name") != self.application_name:
                return
            if not matches(statement):
                return
            cut.append(statement)
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            self.terminate_pid(int(dbapi.info.backend_pid))

        sa.event.listen(sa.Engine, "before_cursor_execute", before)
        try:
            yield cut
        finally:
            sa.event.remove(sa.Engine, "before_cursor_execute", before)


@pytest.fixture(scope="session")
def postgres_base() -> str:
    return find_server("PostgreSQL", "TOKENBROKER_TEST_POSTGRES_URL", POSTGRES_URLS)


@pytest.fixture
def postgres_target(postgres_base: str) -> Iterator[PostgresTarget]:
    """A PostgreSQL store URL with a table prefix and an application_name of its own."""
    tag = secrets.token_hex(4)
    prefix = f"tb_fault_{tag}_"
    app_name = f"tb-fault-{tag}"
    sep = "&" if "?" in postgres_base else "?"
    url = f"{postgres_base}{sep}table_prefix={prefix}&application_name={app_name}"
    yield PostgresTarget(postgres_base, url, prefix, app_name)
    drop_tables(postgres_base, prefix)


# --- a lease holder in another process --------------------------------------------------------

HOLDER = f"""
import sys
from tokenbroker import TokenBroker
url, store, instance, lease_ttl = sys.argv[1:5]
# one attempt of at most 1.5 s: a fetch can outlast neither the 2 s lease nor the kill
broker = TokenBroker(app_id={APP_ID!r}, app_secret={APP_SECRET!r}, store=store, api_url=url,
                     lease_ttl=float(lease_ttl), timeout=1.5, max_attempts=1)
broker.installations()  # connect (and create tables) before the start signal
print("ready", flush=True)
sys.stdin.readline()
broker.token(instance)
"""


@attrs.define
class LeaseHolder:
    """A process that takes a key's lease and then asks the emulator for a token."""

    process: subprocess.Popen[str]

    def go(self) -> None:
        go(self.process)

    def kill(self) -> None:
        kill([self.process])


@pytest.fixture
def start_holder() -> Iterator[Callable[[str, str, str, float], LeaseHolder]]:
    """Start lease holders; any still alive at the end are killed."""
    started: list[LeaseHolder] = []

    def start(api_url: str, store: str, instance: str, lease_ttl: float) -> LeaseHolder:
        holder = LeaseHolder(start_worker(HOLDER, [api_url, store, instance, str(lease_ttl)]))
        started.append(holder)
        return holder

    yield start
    kill(holder.process for holder in started)
