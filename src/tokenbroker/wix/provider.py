"""The Wix provider: Create Access Token with the client-credentials grant.

``POST {api}/oauth2/token`` with a JSON body ``{"instance_id", "client_id",
"client_secret", "grant_type": "client_credentials"}``; the answer
is ``{"access_token", "token_type", "expires_in"}``, parsed strictly. Requests go
through ``WixHttp`` (retry budget and circuit breaker, see ``tokenbroker.wix.http``).
Error answers are classified by ``tokenbroker.wix.errors``; what reads as "not
installed" is ``NotInstalledRules``, extended by ``ProviderConfig.not_installed``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Final

import httpx2

from ..core.breaker import CircuitBreaker
from ..core.clock import to_datetime
from ..core.credentials import guarded
from ..core.errors import ConfigError, ProviderError
from ..core.flow import Flow, run_async, run_sync
from ..core.protocols import ProviderConfig
from ..core.retry import RetryBudget
from ..core.secret import Secret, scrub_secrets
from ..core.token import Token, TokenKey
from . import apps
from .errors import DEFAULT_RULES, NotInstalledRules, request_id_of
from .facts import TOKEN_PATH, validate_api_url
from .http import WixHttp, json_object

log = logging.getLogger("tokenbroker.wix")

CREDENTIAL_REFUSALS: Final = 5
_TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]+")
# RFC 7230 token characters: what an HTTP auth scheme such as "Bearer" is made of.
_TOKEN_TYPE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
_MAX_MESSAGE: Final = 300
MAX_TOKEN_LENGTH: Final = 16 * 1024
"""The longest ``access_token`` accepted: Wix's are about 1 KiB; anything near a
store's column or value limit is a broken answer, not a token."""
MAX_LIFETIME: Final = 366 * 86400.0
"""The longest ``expires_in`` accepted, in seconds (Wix's tokens live 4 hours)."""


