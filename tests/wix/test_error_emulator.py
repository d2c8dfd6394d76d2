"""Error answers in both of the emulator's shapes, over loopback.

The emulator answers every error in Wix's standard shape (``error_shape="wix"``)
or in RFC 6749's (``"ietf"``), Create Access Token for an instance that is not
installed with ``not_installed_status``, and every answer with a unique
``x-wix-request-id``: what the provider raises must not depend on the shape, and
must name the answer it came from.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import httpx2
import pytest

from tokenbroker import (
    InstanceNotInstalled,
    InvalidCredentials,
    ProviderConfig,
    ProviderError,
    RateLimited,
    Secret,
    TokenBroker,
    TokenKey,
    TransientProviderError,
)
from tokenbroker.testing.emulator import INSTANCE_ENDPOINT, WixEmulator
from tokenbroker.wix import RetryBudget, WixProvider

from ..conftest import APP_ID, APP_SECRET

SHAPES = ["wix", "ietf"]
GONE = "inst-0-gone"  # first in code-point order: the bulk refresh meets it first


@pytest.fixture(params=SHAPES)
def emulator(request: pytest.FixtureRequest, wix_emulator: WixEmulator) -> WixEmulator:
    wix_emulator.error_shape = request.param
    return wix_emulator


def make_provider(emulator: WixEmulator, secret: str = APP_SECRET) -> WixProvider:
    config = ProviderConfig(app_id=APP_ID, app_secret=Secret(secret), api_url=emulator.url)
    return WixProvider(config, retry=RetryBudget(max_attempts=2, backoff_base=0.0))


@pytest.fixture
def provider(emulator: WixEmulator) -> Iterator[WixProvider]:
    provider = make_provider(emulator)
    yield provider
    provider.close()


def raised(provider: WixProvider, instance_id: str) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        provider.acquire(TokenKey("wix", APP_ID, instance_id))
    return info.value


def names_the_last_answer(error: ProviderError, emulator: WixEmulator) -> None:
    assert error.request_id is not None
    assert error.request_id == emulator.last_request_id
    assert str(error).endswith(f" (request id {error.request_id})")


class TestNotInstalled:
    @pytest.mark.parametrize("status", [400, 401, 403, 404])
    def test_is_instance_not_installed_in_either_shape_on_any_status(
        self, emulator: WixEmulator, provider: WixProvider, status: int
    ) -> None:
        emulator.not_installed_status = status
        error = raised(provider, GONE)
        assert type(error) is InstanceNotInstalled
        assert error.status == status
        assert error.code == (
            "APP_NOT_INSTALLED" if emulator.error_shape == "wix" else "invalid_grant"
        )
        assert "App is not installed on this instance" in str(error)
        names_the_last_answer(error, emulator)

    @pytest.mark.parametrize("status", [401, 403])
    def test_a_bulk_refresh_does_not_stop_at_a_removed_site(
        self, emulator: WixEmulator, sqlite_url: str, status: int
    ) -> None:
        # Were "not installed" read as InvalidCredentials, the refresher would stop
        # at the first removed site and skip every other installation.
        emulator.not_installed_status = status
        emulator.install("inst-a")
        emulator.install("inst-b")
        with TokenBroker(
            app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=emulator.url
        ) as broker:
            broker.installations.add_many([GONE, "inst-a", "inst-b"])
            report = broker.refresh_due(within=1800, concurrency=1)
        assert sorted(report.refreshed) == ["inst-a", "inst-b"]
        assert [instance for instance, _ in report.failed] == [GONE]
        assert not report.skipped


class TestRefusedCredentials:
    def test_a_wrong_secret_is_invalid_credentials_in_either_shape(
        self, emulator: WixEmulator
    ) -> None:
        provider = make_provider(emulator, secret="not-the-secret")
        error = raised(provider, "inst-1")
        provider.close()
        assert type(error) is InvalidCredentials
        assert error.status == 401
        assert emulator.token_requests == 1  # never retried
        assert "not-the-secret" not in str(error)
        names_the_last_answer(error, emulator)

    def test_a_wrong_secret_for_a_removed_site_is_still_invalid_credentials(
        self, emulator: WixEmulator
    ) -> None:
        emulator.not_installed_status = 401
        provider = make_provider(emulator, secret="not-the-secret")
        assert type(raised(provider, GONE)) is InvalidCredentials
        provider.close()


class RawToken(httpx2.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["Authorization"] = self.token
        yield request


class TestFaults:
    def test_server_errors_past_the_budget_are_transient_with_the_last_id(
        self, emulator: WixEmulator, provider: WixProvider
    ) -> None:
        emulator.fail_next(503, times=2)
        error = raised(provider, "inst-1")
        assert type(error) is TransientProviderError
        assert emulator.token_requests == 2
        names_the_last_answer(error, emulator)
        assert emulator.request_ids[-2] != error.request_id  # one id per answer

    def test_a_long_retry_after_is_rate_limited_with_its_id(
        self, emulator: WixEmulator, provider: WixProvider
    ) -> None:
        emulator.rate_limit_next(120)
        error = raised(provider, "inst-1")
        assert type(error) is RateLimited
        assert error.retry_after == 120
        names_the_last_answer(error, emulator)

    def test_a_bad_request_is_a_plain_provider_error_with_its_id(
        self, emulator: WixEmulator, provider: WixProvider
    ) -> None:
        emulator.fail_next(400)
        error = raised(provider, "inst-1")
        assert type(error) is ProviderError
        assert error.status == 400
        names_the_last_answer(error, emulator)

    def test_a_refused_token_on_get_app_instance_is_scrubbed_and_named(
        self, emulator: WixEmulator, provider: WixProvider
    ) -> None:
        token = provider.acquire(TokenKey("wix", APP_ID, "inst-1")).access_token
        emulator.revoke(token)
        with pytest.raises(InvalidCredentials) as info:
            provider.get_app_instance(RawToken(token))
        assert info.value.status == 401
        assert token not in str(info.value)
        names_the_last_answer(info.value, emulator)
        assert emulator.calls[INSTANCE_ENDPOINT] == 1
