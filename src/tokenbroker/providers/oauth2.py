"""The ``oauth2`` provider: the OAuth 2.0 client-credentials grant (RFC 6749 4.4).

``POST {token_url}`` with a form-encoded body (``application/x-www-form-urlencoded``,
RFC 6749 4.4.2): ``grant_type=client_credentials``, then ``scope`` and
``audience`` when set, the instance id under ``tenant_param`` when set, the
``extra`` parameters, and with ``client_secret_post`` the client's id and secret;
with ``client_secret_basic`` (the default) those go in an HTTP Basic
``Authorization`` header instead, each form-urlencoded before the base64 (RFC
6749 2.3.1). ``Accept: application/json``.

The answer (RFC 6749 5.1) is parsed as strictly as Wix's: a JSON object whose
``access_token`` is 1 to 16 KiB of printable ASCII and whose ``token_type`` is
a short HTTP token (``bearer`` in any case is sent on as ``Bearer``; any other
type is kept as it came). ``expires_in`` is optional in RFC 6749; when it is
missing (or ``null``) the token lives ``default_lifetime`` seconds, never
"forever" and never "already expired" (Shopify/shopify-app-js#3400 is what a
missing ``expires_in`` does to a refresher that reads it as either). When present
it must be a number, or a string of digits, above 0 and at most 366 days.
Errors are read from the RFC 6749 5.2 body (``tokenbroker.providers.errors``);
requests go through ``TokenEndpoint`` (retry budget and circuit breaker).
"""

from __future__ import annotations

import base64
import logging
import re
import urllib.parse
from typing import Final

import httpx2

from ..core.breaker import CircuitBreaker
from ..core.clock import to_datetime
from ..core.credentials import guarded
from ..core.errors import ConfigError, ProviderError
from ..core.flow import Flow, run_async, run_sync
from ..core.protocols import ProviderConfig
from ..core.retry import RetryBudget
from ..core.secret import scrub_secrets
from ..core.token import Token, TokenKey
from .errors import request_id_of
from .http import TokenEndpoint
from .options import MAX_LIFETIME, OAuth2Options

log = logging.getLogger("tokenbroker.oauth2")

CREDENTIAL_REFUSALS: Final = 5
MAX_TOKEN_LENGTH: Final = 16 * 1024
"""The longest ``access_token`` accepted: anything near a store's column or value
limit is a broken answer, not a token."""
FORM: Final = "application/x-www-form-urlencoded"
_TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]+")
# RFC 9110 5.6.2 token characters: what an HTTP auth scheme such as "Bearer" is made of.
_TOKEN_TYPE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
_NUMERIC: Final = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")
_MAX_MESSAGE: Final = 300


