"""``ServiceKeys``: keys made once, kept as a hash, checked in constant time, revoked fleet-wide."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import pytest

from tokenbroker import ConfigError, ManualClock, store_from_url
from tokenbroker.core.protocols import Store
from tokenbroker.service.keys import KEY, KEYS_APP, ServiceKey, ServiceKeys, digest, name_of


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Store]:
    made = store_from_url("memory://" if request.param == "memory" else sqlite_url)
    yield made
    made.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_700_000_000.0)


@pytest.fixture
def keys(store: Store, clock: ManualClock) -> ServiceKeys:
    return ServiceKeys(store, clock=clock)


class TestMaking:
    def test_a_key_names_itself_and_carries_256_random_bits(self, keys: ServiceKeys) -> None:
        key = keys.add("billing", ["shop"], ["token"])
        match = KEY.fullmatch(key)
        assert match is not None
        assert match.group("name") == "billing"
        assert len(match.group("secret")) == 43  # 32 bytes, url-safe base64
        keys.revoke("billing")
        assert keys.add("billing", ["shop"]) != key  # a new secret each time

    def test_only_a_hash_is_stored(self, keys: ServiceKeys, store: Store) -> None:
        key = keys.add("billing", ["shop", "crm"], ["proxy"])
        record = store.get_installation(KEYS_APP, "billing")
        assert record is not None
        assert key not in json.dumps(record.to_json())
        assert record.extra["hash"] == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        assert record.extra["apps"] == ["shop", "crm"]
        assert record.extra["scopes"] == ["proxy"]
        assert record.extra["revoked_at"] is None
        assert record.extra["created_at"] == "2023-11-14T22:13:20+00:00"

    def test_a_name_in_use_is_refused_until_revoked(self, keys: ServiceKeys) -> None:
        keys.add("billing", ["shop"])
        with pytest.raises(ConfigError, match="exists; revoke it first"):
            keys.add("billing", ["shop"])
        keys.revoke("billing")
        assert keys.authenticate(keys.add("billing", ["crm"])) is not None

    @pytest.mark.parametrize(
        ("name", "apps", "scopes", "message"),
        [
            ("Billing", ["shop"], ["token"], "not a slug"),
            ("", ["shop"], ["token"], "not a slug"),
            ("a" * 64, ["shop"], ["token"], "not a slug"),
            ("billing", [], ["token"], "at least one app"),
            ("billing", ["Shop"], ["token"], "app name"),
            ("billing", ["shop"], [], "at least one scope"),
            ("billing", ["shop"], ["admin"], "unknown scope"),
        ],
    )
    def test_bad_input_is_a_one_line_config_error_and_stores_nothing(
        self,
        keys: ServiceKeys,
        store: Store,
        name: str,
        apps: list[str],
        scopes: list[str],
        message: str,
    ) -> None:
        with pytest.raises(ConfigError, match=message) as caught:
            keys.add(name, apps, scopes)
        assert "\n" not in str(caught.value)
        assert list(store.iter_installations(KEYS_APP, include_removed=True)) == []

    def test_list_shows_every_key_without_its_hash(self, keys: ServiceKeys) -> None:
        keys.add("b-key", ["shop"], ["token"])
        keys.add("a-key", ["shop", "crm"], ["proxy"])
        keys.revoke("b-key")
        listed = keys.list()
        assert [k.name for k in listed] == ["a-key", "b-key"]
        assert [k.active for k in listed] == [True, False]
        assert [k.name for k in keys.list(include_revoked=False)] == ["a-key"]
        shown = json.dumps([k.to_json() for k in listed])
        assert "sha256" not in shown
        assert "sha256" not in repr(listed[0])

    def test_revoking_an_unknown_name_is_a_config_error(self, keys: ServiceKeys) -> None:
        with pytest.raises(ConfigError, match="no service key named 'ghost'"):
            keys.revoke("ghost")


class TestChecking:
    def test_the_key_itself_is_accepted(self, keys: ServiceKeys) -> None:
        key = keys.add("billing", ["shop"], ["token"])
        found = keys.authenticate(key)
        assert isinstance(found, ServiceKey)
        assert (found.name, found.apps, found.scopes) == ("billing", ("shop",), ("token",))

    def test_anything_else_is_refused(self, keys: ServiceKeys) -> None:
        key = keys.add("billing", ["shop"], ["token"])
        secret = key.rpartition("_")[2]
        others = [
            "",
            "tbk_billing",
            key[:-1],
            key + "a",
            key.replace("tbk_billing_", "tbk_nobody_"),
            f"tbk_billing_{secret[::-1]}",
            key.upper(),
            f" {key}",
        ]
        assert [keys.authenticate(other) for other in others] == [None] * len(others)

    def test_token_implies_proxy_and_proxy_implies_nothing(self, keys: ServiceKeys) -> None:
        reader = keys.authenticate(keys.add("reader", ["shop"], ["token"]))
        caller = keys.authenticate(keys.add("caller", ["shop"], ["proxy"]))
        assert reader is not None
        assert caller is not None
        assert reader.allows("token")
        assert reader.allows("proxy")
        assert caller.allows("proxy")
        assert not caller.allows("token")
        assert reader.covers("shop")
        assert not reader.covers("crm")

    def test_a_revoked_key_is_refused_here_at_once_and_elsewhere_within_the_cache_ttl(
        self, store: Store, clock: ManualClock
    ) -> None:
        here = ServiceKeys(store, clock=clock)
        elsewhere = ServiceKeys(store, clock=clock, cache_ttl=2.0)
        key = here.add("billing", ["shop"])
        assert elsewhere.authenticate(key) is not None  # cached there now
        here.revoke("billing")
        assert here.authenticate(key) is None
        clock.advance(1.9)
        assert elsewhere.authenticate(key) is not None  # still within its cache
        clock.advance(0.2)
        assert elsewhere.authenticate(key) is None

    def test_an_unknown_name_is_cached_too_and_the_cache_is_bounded(
        self, store: Store, clock: ManualClock
    ) -> None:
        keys = ServiceKeys(store, clock=clock, cache_size=2)
        for name in ("one", "two", "three"):
            assert keys.authenticate(f"tbk_{name}_" + "a" * 43) is None
        assert len(keys._cache) == 2

    @pytest.mark.parametrize(
        "options",
        [{"cache_ttl": -1}, {"cache_ttl": 61}, {"cache_ttl": "2"}, {"cache_size": 0}],
        ids=["negative", "too-long", "text", "no-room"],
    )
    def test_options_are_checked(self, store: Store, options: dict[str, object]) -> None:
        with pytest.raises(ConfigError):
            ServiceKeys(store, **options)  # type: ignore[arg-type]


def test_the_name_is_read_from_the_key_and_the_digest_is_sha256() -> None:
    key = "tbk_my_app-key_" + "A" * 43
    assert name_of(key) == "my_app-key"
    assert name_of(key + " ") is None
    assert digest(key) == "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class _HeldRead:
    """A store whose next installation read answers what it saw, once released: a slow
    read that began before something changed."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reached = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def aget_installation(self, app_id: str, instance_id: str) -> object:
        snapshot = await self.inner.aget_installation(app_id, instance_id)
        if self.hold:
            self.hold = False
            self.reached.set()
            await self.release.wait()
        return snapshot


