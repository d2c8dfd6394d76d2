"""A store that answers but cannot be used as configured is an error at once.

Each misconfiguration (an unknown PostgreSQL role or database, a wrong MariaDB
password, an unknown MariaDB user or database, a Redis db index out of range,
a Redis AUTH failure, a read-only Redis replica, a SQLite file that is not a
database, a directory, a read-only file or directory, a read-only URL) makes
``broker.token()`` raise a plain ``StorageError`` that names the problem: never
``StoreUnavailable``, never degraded mode, and Wix is never asked for a token.
``tokenbroker token`` exits 1 with that one line.

An outage is the other kind: a one-shot command must fail on it too, instead
of fetching around the store (``TestOneShotCommandOnAnOutage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tokenbroker import StorageError, StoreUnavailable, TokenBroker
from tokenbroker.backends.sql import SQLStore
from tokenbroker.cli import main
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.servers import MYSQL_URLS

from ..backends.conftest import find_redis, find_server, server_unavailable
from ..polling import wait_until
from .conftest import APP_ID, APP_SECRET, HookRecorder, RedisServer, free_port

INSTANCE = "inst-1"  # installed in the emulator
PASSWORD = f"pw-{secrets.token_hex(6)}"  # must never show in a message

# The words each message uses for its problem (the failure model's vocabulary).
AUTHENTICATION = "authentication failed"
UNKNOWN_DATABASE = "unknown database"
DB_INDEX = "db index out of range"
READ_ONLY = "read-only"
NOT_A_DATABASE = "not a SQLite database"
DIRECTORY = "is a directory"


@attrs.frozen
class Misconfigured:
    """A store URL that cannot be used, and the words its error must say."""

    url: str
    problem: str


Build = Callable[[pytest.FixtureRequest, Path], Misconfigured]


# --- PostgreSQL and MariaDB --------------------------------------------------------------
# Trust authentication on loopback accepts any password for an existing
# PostgreSQL role, so a role and a database that do not exist stand in for it.


def _postgres(request: pytest.FixtureRequest) -> sa.URL:
    return sa.make_url(request.getfixturevalue("postgres_base"))


def _mysql(_: pytest.FixtureRequest) -> sa.URL:
    return sa.make_url(find_server("MariaDB/MySQL", "TOKENBROKER_TEST_MYSQL_URL", MYSQL_URLS))


def _render(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


def postgres_unknown_role(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    url = _postgres(request).set(username=f"tb_nobody_{secrets.token_hex(4)}", password=PASSWORD)
    return Misconfigured(_render(url), AUTHENTICATION)


def postgres_unknown_database(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    url = _postgres(request).set(database=f"tb_nodb_{secrets.token_hex(4)}", password=PASSWORD)
    return Misconfigured(_render(url), UNKNOWN_DATABASE)


def mysql_wrong_password(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    return Misconfigured(_render(_mysql(request).set(password=PASSWORD)), AUTHENTICATION)


def mysql_unknown_user(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    url = _mysql(request).set(username=f"tb_nobody_{secrets.token_hex(4)}", password=PASSWORD)
    return Misconfigured(_render(url), AUTHENTICATION)


def mysql_unknown_database(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    url = _mysql(request).set(database=f"tb_nodb_{secrets.token_hex(4)}")
    return Misconfigured(_render(url), UNKNOWN_DATABASE)


# --- Redis -------------------------------------------------------------------------------


class PrivateRedis:
    """A ``redis-server`` of our own with extra arguments; stopped by its PID."""

    def __init__(self, workdir: Path, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            server_unavailable("redis-server is not on PATH")
        self.process: subprocess.Popen[bytes] | None = None
        for _ in range(3):  # another process may take the free port before we bind it
            self.port = free_port()
            log = (workdir / f"redis-{self.port}.log").open("wb")
            with log:
                self.process = subprocess.Popen(
                    [
                        *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                        *("--save", "", "--appendonly", "no", "--dir", str(workdir), *args),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            if self._wait_up():
                return
        pytest.fail("could not start a private redis-server on a free port")

    def _wait_up(self) -> bool:
        process = self.process
        assert process is not None

        def up() -> bool:
            if process.poll() is not None:
                return True  # exited: the port was taken
            return self._answers()

        wait_until(up, f"redis-server on port {self.port} to answer")
        return process.poll() is None

    def _answers(self) -> bool:
        # A bare PING: redis-py would retry an authentication error with backoff.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """Start private redis-servers with extra arguments; each is stopped at the end."""
    started: list[PrivateRedis] = []

    def start(*args: str) -> PrivateRedis:
        server = PrivateRedis(tmp_path, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _start_redis(request: pytest.FixtureRequest, *args: str) -> PrivateRedis:
    start: Callable[..., PrivateRedis] = request.getfixturevalue("private_redis")
    return start(*args)


def redis_db_index_out_of_range(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    # The shared server: SELECT 99999 is refused before any key is touched.
    base = sa.make_url(find_redis())
    return Misconfigured(f"redis://{base.host}:{base.port or 6379}/99999", DB_INDEX)


def redis_no_password(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    server = _start_redis(request, "--requirepass", PASSWORD)
    return Misconfigured(f"redis://127.0.0.1:{server.port}/0", AUTHENTICATION)


def redis_wrong_password(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    server = _start_redis(request, "--requirepass", f"not-{PASSWORD}")
    return Misconfigured(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", AUTHENTICATION)


def redis_read_only_replica(request: pytest.FixtureRequest, _: Path) -> Misconfigured:
    # A replica of a primary that is not there: it serves reads, refuses writes.
    server = _start_redis(request, "--replicaof", "127.0.0.1", str(free_port()))
    return Misconfigured(f"redis://127.0.0.1:{server.port}/0", READ_ONLY)


# --- SQLite ------------------------------------------------------------------------------


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _real_database(path: Path) -> Path:
    store = SQLStore(_sqlite_url(path))
    store.upgrade()
    store.close()
    return path


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable for this process, root included, for the block.

    Root ignores file modes, so as root the file is made immutable
    (``chattr +i``), which the kernel enforces for root too.
    """
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        undo: Callable[[], object] = lambda: path.chmod(mode)  # noqa: E731
    else:
        chattr = shutil.which("chattr")
        if chattr is None:
            pytest.fail("running as root without chattr: cannot make a file read-only for root")
        done = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"chattr +i {path} failed: {done.stderr.decode().strip()}")
        undo = lambda: subprocess.run([chattr, "-i", str(path)], check=True)  # noqa: E731
    try:
        assert not os.access(path, os.W_OK), f"{path} is still writable"
        yield
    finally:
        undo()


