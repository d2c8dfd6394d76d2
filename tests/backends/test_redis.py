"""RedisStore against a real Redis server.

The conformance suite runs on it, sync and async (native redis.asyncio); the
rest proves what only Redis has to prove: token keys that expire with the
token, key prefixes and hash tags, processes racing for one lease, passwords
that never reach a message, damaged values, and Sentinel/Cluster URLs (parsed
and turned into clients here; real topologies run in test_redis_cluster.py and
test_redis_sentinel.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from redis.crc import key_slot

import tokenbroker.backends.redis.store as redis_store
from tokenbroker import store_from_url
from tokenbroker.backends.redis import RedisStore, parse_redis_url
from tokenbroker.core.errors import ConfigError, StorageError
from tokenbroker.core.installation import Installation, InstallationStatus
from tokenbroker.core.token import Token, TokenKey
from tokenbroker.testing.conformance import StoreConformance

from ..workers import run, worker_env
from .conftest import delete_redis_keys

pytestmark = pytest.mark.backend("redis")

PASSWORD = "Sup3r-s3cret-pw"
NOW = datetime(2031, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)


def make_token(key: TokenKey, obtained: datetime = NOW, **changes: Any) -> Token:
    values: dict[str, Any] = {
        "key": key,
        "access_token": f"tok-{uuid.uuid4().hex}",
        "token_type": "Bearer",
        "obtained_at": obtained,
        "expires_at": obtained + timedelta(hours=4),
        **changes,
    }
    return Token(**values)


def new_key() -> TokenKey:
    return TokenKey("wix", f"app-{uuid.uuid4().hex[:8]}", f"inst-{uuid.uuid4()}")


def with_query(url: str, **options: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{name}={value}" for name, value in options.items())


def with_userinfo(url: str, userinfo: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, ""))


def stored_json(store: RedisStore, name: str) -> Any:
    raw = store.client.get(name)
    assert isinstance(raw, bytes)
    return json.loads(raw)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="session")
def key_prefix(redis_url: str, session_prefix: str) -> str:
    """Under the session prefix, so the session's cleanup deletes it."""
    return f"{session_prefix}redis:"


@pytest.fixture
def own_prefix(key_prefix: str) -> str:
    """A prefix of its own, for a test that inspects every key it wrote."""
    return f"{key_prefix}{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def store(redis_url: str, key_prefix: str) -> AsyncIterator[RedisStore]:
    # An async fixture: it runs on the test's event loop, so aclose() closes the
    # async client there (and the sync one) before that loop goes away.
    store = RedisStore(redis_url, key_prefix=key_prefix)
    yield store
    await store.aclose()


# --- the suite ---------------------------------------------------------------------


class TestRedisConformance(StoreConformance):
    @pytest.fixture
    def store(self, store: RedisStore) -> RedisStore:
        return store  # the module's fixture, over the suite's placeholder

    def corrupt_token(self, store: Any, key: TokenKey) -> object:
        store.client.set(store.token_key(key), b'{"access_token": "half a recor')
        return None


# --- a private server on a unix socket, with a password ------------------------------

PRIVATE_PASSWORD = "pr1vate-s3cret"


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A redis-server of our own, on a unix socket only, that wants a password."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: no private server for the unix-socket tests")
    directory = tmp_path_factory.mktemp("redis")
    sock = directory / "redis.sock"
    server = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--requirepass",
            PRIVATE_PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = redis.Redis(unix_socket_path=str(sock), password=PRIVATE_PASSWORD)
        give_up = time.monotonic() + 30
        while True:  # polling the server's readiness, not waiting a guessed time
            try:
                client.ping()
                break
            except (redis.RedisError, OSError):
                if server.poll() is not None or time.monotonic() > give_up:
                    server.kill()
                    out = server.communicate()[0].decode(errors="replace")
                    pytest.fail(f"the private redis-server did not start:\n{out}")
                time.sleep(0.02)
        client.close()
        yield sock
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        assert server.stdout is not None
        server.stdout.close()


class TestUnixSocketConformance(StoreConformance):
    """The whole suite again, over a unix socket with a password in the URL."""

    @pytest.fixture
    async def store(self, private_redis: Path) -> AsyncIterator[RedisStore]:
        store = RedisStore(f"unix://:{PRIVATE_PASSWORD}@{private_redis}?db=1")
        yield store
        await store.aclose()

    def corrupt_token(self, store: Any, key: TokenKey) -> object:
        store.client.set(store.token_key(key), b"\x00garbage")
        return None


