"""The oauth2 provider through a real TokenBroker, against the OAuth 2.0 server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokenbroker import (
    ConfigError,
    InvalidCredentials,
    ManualClock,
    ProviderError,
    TokenBroker,
    TokenBrokers,
)
from tokenbroker.core.clock import to_timestamp
from tokenbroker.plugins import providers, reset_plugins
from tokenbroker.providers import OAuth2Provider
from tokenbroker.testing.oauth2_server import OAuth2Server

from .conftest import APP_ID, CLIENT_ID, SECRET, server_options


def make_broker(
    server: OAuth2Server,
    store: str = "memory://",
    *,
    provider_options: dict[str, Any] | None = None,
    clock: ManualClock | None = None,
) -> TokenBroker:
    return TokenBroker(
        app_id=APP_ID,
        store=store,
        provider="oauth2",
        provider_options=server_options(server) if provider_options is None else provider_options,
        clock=clock,
    )


class TestRegistration:
    def test_oauth2_is_registered_by_its_own_plugin(self) -> None:
        reset_plugins()
        entry = providers.entries()["oauth2"]
        assert entry.plugin == "oauth2"
        assert "RFC 6749" in entry.description

    def test_the_broker_builds_it_by_name(self, oauth2_server: OAuth2Server) -> None:
        with make_broker(oauth2_server) as broker:
            assert isinstance(broker.provider, OAuth2Provider)
            assert broker.key("t").provider == "oauth2"


class TestTokens:
    def test_one_request_then_the_cache(self, oauth2_server: OAuth2Server, sqlite_url: str) -> None:
        with make_broker(oauth2_server, sqlite_url) as broker:
            first = broker.token("tenant-1")
            again = broker.token("tenant-1")
        assert first == again
        assert first.access_token in oauth2_server.issued_tokens_for()
        assert oauth2_server.token_requests == 1
        assert oauth2_server.forms[0]["(auth)"] == "client_secret_basic"

    async def test_the_async_path(self, oauth2_server: OAuth2Server) -> None:
        async with make_broker(oauth2_server) as broker:
            token = await broker.atoken("tenant-1")
        assert oauth2_server.is_live(token.access_token)

    def test_client_secret_post_over_the_wire(self, oauth2_server: OAuth2Server) -> None:
        options = server_options(oauth2_server, auth_method="client_secret_post")
        with make_broker(oauth2_server, provider_options=options) as broker:
            broker.token("tenant-1")
        assert oauth2_server.forms[0]["(auth)"] == "client_secret_post"
        assert oauth2_server.forms[0]["client_id"] == CLIENT_ID

    def test_the_app_credentials_are_the_client_credentials_by_default(self) -> None:
        with (
            OAuth2Server(APP_ID, SECRET) as server,
            TokenBroker(
                app_id=APP_ID,
                app_secret=SECRET,
                store="memory://",
                provider="oauth2",
                provider_options={"token_url": server.token_url},
            ) as broker,
        ):
            token = broker.token("any")
        assert server.is_live(token.access_token)

    def test_scope_and_audience_reach_the_server(self) -> None:
        with OAuth2Server(CLIENT_ID, SECRET, required_scope="read", audience="api://x") as server:
            options = server_options(server, scope=["read", "write"], audience="api://x")
            with make_broker(server, provider_options=options) as broker:
                broker.token("t")
            assert server.forms[0]["scope"] == "read write"

    def test_a_missing_required_scope_is_a_provider_error_naming_the_options(self) -> None:
        server = OAuth2Server(CLIENT_ID, SECRET, required_scope="admin")
        with server, make_broker(server) as broker, pytest.raises(ProviderError) as raised:
            broker.token("t")
        assert "invalid_scope" in str(raised.value)
        assert "check the oauth2 provider options" in str(raised.value)

    def test_a_wrong_secret_is_invalid_credentials_and_never_quoted(
        self, oauth2_server: OAuth2Server
    ) -> None:
        wrong = "wrong-secret-but-long-enough"
        options = server_options(oauth2_server, client_secret=wrong)
        broker = make_broker(oauth2_server, provider_options=options)
        with broker, pytest.raises(InvalidCredentials) as raised:
            broker.token("t")
        assert raised.value.code == "invalid_client"
        assert raised.value.request_id is not None
        assert wrong not in str(raised.value)

    def test_a_bad_option_is_a_config_error_before_anything_is_sent(
        self, oauth2_server: OAuth2Server
    ) -> None:
        options = server_options(oauth2_server, scopes="read")
        with pytest.raises(ConfigError, match="unknown oauth2 provider option 'scopes'"):
            make_broker(oauth2_server, provider_options=options)
        assert oauth2_server.calls == {}


class TestTenants:
    def test_per_tenant_tokens_carry_the_instance_id(self) -> None:
        with OAuth2Server(CLIENT_ID, SECRET, tenant_param="tenant") as server:
            options = server_options(server, tenant_param="tenant")
            with make_broker(server, provider_options=options) as broker:
                a, b = broker.token("tenant-a"), broker.token("tenant-b")
            assert server.issued_tokens_for("tenant-a") == [a.access_token]
            assert server.issued_tokens_for("tenant-b") == [b.access_token]
            assert [form["tenant"] for form in server.forms] == ["tenant-a", "tenant-b"]

    def test_without_tenant_param_no_instance_id_is_sent(self, oauth2_server: OAuth2Server) -> None:
        with make_broker(oauth2_server) as broker:
            broker.token("tenant-a")
        assert "tenant-a" not in oauth2_server.forms[0].values()


class TestLifetimes:
    def test_a_missing_expires_in_is_refreshed_before_the_default_lifetime_runs_out(self) -> None:
        clock = ManualClock(start=1_800_000_000.0)
        with OAuth2Server(CLIENT_ID, SECRET, omit_expires_in=True, clock=clock.time) as server:
            options = server_options(server, default_lifetime=100)
            with make_broker(server, provider_options=options, clock=clock) as broker:
                first = broker.token("t")
                assert first.lifetime == 100
                clock.advance(99)  # within the mandatory window: never handed out again
                second = broker.token("t")
            assert second != first
            assert to_timestamp(second.expires_at) > clock.time()
            assert server.token_requests == 2

    def test_the_servers_lifetime_is_used_when_it_sends_one(self) -> None:
        server = OAuth2Server(CLIENT_ID, SECRET, token_lifetime=7200)
        with server, make_broker(server) as broker:
            assert broker.token("t").lifetime == 7200


class TestConfigFile:
    def test_an_oauth2_app_from_toml(self, oauth2_server: OAuth2Server, tmp_path: Path) -> None:
        (tmp_path / "crm-secret").write_text(SECRET + "\n", encoding="utf-8")
        config = tmp_path / "tokenbroker.toml"
        config.write_text(
            f"""
store = "memory://"

[apps.crm]
app_id = "{APP_ID}"
app_secret_file = "crm-secret"
provider = "oauth2"

[apps.crm.provider_options]
token_url = "{oauth2_server.token_url}"
client_id = "{CLIENT_ID}"
scope = ["read", "write"]
auth_method = "client_secret_basic"
default_lifetime = 1800
extra = {{ resource = "urn:crm" }}
""",
            encoding="utf-8",
        )
        with TokenBrokers.from_config(str(config)) as brokers:
            token = brokers["crm"].token("tenant-1")
        assert oauth2_server.is_live(token.access_token)
        assert oauth2_server.forms[0]["resource"] == "urn:crm"