def sqlite_garbage(_: pytest.FixtureRequest, tmp_path: Path) -> Misconfigured:
    path = tmp_path / "garbage.db"
    path.write_bytes(secrets.token_bytes(8192))
    return Misconfigured(_sqlite_url(path), NOT_A_DATABASE)


def sqlite_directory(_: pytest.FixtureRequest, tmp_path: Path) -> Misconfigured:
    path = tmp_path / "a-directory"
    path.mkdir()
    return Misconfigured(_sqlite_url(path), DIRECTORY)


def sqlite_read_only_file(request: pytest.FixtureRequest, tmp_path: Path) -> Misconfigured:
    path = _real_database(tmp_path / "tokens.db")
    stack: contextlib.ExitStack = request.getfixturevalue("exit_stack")
    stack.enter_context(read_only(path))
    return Misconfigured(_sqlite_url(path), READ_ONLY)


def sqlite_read_only_directory(request: pytest.FixtureRequest, tmp_path: Path) -> Misconfigured:
    directory = tmp_path / "locked"
    directory.mkdir()
    stack: contextlib.ExitStack = request.getfixturevalue("exit_stack")
    stack.enter_context(read_only(directory))
    return Misconfigured(_sqlite_url(directory / "tokens.db"), READ_ONLY)


def sqlite_read_only_url(_: pytest.FixtureRequest, tmp_path: Path) -> Misconfigured:
    path = _real_database(tmp_path / "tokens.db")
    return Misconfigured(f"sqlite:///file:{path}?mode=ro&uri=true", READ_ONLY)


CASES: dict[str, tuple[Build, str | None]] = {
    "postgres-unknown-role": (postgres_unknown_role, "postgres"),
    "postgres-unknown-database": (postgres_unknown_database, "postgres"),
    "mysql-wrong-password": (mysql_wrong_password, "mysql"),
    "mysql-unknown-user": (mysql_unknown_user, "mysql"),
    "mysql-unknown-database": (mysql_unknown_database, "mysql"),
    "redis-db-index-out-of-range": (redis_db_index_out_of_range, "redis"),
    "redis-no-password": (redis_no_password, "redis"),
    "redis-wrong-password": (redis_wrong_password, "redis"),
    "redis-read-only-replica": (redis_read_only_replica, "redis"),
    "sqlite-not-a-database": (sqlite_garbage, None),
    "sqlite-directory": (sqlite_directory, None),
    "sqlite-read-only-file": (sqlite_read_only_file, None),
    "sqlite-read-only-directory": (sqlite_read_only_directory, None),
    "sqlite-read-only-url": (sqlite_read_only_url, None),
}