class WixProvider:
    """Gets Wix access tokens, and calls the app APIs that take an instance's token.

    Thread-safe and usable from several event loops (see ``WixHttp``).
    ``not_installed`` replaces the built-in ``NotInstalledRules``; the entries of
    ``config.not_installed`` (``CODE`` or ``text:<phrase>``) extend either.
    """

    name = "wix"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        retry: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
        not_installed: NotInstalledRules | None = None,
    ) -> None:
        self.app_id = config.app_id
        rules = (DEFAULT_RULES if not_installed is None else not_installed).with_entries(
            config.not_installed, source="ProviderConfig.not_installed"
        )
        self._secret = config.app_secret
        self.api_url = validate_api_url(config.api_url)
        self._clock = config.clock
        self.http = WixHttp(
            api_url=self.api_url,
            clock=config.clock,
            retry=retry or RetryBudget(max_attempts=max(1, config.max_attempts)),
            breaker=breaker if breaker is not None else CircuitBreaker(clock=config.clock),
            timeout=config.timeout,
            transport=config.transport,
            scrub=self._scrub,
            not_installed=rules,
            app=config.app_id,
        )
        self.credentials = CircuitBreaker(
            failure_threshold=CREDENTIAL_REFUSALS, cooldown=60.0, clock=config.clock
        )
        """Consecutive refusals of the app's credentials: an app-wide failure, not an
        outage. After 5 in a row, Create Access Token is not sent for a while (then
        one trial), so a wrong secret cannot spend the whole request budget."""

    def __repr__(self) -> str:
        return f"WixProvider(app_id={self.app_id!r}, api_url={self.api_url!r})"

    @property
    def max_fetch_seconds(self) -> float:
        """The longest one ``acquire`` can take: the lease on a key must outlast it."""
        return self.http.max_call_seconds

    @property
    def app_secret(self) -> Secret:
        """The app secret (masked in reprs); instance signatures are keyed with it."""
        return self._secret

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding every request this provider sends."""
        return self.http.breaker

    @property
    def client(self) -> httpx2.Client:
        return self.http.client

    @property
    def aclient(self) -> httpx2.AsyncClient:
        return self.http.aclient

    def close(self) -> None:
        self.http.close()

    async def aclose_loop_client(self) -> None:
        """Close the running loop's async client (before that loop ends)."""
        await self.http.aclose_loop_client()

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- the decision core ----------------------------------------------------
    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, [self._secret.reveal()])[:_MAX_MESSAGE]

    def _token_request(self, key: TokenKey) -> httpx2.Request:
        if key.app_id != self.app_id:
            raise ConfigError(f"this provider serves app {self.app_id!r}, not {key.app_id!r}")
        return httpx2.Request(
            "POST",
            self.api_url + TOKEN_PATH,
            # In the order Wix's SDK sends them (seen in @wix/sdk AppStrategy.js), so the
            # body is byte for byte the SDK's (tests/interop checks it).
            json={
                "instance_id": key.instance_id,
                "client_id": self.app_id,
                "client_secret": self._secret.reveal(),
                "grant_type": "client_credentials",
            },
        )

    def _token_flow(self, key: TokenKey) -> Flow[Token]:
        request = self._token_request(key)
        obtained = self._clock.time()  # counted from before the request: errs early
        response = yield from guarded(
            self.credentials,
            self.http.request_flow(request, "Create Access Token"),
            what="Create Access Token",
            refused=f"Wix refused app {self.app_id}'s credentials",
            log=log,
        )
        return self.parse_token(key, response, obtained)

    def parse_token(self, key: TokenKey, response: httpx2.Response, obtained: float) -> Token:
        """Strictly parse a Create Access Token answer; anything odd is a ProviderError."""

        def bad(why: str) -> ProviderError:
            return ProviderError(
                f"Create Access Token: Wix answered {response.status_code} with {why}",
                status=response.status_code,
                request_id=request_id_of(response, self._scrub),
            )

        body = json_object(response, bad)
        access_token = body.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise bad("no access_token string")
        if len(access_token) > MAX_TOKEN_LENGTH:
            raise bad(
                f"an access_token of {len(access_token)} characters (at most {MAX_TOKEN_LENGTH})"
            )
        if not _TOKEN_CHARS.fullmatch(access_token):
            raise bad("an access_token with whitespace or control characters (not printable ASCII)")
        token_type = body.get("token_type", "Bearer")
        if not isinstance(token_type, str) or not _TOKEN_TYPE.fullmatch(token_type):
            raise bad("a token_type that is not a short token such as 'Bearer'")
        expires_in = body.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            raise bad("no numeric expires_in")
        # Compared before any float arithmetic, so 10**400 cannot overflow it.
        if not 0 < expires_in <= MAX_LIFETIME:  # also false for NaN
            raise bad(
                f"an expires_in out of range ({repr(expires_in)[:24]}; "
                f"0 < expires_in <= {MAX_LIFETIME:.0f})"
            )
        return Token(
            key=key,
            access_token=access_token,
            token_type=token_type,
            expires_at=to_datetime(obtained + float(expires_in)),
            obtained_at=to_datetime(obtained),
        )

    # -- TokenProvider ----------------------------------------------------------
    def acquire(self, key: TokenKey) -> Token:
        return run_sync(self._token_flow(key), self.http)

    async def aacquire(self, key: TokenKey) -> Token:
        return await run_async(self._token_flow(key), self.http)

    # -- the app APIs (see tokenbroker.wix.apps) ----------------------------------
    def send_finished_configuration(self, auth: httpx2.Auth) -> None:
        """Send Wix the ``APP_FINISHED_CONFIGURATION`` BI event."""
        run_sync(apps.finished_configuration_flow(self.http, auth), self.http)

    async def asend_finished_configuration(self, auth: httpx2.Auth) -> None:
        await run_async(apps.finished_configuration_flow(self.http, auth), self.http)

    def get_app_instance(self, auth: httpx2.Auth) -> dict[str, Any]:
        """Wix's Get App Instance, authorised by ``auth``."""
        return run_sync(apps.app_instance_flow(self.http, auth), self.http)

    async def aget_app_instance(self, auth: httpx2.Auth) -> dict[str, Any]:
        return await run_async(apps.app_instance_flow(self.http, auth), self.http)


def wix_provider(config: ProviderConfig) -> WixProvider:
    return WixProvider(config)
