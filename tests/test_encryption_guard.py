"""Encryption cannot be turned off by accident: one process without the key must
neither hand out ciphertext nor write plaintext over it."""

from __future__ import annotations

import httpx2
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from tokenbroker import ConfigError, TokenBroker
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()


def broker_for(url: str, store: str, key: str | None = None) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=store, api_url=url, encryption_key=key
    )


class TestAProcessWithoutTheKey:
    def test_refuses_an_encrypted_store_naming_the_setting_and_asks_wix_nothing(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with broker_for(wix_emulator.url, sqlite_url, KEY) as encrypted:
            encrypted.token(INSTANCE)
        with (
            broker_for(wix_emulator.url, sqlite_url) as plain,
            pytest.raises(ConfigError, match="TOKENBROKER_ENCRYPTION_KEY"),
        ):
            plain.token(INSTANCE)
        assert wix_emulator.token_requests == 1

    def test_cannot_write_plaintext_over_ciphertext_on_a_401_retry(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with broker_for(wix_emulator.url, sqlite_url, KEY) as encrypted:
            first = encrypted.token(INSTANCE)
        wix_emulator.revoke(first.access_token)
        with (
            broker_for(wix_emulator.url, sqlite_url) as plain,
            httpx2.Client(base_url=wix_emulator.url, auth=plain.auth(INSTANCE)) as http,
            pytest.raises(ConfigError),
        ):
            http.get("/apps/v1/instance")
        with broker_for(wix_emulator.url, sqlite_url, KEY) as encrypted:
            stored = encrypted.store.inner.get_token(encrypted.key(INSTANCE))  # type: ignore[attr-defined]
            assert stored is not None
            assert stored.access_token.startswith("fernet:")
            assert encrypted.token(INSTANCE).access_token == first.access_token

    def test_refuses_ciphertext_in_a_store_encrypted_before_markers_existed(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with broker_for(wix_emulator.url, sqlite_url, KEY) as encrypted:
            encrypted.token(INSTANCE)
        # what an older tokenbroker left behind: ciphertext, and no marker
        engine = sa.create_engine(sqlite_url)
        with engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM tokenbroker_installations WHERE app_id = :app"),
                {"app": "tokenbroker~meta"},
            )
        engine.dispose()
        with (
            broker_for(wix_emulator.url, sqlite_url) as plain,
            pytest.raises(ConfigError, match="encrypted"),
        ):
            plain.token(INSTANCE)


class TestAProcessWithTheWrongKeys:
    def test_is_refused_rather_than_treating_every_token_as_missing(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with broker_for(wix_emulator.url, sqlite_url, KEY) as encrypted:
            encrypted.token(INSTANCE)
        with (
            broker_for(wix_emulator.url, sqlite_url, OTHER_KEY) as wrong,
            pytest.raises(ConfigError, match="none of its keys opens"),
        ):
            wrong.token(INSTANCE)
        assert wix_emulator.token_requests == 1


class TestTurningEncryptionOn:
    def test_a_plaintext_store_s_tokens_are_replaced_by_ciphertext(
        self, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        with broker_for(wix_emulator.url, sqlite_url) as plain:
            before = plain.token(INSTANCE)
        with broker_for(wix_emulator.url, sqlite_url, KEY) as encrypted:
            after = encrypted.token(INSTANCE)  # the plaintext one reads as missing
            assert after.access_token != before.access_token
            stored = encrypted.store.inner.get_token(encrypted.key(INSTANCE))  # type: ignore[attr-defined]
            assert stored is not None
            assert stored.access_token.startswith("fernet:")
        with (
            broker_for(wix_emulator.url, sqlite_url) as plain,
            pytest.raises(ConfigError, match="TOKENBROKER_ENCRYPTION_KEY"),
        ):
            plain.token(INSTANCE)