def _form_encode(value: str) -> str:
    """RFC 6749 2.3.1: the id and secret are form-urlencoded before they are joined."""
    return urllib.parse.quote_plus(value, safe="")


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` value for ``client_secret_basic`` (RFC 6749 2.3.1)."""
    joined = f"{_form_encode(client_id)}:{_form_encode(client_secret)}"
    return "Basic " + base64.b64encode(joined.encode("utf-8")).decode("ascii")


def lifetime(value: object, default: float) -> float | str:
    """Seconds the token lives, from ``expires_in``; a string says what is wrong with it.

    Missing (``None``): ``default``. A bool, a negative or non-finite number, zero,
    more than 366 days or a string that is not plain digits: refused. Compared
    before any float arithmetic, so ``10**400`` cannot overflow it."""
    if value is None:
        return default
    if isinstance(value, str):
        if not _NUMERIC.fullmatch(value):
            return "an expires_in string that is not a number of seconds"
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"an expires_in of type {type(value).__name__}, not a number"
    if not 0 < value <= MAX_LIFETIME:  # also false for NaN
        return (
            f"an expires_in out of range ({repr(value)[:24]}; 0 < expires_in <= {MAX_LIFETIME:.0f})"
        )
    return float(value)


class OAuth2Provider:
    """Gets tokens from any OAuth 2.0 token endpoint with the client-credentials grant.

    Thread-safe and usable from several event loops (see ``TokenEndpoint``). Without
    ``tenant_param`` the instance id is not sent, so every instance of the app gets
    the same kind of token: the app's own; with it, one token per instance.
    """

    name = "oauth2"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        retry: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.options = OAuth2Options.from_config(config)
        self.app_id = config.app_id
        self._clock = config.clock
        options = self.options
        secret = options.client_secret.reveal()
        basic = basic_credentials(options.client_id, secret)
        self._basic = basic if options.auth_method == "client_secret_basic" else None
        # The secret, and the header that carries it, in every form a server might echo.
        self._hidden = [secret, _form_encode(secret), basic, basic.removeprefix("Basic ")]
        self.endpoint = TokenEndpoint(
            url=options.token_url,
            clock=config.clock,
            retry=retry or RetryBudget(max_attempts=options.max_attempts),
            breaker=breaker if breaker is not None else CircuitBreaker(clock=config.clock),
            timeout=options.timeout,
            transport=config.transport,
            scrub=self._scrub,
            request_id_header=options.request_id_header,
            app=config.app_id,
        )
        self._what = f"OAuth 2.0 token request to {httpx2.URL(options.token_url).host}"
        self.credentials = CircuitBreaker(
            failure_threshold=CREDENTIAL_REFUSALS, cooldown=60.0, clock=config.clock
        )
        """Consecutive refusals of the client's credentials: after 5 in a row nothing
        is sent for a while (then one trial), so a wrong secret cannot spend every
        request budget of every instance."""

    def __repr__(self) -> str:
        return (
            f"OAuth2Provider(app_id={self.app_id!r}, token_url={self.options.token_url!r}, "
            f"auth_method={self.options.auth_method!r})"
        )

    @property
    def max_fetch_seconds(self) -> float:
        """The longest one ``acquire`` can take: the lease on a key must outlast it."""
        return self.endpoint.max_call_seconds

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding every request this provider sends."""
        return self.endpoint.breaker

    def close(self) -> None:
        self.endpoint.close()

    async def aclose_loop_client(self) -> None:
        """Close the running loop's async client (before that loop ends)."""
        await self.endpoint.aclose_loop_client()

    async def aclose(self) -> None:
        await self.endpoint.aclose()

    # -- the decision core ------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return scrub_secrets(text, self._hidden)[:_MAX_MESSAGE]

    def form(self, key: TokenKey) -> list[tuple[str, str]]:
        """The form fields of ``key``'s token request, in the order they are sent
        (the client secret among them with ``client_secret_post``)."""
        options = self.options
        fields = [("grant_type", "client_credentials")]
        if options.scope is not None:
            fields.append(("scope", options.scope))
        if options.audience is not None:
            fields.append(("audience", options.audience))
        if options.tenant_param is not None:
            fields.append((options.tenant_param, key.instance_id))
        fields.extend(options.extra)
        if options.auth_method == "client_secret_post":
            fields.append(("client_id", options.client_id))
            fields.append(("client_secret", options.client_secret.reveal()))
        return fields

    def token_request(self, key: TokenKey) -> httpx2.Request:
        """The request that asks for ``key``'s token."""
        if key.app_id != self.app_id:
            raise ConfigError(f"this provider serves app {self.app_id!r}, not {key.app_id!r}")
        headers = {"Content-Type": FORM, "Accept": "application/json"}
        if self._basic is not None:
            headers["Authorization"] = self._basic
        content = urllib.parse.urlencode(self.form(key)).encode("ascii")
        return httpx2.Request("POST", self.options.token_url, headers=headers, content=content)

    def _token_flow(self, key: TokenKey) -> Flow[Token]:
        request = self.token_request(key)
        obtained = self._clock.time()  # counted from before the request: errs early
        response = yield from guarded(
            self.credentials,
            self.endpoint.request_flow(request, self._what),
            what=self._what,
            refused="the client's credentials were refused",
            log=log,
        )
        return self.parse_token(key, response, obtained)

    def parse_token(self, key: TokenKey, response: httpx2.Response, obtained: float) -> Token:
        """Strictly parse a token answer (RFC 6749 5.1); anything odd is a ProviderError."""

        def bad(why: str) -> ProviderError:
            return ProviderError(
                f"{self._what}: answered {response.status_code} with {why}",
                status=response.status_code,
                request_id=request_id_of(response, self.options.request_id_header, self._scrub),
            )

        try:
            body = response.json()
        except ValueError:
            raise bad("a body that is not JSON") from None
        if not isinstance(body, dict):
            raise bad(f"JSON {type(body).__name__}, not an object")
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
        if token_type.lower() == "bearer":  # RFC 6749 5.1: the type is case-insensitive
            token_type = "Bearer"  # noqa: S105 - an auth scheme, not a password
        seconds = lifetime(body.get("expires_in"), self.options.default_lifetime)
        if isinstance(seconds, str):
            raise bad(seconds)
        return Token(
            key=key,
            access_token=access_token,
            token_type=token_type,
            expires_at=to_datetime(obtained + seconds),
            obtained_at=to_datetime(obtained),
        )

    # -- TokenProvider ----------------------------------------------------------------
    def acquire(self, key: TokenKey) -> Token:
        return run_sync(self._token_flow(key), self.endpoint)

    async def aacquire(self, key: TokenKey) -> Token:
        return await run_async(self._token_flow(key), self.endpoint)


def oauth2_provider(config: ProviderConfig) -> OAuth2Provider:
    """The ``oauth2`` factory, as registered through ``tokenbroker_register_providers``."""
    return OAuth2Provider(config)