def _case(name: str) -> object:
    backend = CASES[name][1]
    marks = [pytest.mark.backend(backend)] if backend else []
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture
def exit_stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture(params=[_case(name) for name in CASES])
def misconfigured(request: pytest.FixtureRequest, tmp_path: Path) -> Misconfigured:
    build, _ = CASES[request.param]
    return build(request, tmp_path)


@pytest.fixture
def broker(wix_emulator: WixEmulator, misconfigured: Misconfigured) -> Iterator[TokenBroker]:
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=misconfigured.url, api_url=wix_emulator.url
    ) as b:
        yield b


def assert_names_the_problem(error: StorageError, case: Misconfigured) -> None:
    message = str(error)
    assert not isinstance(error, StoreUnavailable), (
        f"a misconfiguration taken for an outage: {error}"
    )
    assert case.problem in message, f"{message!r} does not say {case.problem!r}"
    assert PASSWORD not in message
    assert "\n" not in message, "one line"


def assert_never_degraded(broker: TokenBroker, hooks: HookRecorder, emulator: WixEmulator) -> None:
    assert broker.engine.degraded is None
    assert hooks.degraded == []
    assert emulator.token_requests == 0, "Wix was asked although the store cannot be used"


class TestAMisconfiguredStoreFailsAtOnce:
    def test_token_raises_a_storage_error_naming_the_problem_without_asking_wix(
        self,
        broker: TokenBroker,
        misconfigured: Misconfigured,
        hooks: HookRecorder,
        wix_emulator: WixEmulator,
    ) -> None:
        with pytest.raises(StorageError) as caught:
            broker.token(INSTANCE)
        assert_names_the_problem(caught.value, misconfigured)
        assert_never_degraded(broker, hooks, wix_emulator)

    def test_atoken_raises_a_storage_error_naming_the_problem_without_asking_wix(
        self,
        broker: TokenBroker,
        misconfigured: Misconfigured,
        hooks: HookRecorder,
        wix_emulator: WixEmulator,
    ) -> None:
        async def attempt() -> None:
            try:
                await broker.atoken(INSTANCE)
            finally:
                await broker.aclose()

        with pytest.raises(StorageError) as caught:
            asyncio.run(attempt())
        assert_names_the_problem(caught.value, misconfigured)
        assert_never_degraded(broker, hooks, wix_emulator)

    def test_asking_again_raises_again_rather_than_degrading(
        self,
        broker: TokenBroker,
        misconfigured: Misconfigured,
        hooks: HookRecorder,
        wix_emulator: WixEmulator,
    ) -> None:
        for _ in range(3):
            with pytest.raises(StorageError) as caught:
                broker.token(INSTANCE)
            assert_names_the_problem(caught.value, misconfigured)
        assert_never_degraded(broker, hooks, wix_emulator)


def cli_env(emulator: WixEmulator, store: str) -> dict[str, str | None]:
    return {
        "TOKENBROKER_APP_ID": APP_ID,
        "TOKENBROKER_APP_SECRET": APP_SECRET,
        "TOKENBROKER_APP_SECRET_FILE": None,
        "TOKENBROKER_STORE": store,
        "TOKENBROKER_API_URL": emulator.url,
        "TOKENBROKER_ENCRYPTION_KEY": None,
    }


class TestTheTokenCommandOnAMisconfiguredStore:
    def test_it_exits_1_with_one_line_naming_the_problem(
        self, misconfigured: Misconfigured, wix_emulator: WixEmulator
    ) -> None:
        result = CliRunner().invoke(
            main, ["token", INSTANCE], env=cli_env(wix_emulator, misconfigured.url)
        )
        assert result.exit_code == 1, result.output
        assert result.stdout == "", "no token was printed"
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("tokenbroker: error: ")
        assert misconfigured.problem in lines[0]
        assert PASSWORD not in result.stderr
        assert wix_emulator.token_requests == 0


class TestOneShotCommandOnAnOutage:
    @pytest.mark.backend("redis")
    def test_token_exits_1_when_the_store_is_down_instead_of_fetching_around_it(
        self, redis_server: RedisServer, wix_emulator: WixEmulator
    ) -> None:
        url = redis_server.store_url()
        redis_server.kill()
        result = CliRunner().invoke(main, ["token", INSTANCE], env=cli_env(wix_emulator, url))
        assert result.exit_code == 1, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert "store unreachable" in lines[0]
        assert wix_emulator.token_requests == 0, "the command fetched around the store"