class TestRevocationRaces:
    async def test_a_read_that_began_before_a_revocation_does_not_cache_the_key_again(
        self,
    ) -> None:
        clock = ManualClock(start=1000.0)
        store = _HeldRead(store_from_url("memory://"))
        keys = ServiceKeys(store, clock=clock, cache_ttl=2.0)  # type: ignore[arg-type]
        key = keys.add("caller", ["default"], ["proxy"])
        store.hold = True
        in_flight = asyncio.create_task(keys.aauthenticate(key))
        await asyncio.wait_for(store.reached.wait(), 5)
        await keys.arevoke("caller")
        assert await keys.aauthenticate(key) is None
        store.release.set()
        await in_flight  # it began before the revocation: its answer may be stale
        for later in (0.5, 1.0, 1.9, 2.1):
            clock.set(1000.0 + later)
            assert await keys.aauthenticate(key) is None, later

    async def test_a_cached_answer_is_dated_from_when_its_read_began(self) -> None:
        clock = ManualClock(start=1000.0)
        shared = store_from_url("memory://")

        class Slow(_HeldRead):
            async def aget_installation(self, app_id: str, instance_id: str) -> object:
                found = await self.inner.aget_installation(app_id, instance_id)
                if self.hold:
                    clock.advance(1.5)  # this read takes 1.5 s
                return found

        slow = Slow(shared)
        here = ServiceKeys(slow, clock=clock, cache_ttl=2.0)  # type: ignore[arg-type]
        elsewhere = ServiceKeys(shared, clock=clock, cache_ttl=2.0)  # another process
        key = elsewhere.add("caller", ["default"], ["proxy"])
        slow.hold = True
        assert await here.aauthenticate(key) is not None  # read from 1000.0 to 1001.5
        slow.hold = False
        elsewhere.revoke("caller")
        clock.set(1002.1)  # 2.1 s after the read began, 0.6 s after it ended
        assert await here.aauthenticate(key) is None