class TestUnixSocket:
    def test_a_password_in_the_query_of_a_unix_url_works_and_is_redacted(
        self, private_redis: Path
    ) -> None:
        store = RedisStore(f"unix://{private_redis}?db=2&password={PRIVATE_PASSWORD}")
        try:
            assert PRIVATE_PASSWORD not in store.url
            assert PRIVATE_PASSWORD not in repr(store)
            token = make_token(new_key())
            assert store.put_token(token) is True
            assert store.get_token(token.key) == token
        finally:
            store.close()

    @pytest.mark.parametrize("userinfo", [f":{PASSWORD}", f"default:{PASSWORD}"])
    def test_a_wrong_password_is_a_storage_error_without_the_password(
        self, private_redis: Path, userinfo: str
    ) -> None:
        store = RedisStore(f"unix://{userinfo}@{private_redis}")
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        user = userinfo.partition(":")[0]
        assert_clean_storage_error(caught.value, naming=f"unix://{user}:***@")
        assert "AuthenticationError" in str(caught.value)
        store.close()

    def test_a_missing_password_is_a_storage_error(self, private_redis: Path) -> None:
        store = RedisStore(f"unix://{private_redis}")
        with pytest.raises(StorageError, match="Authentication"):
            store.put_installation(Installation(app_id="app", instance_id="inst-1"))
        store.close()


# --- token keys expire --------------------------------------------------------------


