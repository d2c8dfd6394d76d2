"""Encryption at rest: tokens reach no backend in plaintext."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from tokenbroker import ConfigError, Token, TokenBroker, TokenKey
from tokenbroker.backends.encrypted import EncryptedStore
from tokenbroker.backends.memory import MemoryStore
from tokenbroker.backends.sql import SQLStore
from tokenbroker.testing.conformance import StoreConformance
from tokenbroker.testing.emulator import WixEmulator

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def make_token(
    key: TokenKey, access_token: str = "OAUTH2.plaintext-secret-token", *, later: bool = False
) -> Token:
    obtained = NOW + timedelta(seconds=1) if later else NOW
    return Token(
        key=key,
        access_token=access_token,
        token_type="Bearer",
        expires_at=obtained + timedelta(hours=4),
        obtained_at=obtained,
    )


class EncryptedConformance(StoreConformance):
    def corrupt_token(self, store: EncryptedStore, key: TokenKey) -> object:
        """Replace the ciphertext with one no key opens."""
        stored = store.inner.get_token(key)
        assert stored is not None
        store.inner.delete_token(key)
        store.inner.put_token(attrs.evolve(stored, access_token="fernet:garbage"))
        return None


class TestEncryptedMemoryConformance(EncryptedConformance):
    @pytest.fixture
    def store(self) -> EncryptedStore:
        return EncryptedStore(MemoryStore(), KEY_A)


class TestEncryptedSQLiteConformance(EncryptedConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[EncryptedStore]:
        store = EncryptedStore(SQLStore(f"sqlite:///{tmp_path / 'enc.db'}"), [KEY_A, KEY_B])
        yield store
        store.close()


def raw_token_columns(url: str, prefix: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT access_token FROM {prefix}tokens")).all()
    finally:
        engine.dispose()
    return [row[0] for row in rows]


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def sql_url_and_prefix(
    request: pytest.FixtureRequest, tmp_path: Path, unique_prefix: str
) -> tuple[str, str]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'raw.db'}", unique_prefix
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url, unique_prefix


class TestNoPlaintextAtRest:
    def test_sql_rows_hold_only_ciphertext(self, sql_url_and_prefix: tuple[str, str]) -> None:
        url, prefix = sql_url_and_prefix
        store = EncryptedStore(SQLStore(url, table_prefix=prefix), KEY_A)
        key = TokenKey("wix", "app", "inst-raw")
        store.put_token(make_token(key))
        try:
            rows = raw_token_columns(url, prefix)
        finally:
            store.close()
        assert rows
        assert all("plaintext-secret-token" not in row for row in rows)
        assert all(row.startswith("fernet:") for row in rows)

    def test_a_broker_with_a_key_from_env_stores_ciphertext(
        self, wix_emulator: WixEmulator, tmp_path: Path
    ) -> None:
        url = f"sqlite:///{tmp_path / 'b.db'}"
        env = {
            "TOKENBROKER_APP_ID": "test-app-id",
            "TOKENBROKER_APP_SECRET": "test-app-secret",
            "TOKENBROKER_STORE": url,
            "TOKENBROKER_API_URL": wix_emulator.url,
            "TOKENBROKER_ENCRYPTION_KEY": f"{KEY_A}, {KEY_B}",
        }
        with TokenBroker.from_env(env) as broker:
            token = broker.token("inst-1")
        (row,) = raw_token_columns(url, "tokenbroker_")
        assert token.access_token not in row
        with TokenBroker.from_env(env) as again:  # another process reads it back
            assert again.token("inst-1").access_token == token.access_token
        assert wix_emulator.token_requests == 1


class TestKeys:
    def test_an_older_key_still_decrypts_after_rotation(self) -> None:
        inner = MemoryStore()
        key = TokenKey("wix", "app", "inst")
        EncryptedStore(inner, KEY_A).put_token(make_token(key))
        rotated = EncryptedStore(inner, [KEY_B, KEY_A])
        assert rotated.get_token(key) == make_token(key)

    def test_keys_that_open_none_of_the_store_s_tokens_are_refused(self) -> None:
        inner = MemoryStore()
        key = TokenKey("wix", "app", "inst")
        EncryptedStore(inner, KEY_A).put_token(make_token(key))
        with pytest.raises(ConfigError, match="TOKENBROKER_ENCRYPTION_KEY: none of its keys"):
            EncryptedStore(inner, KEY_B).get_token(key)

    def test_a_damaged_token_reads_as_missing_with_one_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        inner = MemoryStore()
        key = TokenKey("wix", "app", "inst")
        store = EncryptedStore(inner, KEY_A)
        store.put_token(make_token(key))
        inner.delete_token(key)
        inner.put_token(make_token(key, "fernet:damaged"))
        with caplog.at_level(logging.WARNING, logger="tokenbroker.store"):
            assert store.get_token(key) is None
            assert store.put_token(make_token(key, "tok-new")) is True  # replaces it
        assert caplog.text.count("cannot be decrypted") == 1
        assert "plaintext-secret-token" not in caplog.text
        assert store.get_token(key) == make_token(key, "tok-new")

    def test_rotating_keys_moves_the_store_to_the_new_key(self) -> None:
        inner = MemoryStore()
        key = TokenKey("wix", "app", "inst")
        EncryptedStore(inner, KEY_A).put_token(make_token(key, "tok-a"))
        rotating = EncryptedStore(inner, f"{KEY_B},{KEY_A}")
        assert rotating.get_token(key) == make_token(key, "tok-a")
        rotating.put_token(make_token(key, "tok-b", later=True))
        assert EncryptedStore(inner, KEY_B).get_token(key) == make_token(key, "tok-b", later=True)
        with pytest.raises(ConfigError, match="none of its keys"):  # the retired key alone
            EncryptedStore(inner, KEY_A).get_token(key)

    def test_a_plaintext_token_from_before_encryption_reads_as_missing(self) -> None:
        inner = MemoryStore()
        key = TokenKey("wix", "app", "inst")
        inner.put_token(make_token(key))
        assert EncryptedStore(inner, KEY_A).get_token(key) is None

    def test_compare_and_delete_compares_plaintexts(self) -> None:
        store = EncryptedStore(MemoryStore(), KEY_A)
        key = TokenKey("wix", "app", "inst")
        store.put_token(make_token(key, "tok-1"))
        assert store.delete_token(key, only="tok-other") is False
        assert store.delete_token(key, only="tok-1") is True
        assert store.get_token(key) is None

    @pytest.mark.parametrize("bad", ["", " , ", "not-a-key", f"{KEY_A},short"])
    def test_a_malformed_key_is_a_config_error_naming_the_variable(self, bad: str) -> None:
        with pytest.raises(ConfigError, match="TOKENBROKER_ENCRYPTION_KEY"):
            EncryptedStore(MemoryStore(), bad)


class TestNoPlaintextInRedis:
    def test_raw_redis_values_hold_only_ciphertext(
        self, redis_url: str, unique_prefix: str
    ) -> None:
        import redis

        from tokenbroker.backends.redis import RedisStore

        store = EncryptedStore(RedisStore(redis_url, key_prefix=unique_prefix), KEY_A)
        key = TokenKey("wix", "app", "inst-raw")
        store.put_token(make_token(key))
        assert store.get_token(key) == make_token(key)  # it reads back through the key
        raw = redis.Redis.from_url(redis_url)
        try:
            names = raw.scan_iter(match=f"{unique_prefix}*")
            # string values (tokens, and the encryption marker); the indexes are sets
            values = [raw.get(name) for name in names if raw.type(name) == b"string"]
        finally:
            raw.close()
            store.close()
        assert values
        assert all(b"plaintext-secret-token" not in (value or b"") for value in values)
