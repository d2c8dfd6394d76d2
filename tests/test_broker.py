"""TokenBroker end to end against the Wix emulator over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx2
import pytest

from tokenbroker import (
    ConfigError,
    InstallationStatus,
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderError,
    StorageError,
    TokenBroker,
    TransientProviderError,
)
from tokenbroker.testing.emulator import WixEmulator

from .conftest import APP_ID, APP_SECRET, INSTANCE


def free_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class TestTokens:
    def test_a_token_is_fetched_once_and_then_served_from_cache(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        first = broker.token(INSTANCE)
        second = broker.token(INSTANCE)
        assert first.access_token == second.access_token
        assert first.access_token in wix_emulator.issued_tokens_for(INSTANCE)
        assert wix_emulator.token_requests == 1

    def test_two_brokers_on_one_sqlite_file_share_the_token(
        self, broker: TokenBroker, wix_emulator: WixEmulator, sqlite_url: str
    ) -> None:
        first = broker.token(INSTANCE)
        with TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
        ) as other:
            assert other.token(INSTANCE).access_token == first.access_token
        assert wix_emulator.token_requests == 1

    async def test_atoken_matches_token(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        first = await broker.atoken(INSTANCE)
        assert broker.token(INSTANCE).access_token == first.access_token
        assert wix_emulator.token_requests == 1

    async def test_the_async_path_does_not_stall_the_event_loop(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.latency = 0.3
        ticks = 0
        done = asyncio.Event()

        async def heartbeat() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        await broker.atoken(INSTANCE)
        done.set()
        await beat
        # a blocking fetch would leave the heartbeat at one tick
        assert ticks >= 10

    async def test_five_hundred_tasks_make_one_request_to_the_emulator(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.latency = 0.1
        tokens = await asyncio.gather(*(broker.atoken(INSTANCE) for _ in range(500)))
        assert len({t.access_token for t in tokens}) == 1
        assert wix_emulator.token_requests == 1


class TestBadAnswers:
    def test_garbage_from_wix_stores_nothing(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.garbage_next()
        with pytest.raises(ProviderError, match="not JSON"):
            broker.token(INSTANCE)
        assert broker.store.get_token(broker.key(INSTANCE)) is None
        assert broker.token(INSTANCE).access_token  # and the next call recovers

    def test_a_wrong_secret_is_invalid_credentials(self, wix_emulator: WixEmulator) -> None:
        with (
            TokenBroker(
                app_id=APP_ID, app_secret="wrong", store="memory://", api_url=wix_emulator.url
            ) as bad,
            pytest.raises(InvalidCredentials, match="401"),
        ):
            bad.token(INSTANCE)
        assert wix_emulator.token_requests == 1

    def test_an_unknown_instance_is_instance_not_installed(self, broker: TokenBroker) -> None:
        with pytest.raises(InstanceNotInstalled):
            broker.token("never-installed")

    def test_an_unreachable_api_is_a_transient_error(self) -> None:
        with (
            TokenBroker(
                app_id=APP_ID,
                app_secret=APP_SECRET,
                store="memory://",
                api_url=free_port_url(),
                max_attempts=2,
                timeout=2,
            ) as broker,
            pytest.raises(TransientProviderError, match="no answer"),
        ):
            broker.token(INSTANCE)

    @pytest.mark.parametrize("bad", ["", " ", "x" * 300, "a\nb", "a\tb"])
    def test_malformed_instance_ids_are_refused_before_any_request(
        self, broker: TokenBroker, wix_emulator: WixEmulator, bad: str
    ) -> None:
        with pytest.raises(ConfigError, match="instance id"):
            broker.token(bad)
        assert wix_emulator.token_requests == 0


class TestAuth:
    def test_api_calls_carry_the_raw_token(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        with httpx2.Client(base_url=wix_emulator.url, auth=broker.auth(INSTANCE)) as http:
            response = http.get("/apps/v1/instance")
        assert response.status_code == 200
        assert response.request.headers["Authorization"] == broker.token(INSTANCE).access_token
        assert not response.request.headers["Authorization"].startswith("Bearer")

    def test_a_401_drops_the_token_fetches_a_new_one_and_retries_once(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        old = broker.token(INSTANCE)
        wix_emulator.revoke(old.access_token)
        with httpx2.Client(base_url=wix_emulator.url, auth=broker.auth(INSTANCE)) as http:
            response = http.post(
                "/apps/v1/bi-event", json={"eventName": "APP_FINISHED_CONFIGURATION"}
            )
        assert response.status_code == 200
        assert broker.token(INSTANCE).access_token != old.access_token
        assert wix_emulator.token_requests == 2

    def test_a_second_401_is_returned_not_looped(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(401, endpoint="apps/v1/instance", times=5)
        with httpx2.Client(base_url=wix_emulator.url, auth=broker.auth(INSTANCE)) as http:
            response = http.get("/apps/v1/instance")
        assert response.status_code == 401
        assert wix_emulator.calls["apps/v1/instance"] == 2

    async def test_async_clients_are_authorized_and_retried_too(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        old = await broker.atoken(INSTANCE)
        wix_emulator.revoke(old.access_token)
        async with httpx2.AsyncClient(
            base_url=wix_emulator.url, auth=broker.auth(INSTANCE)
        ) as http:
            response = await http.get("/apps/v1/instance")
        assert response.status_code == 200
        assert response.json()["instance"]["instanceId"] == INSTANCE


class TestWixApis:
    def test_finish_setup_sends_the_bi_event_and_records_it(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        installation = broker.finish_setup(INSTANCE)
        assert wix_emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]
        assert installation.setup_finished_at is not None
        stored = broker.get_installation(INSTANCE)
        assert stored is not None
        assert stored.setup_finished_at is not None

    async def test_afinish_setup_does_the_same(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        await broker.afinish_setup(INSTANCE)
        assert wix_emulator.bi_events == [(INSTANCE, "APP_FINISHED_CONFIGURATION")]

    def test_finish_setup_on_a_refused_call_records_nothing(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        wix_emulator.fail_next(400, endpoint="apps/v1/bi-event")
        with pytest.raises(ProviderError, match="Send BI Event"):
            broker.finish_setup(INSTANCE)
        assert broker.get_installation(INSTANCE) is None

    def test_app_instance_returns_wix_answer(self, broker: TokenBroker) -> None:
        answer = broker.app_instance(INSTANCE)
        assert answer["instance"]["instanceId"] == INSTANCE


class TestInstallations:
    def test_add_is_idempotent_and_listed(self, broker: TokenBroker) -> None:
        first = broker.add_installation("a")
        assert broker.add_installation("a") == first
        broker.add_installation("b")
        assert [i.instance_id for i in broker.installations()] == ["a", "b"]

    def test_remove_marks_removed_and_forgets_tokens(
        self, broker: TokenBroker, wix_emulator: WixEmulator
    ) -> None:
        broker.add_installation(INSTANCE)
        broker.token(INSTANCE)
        removed = broker.remove_installation(INSTANCE)
        assert removed is not None
        assert removed.status is InstallationStatus.REMOVED
        assert broker.store.get_token(broker.key(INSTANCE)) is None
        assert broker.installations() == []
        assert [i.instance_id for i in broker.installations(include_removed=True)] == [INSTANCE]
        with pytest.raises(InstanceNotInstalled, match="recorded as removed"):
            broker.token(INSTANCE)  # and Wix is not asked
        assert wix_emulator.token_requests == 1
        broker.add_installation(INSTANCE)  # installed again: tokens again
        broker.token(INSTANCE)
        assert wix_emulator.token_requests == 2  # the cached token was really forgotten

    def test_removing_an_unknown_installation_returns_none(self, broker: TokenBroker) -> None:
        assert broker.remove_installation("nobody") is None


class TestConfiguration:
    def test_an_unknown_scheme_lists_the_registered_ones(self) -> None:
        with pytest.raises(ConfigError, match=r"unknown store scheme 'nosql'.*memory.*sqlite"):
            TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store="nosql://x")

    def test_a_url_without_scheme_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="no scheme"):
            TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store="tokens.db")

    def test_an_unwritable_sqlite_path_is_a_storage_error_naming_it(self, tmp_path: Path) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        url = f"sqlite:///{blocker / 'sub' / 'tokens.db'}"
        with pytest.raises(StorageError, match="sub"):
            TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store=url).installations()

    def test_an_empty_secret_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="secret"):
            TokenBroker(app_id=APP_ID, app_secret=" ", store="memory://")

    def test_a_bad_api_url_is_refused(self) -> None:
        with pytest.raises(ConfigError, match="API URL"):
            TokenBroker(app_id=APP_ID, app_secret=APP_SECRET, store="memory://", api_url="ftp://x")

    def test_from_env_reads_every_setting(
        self, wix_emulator: WixEmulator, sqlite_url: str, tmp_path: Path
    ) -> None:
        secret_file = tmp_path / "secret"
        secret_file.write_text(APP_SECRET + "\n")
        env = {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET_FILE": str(secret_file),
            "TOKENBROKER_STORE": sqlite_url,
            "TOKENBROKER_API_URL": wix_emulator.url,
        }
        with TokenBroker.from_env(env) as broker:
            assert broker.token(INSTANCE).access_token
            assert broker.store.url == sqlite_url

    @pytest.mark.parametrize(
        ("env", "named"),
        [
            ({}, "TOKENBROKER_APP_ID"),
            ({"TOKENBROKER_APP_ID": "a"}, "TOKENBROKER_APP_SECRET"),
            (
                {
                    "TOKENBROKER_APP_ID": "a",
                    "TOKENBROKER_APP_SECRET": "s",
                    "TOKENBROKER_API_URL": "x",
                },
                "TOKENBROKER_API_URL",
            ),
            (
                {
                    "TOKENBROKER_APP_ID": "a",
                    "TOKENBROKER_APP_SECRET": "s",
                    "TOKENBROKER_STORE": "x",
                },
                "TOKENBROKER_STORE",
            ),
            (
                {"TOKENBROKER_APP_ID": "a", "TOKENBROKER_APP_SECRET_FILE": "/nonexistent/secret"},
                "TOKENBROKER_APP_SECRET_FILE",
            ),
            (
                {"TOKENBROKER_APP_ID": "a\x00b", "TOKENBROKER_APP_SECRET": "s"},
                "TOKENBROKER_APP_ID",
            ),
        ],
    )
    def test_missing_or_malformed_settings_name_the_variable(
        self, env: dict[str, str], named: str
    ) -> None:
        with pytest.raises(ConfigError, match=named):
            TokenBroker.from_env(env)

    def test_the_default_store_is_an_sqlite_file_under_xdg_data_home(self, tmp_path: Path) -> None:
        from tokenbroker.settings import Settings

        env = {
            "TOKENBROKER_APP_ID": "a",
            "TOKENBROKER_APP_SECRET": "s",
            "XDG_DATA_HOME": str(tmp_path),
        }
        assert Settings.from_env(env).store == f"sqlite:///{tmp_path}/tokenbroker/tokenbroker.db"
