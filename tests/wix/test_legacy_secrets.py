"""Refresh tokens are secrets: encrypted at rest when a key is set, and in no log line,
error or repr, even when Wix's own answer quotes one."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbroker import InstanceNotInstalled, TokenBroker, TransientProviderError, store_from_url
from tokenbroker.backends.encrypted import PREFIX, new_key
from tokenbroker.core.clock import ManualClock
from tokenbroker.testing.emulator import ACCESS_ENDPOINT, WixEmulator
from tokenbroker.wix.legacy import AuthorizationCodeRefused, complete_install, refresh_key

from .test_legacy import (
    APP_ID,
    APP_SECRET,
    DUE,
    INSTANCE,
    assert_newest_kept,
    install,
    legacy_broker,
    stored_refresh,
    stored_refresh_token,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[WixEmulator]:
    with WixEmulator(APP_ID, APP_SECRET, clock=clock.time) as emu:
        yield emu


def database_bytes(path: Path) -> bytes:
    """Every byte SQLite keeps for the store: the file, its journal and its WAL."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


class TestAtRest:
    def test_with_a_key_the_refresh_token_is_encrypted_in_the_store(
        self, emulator: WixEmulator, tmp_path: Path, clock: ManualClock
    ) -> None:
        path = tmp_path / "tokens.db"
        url = f"sqlite:///{path}"
        with legacy_broker(emulator, url, clock, encryption_key=new_key()) as broker:
            first = install(broker, emulator)
            clock.advance(DUE)
            second = broker.token(INSTANCE)
            assert_newest_kept(broker, emulator)
            plain = stored_refresh_token(broker)
            assert plain is not None
            raw_store = store_from_url(url)  # no key: what is on disk
            try:
                raw = raw_store.get_token(refresh_key(broker.key(INSTANCE)))
            finally:
                raw_store.close()
        assert raw is not None
        assert raw.access_token.startswith(PREFIX)
        assert plain not in raw.access_token
        on_disk = database_bytes(path)
        for secret in [*emulator.refresh_tokens_for(INSTANCE), first.access_token]:
            assert secret.encode() not in on_disk
        assert second.access_token.encode() not in on_disk

    def test_a_process_without_the_key_cannot_read_or_overwrite_it(
        self, emulator: WixEmulator, sqlite_url: str, clock: ManualClock
    ) -> None:
        with legacy_broker(emulator, sqlite_url, clock, encryption_key=new_key()) as broker:
            install(broker, emulator)
            before = stored_refresh(broker)
        with legacy_broker(emulator, sqlite_url, clock) as keyless:
            clock.advance(DUE)
            with pytest.raises(Exception, match="TOKENBROKER_ENCRYPTION_KEY"):
                keyless.token(INSTANCE)
        assert emulator.access_requests == 1  # no refresh token was read, none spent
        assert before is not None


def echo(broker: TokenBroker) -> str:
    """An error text quoting the refresh token the next refresh sends, and the secret."""
    return f"bad refresh_token {stored_refresh_token(broker)} for client_secret {APP_SECRET}"


class TestNeverShown:
    def test_no_log_line_error_or_repr_holds_a_token_a_code_or_the_secret(
        self,
        emulator: WixEmulator,
        sqlite_url: str,
        clock: ManualClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        errors: list[BaseException] = []
        shown: list[str] = []
        with legacy_broker(emulator, sqlite_url, clock) as broker:
            code = emulator.authorization_code(INSTANCE)
            first = complete_install(broker, INSTANCE, code)
            try:
                complete_install(broker, INSTANCE, code)  # used: refused
            except AuthorizationCodeRefused as exc:
                errors.append(exc)
            # Wix's own words quote what was sent: a 5xx retried (logged), then 5xx to
            # the end of the budget (an error), then a refusal.
            emulator.fail_next(503, body=echo(broker), endpoint=ACCESS_ENDPOINT)
            clock.advance(DUE)
            tokens = [broker.token(INSTANCE)]
            emulator.fail_next(
                503, body={"message": echo(broker)}, times=3, endpoint=ACCESS_ENDPOINT
            )
            clock.advance(DUE)
            try:
                broker.token(INSTANCE)
            except TransientProviderError as exc:
                errors.append(exc)
            broker.installations.reset_health(INSTANCE)
            tokens.append(broker.token(INSTANCE))
            emulator.revoke_grants(INSTANCE)
            gone = stored_refresh_token(broker)
            assert gone is not None
            emulator.error_shape = "ietf"
            emulator.fail_next(
                400,
                body={"error": "invalid_grant", "error_description": f"{gone} is revoked"},
                endpoint=ACCESS_ENDPOINT,
            )
            clock.advance(DUE)
            try:
                broker.token(INSTANCE)
            except InstanceNotInstalled as exc:
                errors.append(exc)
            shown += [repr(broker), repr(broker.provider), repr(stored_refresh(broker))]
        assert len(errors) == 3
        for error in errors:
            shown += [str(error), repr(error), "".join(traceback.format_exception(error))]
            shown += [str(getattr(error, "wix_message", ""))]
        shown += [record.getMessage() for record in caplog.records]
        shown += [caplog.text]
        secrets = [
            APP_SECRET,
            code,
            first.access_token,
            *(t.access_token for t in tokens),
            *emulator.refresh_tokens_for(INSTANCE),
        ]
        leaks = [(s[:6], text[:80]) for text in shown for s in secrets if s in text]
        assert leaks == []
        assert "***" in str(errors[2])  # Wix's quote of the refresh token, scrubbed