class TestExpiry:
    def test_a_token_key_expires_when_the_token_does_plus_the_grace(
        self, redis_url: str, key_prefix: str
    ) -> None:
        store = RedisStore(redis_url, key_prefix=key_prefix, expiry_grace=30)
        try:
            now = datetime.now(UTC)
            token = make_token(new_key(), obtained=now, expires_at=now + timedelta(hours=1))
            store.put_token(token)
            name = store.token_key(token.key)
            expires_ms = -(
                -(token.expires_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
            )
            assert store.client.pexpiretime(name) == expires_ms + 30_000
            assert 0 < store.client.pttl(name) <= 3_630_000
        finally:
            store.close()

    def test_a_rewrite_moves_the_expiry_to_the_new_token(self, store: RedisStore) -> None:
        now = datetime.now(UTC)
        key = new_key()
        store.put_token(make_token(key, obtained=now, expires_at=now + timedelta(hours=1)))
        first = store.client.pexpiretime(store.token_key(key))
        later = now + timedelta(minutes=5)
        store.put_token(make_token(key, obtained=later, expires_at=later + timedelta(hours=1)))
        assert store.client.pexpiretime(store.token_key(key)) == first + 300_000

    def test_a_token_written_already_expired_stays_readable_for_the_grace(
        self, redis_url: str, key_prefix: str
    ) -> None:
        store = RedisStore(redis_url, key_prefix=key_prefix, expiry_grace=60)
        try:
            long_ago = datetime(2001, 1, 1, tzinfo=UTC)
            token = make_token(new_key(), obtained=long_ago)
            assert store.put_token(token) is True
            assert store.get_token(token.key) == token
            assert 0 < store.client.pttl(store.token_key(token.key)) <= 60_000
        finally:
            store.close()

    def test_a_lease_key_lives_for_the_ttl_and_the_lease_says_when_it_ends(
        self, store: RedisStore
    ) -> None:
        key = new_key()
        before = time.time()
        lease = store.acquire_lease(key, 12.5)
        after = time.time()
        assert lease is not None
        assert before + 12.5 <= lease.expires_at <= after + 12.5
        assert 0 < store.client.pttl(store.lease_key(key)) <= 12_500
        assert store.client.get(store.lease_key(key)) == lease.owner.encode()

    def test_a_negative_expiry_grace_is_a_config_error(self, redis_url: str) -> None:
        with pytest.raises(ConfigError, match="expiry_grace"):
            RedisStore(redis_url, expiry_grace=-1)


# --- keys -------------------------------------------------------------------------


class TestKeys:
    def test_every_key_lands_under_the_prefix_given_to_the_constructor(
        self, redis_url: str, own_prefix: str
    ) -> None:
        store = RedisStore(redis_url, key_prefix=own_prefix)
        try:
            token = make_token(new_key())
            store.put_token(token)
            assert store.acquire_lease(token.key, 30) is not None
            store.put_installation(Installation(app_id="app", instance_id="inst-1"))
            written = {k.decode() for k in store.client.scan_iter(match=f"{own_prefix}*")}
        finally:
            store.close()
        assert written == {
            store.token_key(token.key),
            store.lease_key(token.key),
            store.installation_key("app", "inst-1"),
            store.index_key("app"),
        }
        assert all(name.startswith(own_prefix) for name in written)

    def test_the_key_prefix_in_the_url_is_honoured_and_not_passed_to_redis_py(
        self, redis_url: str, own_prefix: str
    ) -> None:
        store = RedisStore(with_query(redis_url, key_prefix=own_prefix))
        try:
            assert store.key_prefix == own_prefix
            token = make_token(new_key())
            assert store.put_token(token) is True  # redis-py would choke on key_prefix
            assert store.client.exists(f"{own_prefix}{{wix:{token.key.app_id}:") == 0
            assert store.client.exists(store.token_key(token.key)) == 1
            assert store.token_key(token.key).startswith(own_prefix)
        finally:
            store.close()

    def test_stores_with_different_prefixes_do_not_see_each_other(
        self, redis_url: str, own_prefix: str
    ) -> None:
        one = RedisStore(redis_url, key_prefix=f"{own_prefix}one:")
        two = RedisStore(redis_url, key_prefix=f"{own_prefix}two:")
        try:
            token = make_token(new_key())
            one.put_token(token)
            assert two.get_token(token.key) is None
            assert two.acquire_lease(token.key, 30) is not None
            assert one.acquire_lease(token.key, 30) is not None
        finally:
            one.close()
            two.close()

    def test_the_default_prefix_is_tokenbroker(self, redis_url: str) -> None:
        store = RedisStore(redis_url)
        assert store.key_prefix == "tokenbroker:"
        assert store.token_key(TokenKey("wix", "app", "i")) == "tokenbroker:{wix:app:i}:token"

    def test_conflicting_prefixes_in_argument_and_url_are_a_config_error(
        self, redis_url: str
    ) -> None:
        with pytest.raises(ConfigError, match="conflicts"):
            RedisStore(with_query(redis_url, key_prefix="a:"), key_prefix="b:")

    @pytest.mark.parametrize("prefix", ["", "{app}:", "a}b", "with space:", "tab\t", "x" * 101])
    def test_an_unusable_prefix_is_a_config_error(self, redis_url: str, prefix: str) -> None:
        with pytest.raises(ConfigError, match="key_prefix"):
            RedisStore(redis_url, key_prefix=prefix)

    def test_ids_with_colons_and_braces_make_distinct_keys(self, store: RedisStore) -> None:
        app = f"app-{uuid.uuid4().hex[:8]}"
        keys = [
            TokenKey("wix:x", app, "inst"),
            TokenKey("wix", f"x:{app}", "inst"),
            TokenKey("wix", app, "x:inst"),
            TokenKey("wix", app + "}", "{inst"),
            TokenKey("wix", app, "%3Ainst"),
            TokenKey("wix", app, ":inst"),
        ]
        assert len({store.token_key(k) for k in keys}) == len(keys)
        tokens = [make_token(k) for k in keys]
        for token in tokens:
            store.put_token(token)
        assert [store.get_token(k) for k in keys] == tokens

    @pytest.mark.parametrize("app_id", ["app", "a{b}c", "}{", "ü-😀"])
    def test_a_token_and_its_lease_share_a_cluster_slot_as_do_an_app_and_its_index(
        self, store: RedisStore, app_id: str
    ) -> None:
        key = TokenKey("wix", app_id, "in{st}:1")
        assert key_slot(store.token_key(key).encode()) == key_slot(store.lease_key(key).encode())
        assert key_slot(store.installation_key(app_id, "in{st}:1").encode()) == key_slot(
            store.index_key(app_id).encode()
        )

    def test_tokens_of_one_app_spread_over_many_cluster_slots(self, store: RedisStore) -> None:
        slots = {
            key_slot(store.token_key(TokenKey("wix", "app", f"i-{n}")).encode()) for n in range(50)
        }
        assert len(slots) > 40


# --- installations ---------------------------------------------------------------------


class TestInstallations:
    def test_iteration_reads_in_batches_without_losing_any(
        self, store: RedisStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(redis_store, "_ITER_BATCH", 3)
        app = f"app-{uuid.uuid4()}"
        ids = [f"inst-{n:02d}" for n in range(10)]
        for instance_id in reversed(ids):
            store.put_installation(Installation(app_id=app, instance_id=instance_id))
        assert [i.instance_id for i in store.iter_installations(app)] == ids

    def test_iteration_follows_code_point_order_for_non_ascii_ids(self, store: RedisStore) -> None:
        app = f"app-{uuid.uuid4()}"
        ids = ["inst-é", "inst-z", "inst-😀", "inst-Z", "inst-ß", "inst-\uffff", "inst-"]
        for instance_id in ids:
            store.put_installation(Installation(app_id=app, instance_id=instance_id))
        assert [i.instance_id for i in store.iter_installations(app)] == sorted(ids)

    def test_a_removed_installation_stays_in_the_index(self, store: RedisStore) -> None:
        app = f"app-{uuid.uuid4()}"
        first = Installation(app_id=app, instance_id="inst-1", updated_at=NOW)
        removed = Installation(
            app_id=app,
            instance_id="inst-1",
            status=InstallationStatus.REMOVED,
            removed_at=NOW,
            updated_at=NOW + timedelta(seconds=1),
        )
        assert store.put_installation(first) is True
        assert store.put_installation(removed) is True
        assert list(store.iter_installations(app)) == []
        assert list(store.iter_installations(app, include_removed=True)) == [removed]
        assert store.client.zcard(store.index_key(app)) == 1

    def test_an_index_member_without_a_record_is_skipped(self, store: RedisStore) -> None:
        app = f"app-{uuid.uuid4()}"
        kept = Installation(app_id=app, instance_id="inst-b")
        store.put_installation(kept)
        store.client.zadd(store.index_key(app), {"inst-a": 0})
        assert list(store.iter_installations(app)) == [kept]

    def test_an_index_member_that_is_not_utf8_is_skipped_with_a_warning(
        self, store: RedisStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        app = f"app-{uuid.uuid4()}"
        kept = Installation(app_id=app, instance_id="inst-a")
        store.put_installation(kept)
        store.client.zadd(store.index_key(app), {b"inst-\xff": 0})
        with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
            assert list(store.iter_installations(app)) == [kept]
        assert any("non-UTF-8" in r.getMessage() for r in caplog.records)

    def test_installations_are_stored_as_json_with_microsecond_times(
        self, store: RedisStore
    ) -> None:
        app = f"app-{uuid.uuid4()}"
        inst = Installation(app_id=app, instance_id="inst-1", updated_at=NOW, extra={"ü": 1})
        store.put_installation(inst)
        assert stored_json(store, store.installation_key(app, "inst-1")) == {
            "app_id": app,
            "instance_id": "inst-1",
            "status": "installed",
            "installed_at": None,
            "removed_at": None,
            "setup_finished_at": None,
            "origin_instance_id": None,
            "updated_at": int(NOW.timestamp()) * 1_000_000 + 678_901,
            "extra": {"ü": 1},
        }


# --- damaged values -------------------------------------------------------------------


class TestCorruptedValues:
    @pytest.mark.parametrize(
        "damage",
        [
            b"not json",
            b"[1, 2]",
            b'{"access_token": "", "token_type": "Bearer", "obtained_at": 1, "expires_at": 2}',
            b'{"access_token": "x", "token_type": "Bearer", "obtained_at": -1, "expires_at": 2}',
            b'{"access_token": "x", "token_type": "B", "obtained_at": 1, "expires_at": "soon"}',
            # Lua reads obtained_at as later than any token; Python still refuses the record.
            b'{"access_token": "", "token_type": "B", "obtained_at": 9e15, "expires_at": 1}',
            b"\xff\xfe",
        ],
        ids=["text", "array", "empty-token", "negative-time", "text-time", "lua-newer", "bytes"],
    )
    def test_a_damaged_token_reads_as_missing_with_a_warning_and_any_put_repairs_it(
        self, store: RedisStore, caplog: pytest.LogCaptureFixture, damage: bytes
    ) -> None:
        key = new_key()
        store.client.set(store.token_key(key), damage)
        with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
            assert store.get_token(key) is None
        warnings = [r for r in caplog.records if r.name == "tokenbroker.store"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert store.delete_token(key, only="x") is False
        older = make_token(key, obtained=datetime(2001, 1, 1, tzinfo=UTC))
        assert store.put_token(older) is True
        assert store.get_token(key) == older

    def test_a_token_key_holding_another_type_reads_as_missing_and_put_replaces_it(
        self, store: RedisStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = new_key()
        store.client.rpush(store.token_key(key), "not", "a", "token")
        with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
            assert store.get_token(key) is None
        assert any(r.name == "tokenbroker.store" for r in caplog.records)
        token = make_token(key)
        assert store.put_token(token) is True
        assert store.get_token(key) == token

    @pytest.mark.parametrize(
        "damage",
        [
            lambda record: b"{not json",
            lambda record: b'"a string"',
            lambda record: json.dumps({**record, "app_id": "other"}).encode(),
            lambda record: json.dumps({**record, "status": "bogus"}).encode(),
            lambda record: json.dumps({**record, "extra": [1]}).encode(),
            lambda record: json.dumps({**record, "installed_at": -1}).encode(),
            lambda record: json.dumps({**record, "updated_at": "yesterday"}).encode(),
        ],
        ids=["text", "json-string", "other-app", "status", "extra", "negative-time", "text-time"],
    )
    def test_a_damaged_installation_reads_as_missing_and_is_skipped_by_iter(
        self,
        store: RedisStore,
        caplog: pytest.LogCaptureFixture,
        damage: Callable[[dict[str, Any]], bytes],
    ) -> None:
        app = f"app-{uuid.uuid4()}"
        good = Installation(app_id=app, instance_id="inst-a", updated_at=NOW)
        bad = Installation(app_id=app, instance_id="inst-b", updated_at=NOW)
        store.put_installation(good)
        store.put_installation(bad)
        name = store.installation_key(app, "inst-b")
        store.client.set(name, damage(stored_json(store, name)))
        with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
            assert store.get_installation(app, "inst-b") is None
            assert list(store.iter_installations(app, include_removed=True)) == [good]
        assert any(r.name == "tokenbroker.store" for r in caplog.records)
        # Any later record replaces the damaged one, whatever its updated_at.
        repaired = Installation(app_id=app, instance_id="inst-b", updated_at=NOW - timedelta(1))
        assert store.put_installation(repaired) is True
        assert store.get_installation(app, "inst-b") == repaired

    def test_an_installation_key_holding_another_type_is_replaced_by_a_put(
        self, store: RedisStore
    ) -> None:
        app = f"app-{uuid.uuid4()}"
        store.client.hset(store.installation_key(app, "inst-1"), "status", "installed")
        assert store.get_installation(app, "inst-1") is None
        inst = Installation(app_id=app, instance_id="inst-1")
        assert store.put_installation(inst) is True
        assert store.get_installation(app, "inst-1") == inst


class TestNonAscii:
    def test_delete_only_matches_a_non_ascii_access_token(self, store: RedisStore) -> None:
        token = make_token(new_key(), access_token='tök€n-😀-"quoted"\\')
        store.put_token(token)
        assert store.delete_token(token.key, only="tök€n-😀") is False
        assert store.delete_token(token.key, only=token.access_token) is True
        assert store.get_token(token.key) is None


class TestProtocols:
    async def test_resp3_replies_are_read_like_resp2_ones(
        self, redis_url: str, key_prefix: str
    ) -> None:
        store = RedisStore(with_query(redis_url, protocol="3", key_prefix=key_prefix))
        try:
            token = make_token(new_key())
            assert store.put_token(token) is True
            assert await store.aget_token(token.key) == token
            assert store.delete_token(token.key, only=token.access_token) is True
            lease = await store.aacquire_lease(token.key, 30)
            assert lease is not None
            assert store.release_lease(lease) is True
            inst = Installation(app_id=token.key.app_id, instance_id="inst-1")
            assert await store.aput_installation(inst) is True
            assert list(store.iter_installations(inst.app_id)) == [inst]
        finally:
            await store.aclose()


# --- async: native, one client per loop -------------------------------------------------


class TestAsync:
    async def test_async_twins_never_touch_the_sync_client(
        self, redis_url: str, key_prefix: str
    ) -> None:
        store = RedisStore(redis_url, key_prefix=key_prefix)

        def no_sync_client() -> Any:
            raise AssertionError("an async method used the sync client")

        store._clients.new_sync_port = no_sync_client  # type: ignore[method-assign]
        token = make_token(new_key())
        assert await store.aput_token(token) is True
        assert await store.aget_token(token.key) == token
        lease = await store.aacquire_lease(token.key, 30)
        assert lease is not None
        assert await store.arelease_lease(lease) is True
        assert await store.adelete_token(token.key, only=token.access_token) is True
        inst = Installation(app_id=token.key.app_id, instance_id="inst-1")
        assert await store.aput_installation(inst) is True
        assert await store.aget_installation(inst.app_id, "inst-1") == inst
        await store.aclose()

    def test_each_event_loop_gets_its_own_client(self, redis_url: str, key_prefix: str) -> None:
        store = RedisStore(redis_url, key_prefix=key_prefix)
        token = make_token(new_key())

        async def write_then_read() -> Token | None:
            try:
                await store.aput_token(token)
                return await store.aget_token(token.key)
            finally:
                await store.aclose()

        async def read_and_close() -> Token | None:
            try:
                return await store.aget_token(token.key)
            finally:
                await store.aclose()

        # A client bound to the first loop would fail on the second one.
        assert asyncio.run(write_then_read()) == token
        assert asyncio.run(read_and_close()) == token
        results: list[Token | None] = []
        threads = [
            threading.Thread(target=lambda: results.append(asyncio.run(read_and_close())))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [token, token, token]
        store.close()


# --- several processes ------------------------------------------------------------------

WORKER = """
import json, sys
from tokenbroker.backends.redis import RedisStore
from tokenbroker.core.token import TokenKey

url, prefix, key_id = sys.argv[1:4]
store = RedisStore(url, key_prefix=prefix)
key = TokenKey("wix", "app", key_id)
store.get_token(key)  # connected before the race: only the lease is contested
print("ready", flush=True)
sys.stdin.readline()  # the go signal: every worker starts together
try:
    result = store.acquire_lease(key, 60) is not None
    print(json.dumps({"ok": True, "result": result}), flush=True)
except Exception as error:
    print(json.dumps({"ok": False, "error": repr(error)}), flush=True)
finally:
    store.close()
"""


def run_workers(count: int, url: str, prefix: str) -> list[dict[str, Any]]:
    """Start ``count`` processes, let them all get ready, then release them at once."""
    key_id = f"inst-{uuid.uuid4()}"
    return run(WORKER, [[url, prefix, key_id] for _ in range(count)])


class TestSeveralProcesses:
    def test_processes_racing_for_one_lease_have_exactly_one_winner(
        self, redis_url: str, key_prefix: str
    ) -> None:
        results = run_workers(4, redis_url, key_prefix)
        assert all(r["ok"] for r in results), results
        assert sorted(r["result"] for r in results) == [False, False, False, True]


# --- errors -------------------------------------------------------------------------------


def assert_clean_storage_error(error: StorageError, *, naming: str) -> None:
    message = str(error)
    assert PASSWORD not in message
    assert "\n" not in message
    assert naming in message
    assert error.__suppress_context__  # raised "from None": no driver traceback attached


class TestErrors:
    def test_an_unreachable_server_is_one_clear_storage_error_without_the_password(self) -> None:
        port = free_port()
        store = RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        assert_clean_storage_error(caught.value, naming=f"redis://:***@127.0.0.1:{port}/0")
        assert "connect" in str(caught.value).lower()
        store.close()

    async def test_an_unreachable_server_fails_the_async_twins_the_same_way(self) -> None:
        port = free_port()
        store = RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
        with pytest.raises(StorageError) as caught:
            await store.aput_token(make_token(new_key()))
        assert_clean_storage_error(caught.value, naming=f"127.0.0.1:{port}")
        await store.aclose()

    def test_a_wrong_password_is_a_storage_error_without_the_password(self, redis_url: str) -> None:
        # A user that does not exist: refused whether or not the server has a password
        # (redis-py lets a password-only AUTH pass on a server that has none).
        store = RedisStore(with_userinfo(redis_url, f"tbtest-nobody:{PASSWORD}"))
        assert PASSWORD not in repr(store)
        with pytest.raises(StorageError) as caught:
            store.acquire_lease(new_key(), 30)
        assert_clean_storage_error(caught.value, naming="tbtest-nobody:***@")
        store.close()

    def test_a_password_in_the_query_is_redacted_too(self, redis_url: str) -> None:
        store = RedisStore(with_query(redis_url, username="tbtest-nobody", password=PASSWORD))
        assert PASSWORD not in store.url
        assert PASSWORD not in repr(store)
        assert "password=***" in store.url
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        assert_clean_storage_error(caught.value, naming="password=***")
        store.close()

    def test_iter_installations_fails_at_the_call_not_later(self) -> None:
        store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(StorageError, match="iter_installations"):
            store.iter_installations("app")
        store.close()

    def test_missing_redis_py_is_a_config_error_saying_what_to_install(self) -> None:
        code = """
import sys
sys.modules["redis"] = None  # as if redis-py were not installed
from tokenbroker import store_from_url
from tokenbroker.core.errors import ConfigError
from tokenbroker.plugins import backends, plugin_manager
import tokenbroker.plugins.redis_backend as plugin
if not plugin_manager().has_plugin("redis"):
    plugin_manager().register(plugin, name="redis")
    backends.reset()
try:
    store_from_url("redis://127.0.0.1:6379/0")
except ConfigError as error:
    print(error)
"""
        done = subprocess.run(
            [sys.executable, "-c", code],
            check=False,
            capture_output=True,
            text=True,
            env=worker_env(),
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert "pip install 'tokenbroker[redis]'" in done.stdout


# --- URLs ---------------------------------------------------------------------------------


class TestStandaloneUrls:
    def test_a_redis_url_goes_to_redis_py_without_our_options(self) -> None:
        target = parse_redis_url("redis://u:pw@h:6380/3?key_prefix=app:&socket_timeout=0.5")
        assert target.kind == "standalone"
        assert target.redis_url == "redis://u:pw@h:6380/3?socket_timeout=0.5"
        assert (target.db, target.username, target.password) == (3, "u", "pw")
        assert target.key_prefix == "app:"
        assert target.options == {"socket_timeout": 0.5}

    def test_a_unix_socket_url_keeps_its_path_and_db(self) -> None:
        target = parse_redis_url("unix:///run/redis.sock?db=2")
        assert target.kind == "standalone"
        assert target.redis_url == "unix:///run/redis.sock?db=2"
        assert target.db == 2

    def test_rediss_allows_tls_options(self) -> None:
        target = parse_redis_url("rediss://h/0?ssl_cert_reqs=none&ssl_check_hostname=false")
        assert target.ssl is True
        assert target.options == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}

    @pytest.mark.parametrize(
        ("url", "match"),
        [
            ("redis://h/0?bogus=1", "unknown Redis URL option 'bogus'"),
            ("redis://h/0?ssl_ca_certs=/ca.pem", "rediss"),
            ("redis://h/0?socket_timeout=soon", "invalid value"),
            ("redis://h/0?db=1&db=2", "more than once"),
            ("redis://h/zero", "database number"),
            ("redis://h:port/0", "port"),
            ("unix://", "socket path"),
            ("http://h/0", "not a Redis URL"),
            ("redis://h/0#frag", "fragment"),
        ],
    )
    def test_a_malformed_url_is_a_config_error(self, url: str, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            parse_redis_url(url)

    def test_a_config_error_about_a_url_hides_its_password(self) -> None:
        with pytest.raises(ConfigError) as caught:
            parse_redis_url(f"redis://:{PASSWORD}@h/0?bogus=1")
        assert PASSWORD not in str(caught.value)


class TestSentinelAndClusterUrls:
    """Parsing and client construction only; real topologies: test_redis_cluster.py,
    test_redis_sentinel.py."""

    def test_a_sentinel_url_names_the_sentinels_the_service_and_the_db(self) -> None:
        target = parse_redis_url("redis+sentinel://:pw@s1:26379,s2:26380/mymaster/2")
        assert target.kind == "sentinel"
        assert target.nodes == (("s1", 26379), ("s2", 26380))
        assert target.service_name == "mymaster"
        assert (target.db, target.username, target.password, target.ssl) == (2, None, "pw", False)

    def test_sentinel_defaults_port_26379_and_db_0_and_reads_ipv6_hosts(self) -> None:
        target = parse_redis_url(
            "redis+sentinel://s1,[::1]:26390/my%20master?socket_timeout=0.5&key_prefix=x:"
        )
        assert target.nodes == (("s1", 26379), ("::1", 26390))
        assert target.service_name == "my master"
        assert target.db == 0
        assert target.options == {"socket_timeout": 0.5}
        assert target.key_prefix == "x:"

    @pytest.mark.parametrize(
        "url", ["rediss+sentinel://s1/m", "redis+sentinel://s1/m?ssl=true", "rediss+cluster://n"]
    )
    def test_tls_is_asked_for_by_scheme_or_option(self, url: str) -> None:
        assert parse_redis_url(url).ssl is True

    def test_a_cluster_url_names_the_startup_nodes(self) -> None:
        target = parse_redis_url("redis+cluster://user:pw@n1:7000,n2:7001,n3?client_name=tb")
        assert target.kind == "cluster"
        assert target.nodes == (("n1", 7000), ("n2", 7001), ("n3", 6379))
        assert (target.username, target.password) == ("user", "pw")
        assert target.options == {"client_name": "tb"}

    @pytest.mark.parametrize(
        ("url", "match"),
        [
            ("redis+sentinel://s1:26379", "names the service"),
            ("redis+sentinel://s1/m/1/2", "names the service"),
            ("redis+sentinel://s1/m/one", "not a number"),
            ("redis+sentinel://s1:port/m", "not a number"),
            ("redis+sentinel://s1,,s2/m", "host is missing"),
            ("redis+sentinel://[::1/m", "cannot read"),
            ("redis+sentinel://[::1]x/m", "cannot read host"),
            ("redis+cluster://n1/1", "only database 0"),
            ("redis+cluster://n1?db=1", "only database 0"),
            (f"redis+cluster://:{PASSWORD}@n1:99999", "out of range"),
        ],
    )
    def test_a_malformed_sentinel_or_cluster_url_is_a_config_error(
        self, url: str, match: str
    ) -> None:
        with pytest.raises(ConfigError, match=match) as caught:
            parse_redis_url(url)
        assert PASSWORD not in str(caught.value)

    def test_a_sentinel_store_is_built_without_io_and_fails_cleanly_when_none_answers(
        self,
    ) -> None:
        port = free_port()
        store = RedisStore(f"redis+sentinel://:{PASSWORD}@127.0.0.1:{port}/mymaster/1")
        assert repr(store) == f"RedisStore(url='redis+sentinel://:***@127.0.0.1:{port}/mymaster/1')"
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        assert_clean_storage_error(caught.value, naming="redis+sentinel://:***@")
        store.close()

    async def test_an_async_sentinel_store_fails_cleanly_when_none_answers(self) -> None:
        store = RedisStore(f"redis+sentinel://:{PASSWORD}@127.0.0.1:{free_port()}/mymaster")
        with pytest.raises(StorageError) as caught:
            await store.aget_token(new_key())
        assert_clean_storage_error(caught.value, naming="redis+sentinel://:***@")
        await store.aclose()

    def test_a_cluster_store_on_a_server_without_cluster_mode_fails_cleanly(
        self, redis_url: str
    ) -> None:
        host = urlsplit(redis_url).netloc.rpartition("@")[2]
        store = RedisStore(f"redis+cluster://:{PASSWORD}@{host}")
        with pytest.raises(StorageError) as caught:
            store.get_token(new_key())
        assert_clean_storage_error(caught.value, naming="redis+cluster://:***@")
        store.close()

    async def test_an_async_cluster_store_on_a_server_without_cluster_mode_fails_cleanly(
        self, redis_url: str
    ) -> None:
        host = urlsplit(redis_url).netloc.rpartition("@")[2]
        store = RedisStore(f"redis+cluster://{host}")
        with pytest.raises(StorageError) as caught:
            await store.aget_token(new_key())
        assert_clean_storage_error(caught.value, naming="redis+cluster://")
        await store.aclose()


# --- the plugin ---------------------------------------------------------------------------


@pytest.fixture
def redis_plugin() -> Iterator[None]:
    """The Redis plugin registered (the manager may already list it as built in)."""
    import tokenbroker.plugins.redis_backend as plugin
    from tokenbroker.plugins import backends, plugin_manager

    manager = plugin_manager()
    added = not manager.has_plugin("redis")
    if added:
        manager.register(plugin, name="redis")
        backends.reset()
    yield
    if added:
        manager.unregister(name="redis")
        backends.reset()


class TestPlugin:
    def test_the_plugin_registers_every_redis_scheme(self, redis_plugin: None) -> None:
        from tokenbroker.plugins import backends

        entries = backends.entries()
        for scheme in ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster"):
            assert entries[scheme].plugin == "redis"

    def test_store_from_url_builds_a_redis_store(
        self, redis_plugin: None, redis_url: str, own_prefix: str
    ) -> None:
        store = store_from_url(with_query(redis_url, key_prefix=own_prefix))
        try:
            assert isinstance(store, RedisStore)
            token = make_token(new_key())
            assert store.put_token(token) is True
            assert store.get_token(token.key) == token
        finally:
            store.close()
        delete_redis_keys(redis_url, own_prefix)

    @pytest.mark.parametrize(
        "url", ["redis+sentinel://s1:26379/mymaster", "redis+cluster://n1:7000,n2:7001"]
    )
    def test_store_from_url_builds_sentinel_and_cluster_stores_without_io(
        self, redis_plugin: None, url: str
    ) -> None:
        store = store_from_url(url)
        assert isinstance(store, RedisStore)
        assert store.url == url
        store.close()
