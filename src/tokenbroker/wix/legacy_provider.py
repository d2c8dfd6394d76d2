"""The ``wix-legacy`` provider: access tokens from each installation's refresh token.

``acquire`` reads the installation's refresh token from the store, swaps it for an
access token at ``POST /oauth/access`` (see ``legacy_wire`` for the wire and the
sources of every fact), and keeps the refresh token Wix answers with. Its state per
installation is that refresh token, stored as a ``Token`` under the reserved key
``wix-legacy~refresh:<app id>:<instance id>`` in the broker's own store, so it is
encrypted whenever the broker's store is (the encrypting wrapper seals every token it
is handed), shared by every process, and never in the near cache.

Rotation is kept atomically: the stored record's ``obtained_at`` is its version, each
new refresh token is written with a version later than the one it was swapped for
(``next_version``), and the store's compare-and-set keeps the latest. Refreshes of one
installation are serialised by the engine (single-flight, then the fleet lease on the
access token's key); this provider takes no lease of its own, so the two keys can never
wait on each other. Should two refreshes still overlap (a lapsed lease, degraded mode)
and Wix refuse a refresh token another process already swapped, the stored one is read
again and tried once more. A refusal of the stored one means the grant is gone: the
installation must be installed again (``InstanceNotInstalled``; its health turns dead
until the new install's code is exchanged).

A refresh token that Wix answered but the store could not take (an outage) is kept in
this process (bounded) and written on the next refresh of that installation, so a
rotation is never lost to a failed write. Refresh tokens and codes never reach a log
line, an error or a repr: every text taken from Wix's answers is scrubbed of those in
flight, as of the app secret.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

import httpx2

from ..core.breaker import CircuitBreaker
from ..core.credentials import guarded
from ..core.errors import (
    ConfigError,
    InstanceNotInstalled,
    StorageError,
    with_request_id,
)
from ..core.flow import Flow, run_async, run_sync
from ..core.ops import DeleteToken, GetToken, PutToken
from ..core.policy import RefreshPolicy
from ..core.protocols import ProviderConfig, Store
from ..core.retry import RetryBudget
from ..core.secret import scrub_secrets
from ..core.token import Token, TokenKey, validate_id
from .errors import NotInstalledRules
from .legacy_state import NAME, InFlight, Unsaved, default_lifetime
from .legacy_wire import (
    REFRESH,
    REQUEST,
    AuthorizationCodeRefused,
    access_request,
    code_body,
    legacy_rules,
    next_version,
    parse_answer,
    refresh_body,
    refresh_key,
    refresh_record,
)
from .provider import WixProvider

log = logging.getLogger("tokenbroker.wix")

_MAX_MESSAGE: Final = 300


class LegacyProvider(WixProvider):
    """Gets Wix access tokens with each installation's stored refresh token (legacy OAuth).

    Needs the app secret and a store: ``config.store`` (the broker's, which encrypts
    when a key is set) unless ``store`` is given. ``config.options`` may set
    ``default_lifetime``: the seconds an access token is taken to live when Wix's answer
    does not say (default 300, Wix's documented 5 minutes; 30 to 3600). It is a
    ``WixProvider`` otherwise: Send BI Event, Get App Instance and the credentials
    breaker work as they do there.
    """

    name = NAME

    def __init__(
        self,
        config: ProviderConfig,
        *,
        store: Store | None = None,
        retry: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
        not_installed: NotInstalledRules | None = None,
    ) -> None:
        self.default_lifetime = default_lifetime(config.options)
        if not config.app_secret or not config.app_secret.reveal().strip():
            raise ConfigError(
                f"the {NAME} provider needs the app secret (it is the client_secret of "
                "Wix's /oauth/access)"
            )
        found = store if store is not None else config.store
        if found is None:
            raise ConfigError(
                f"the {NAME} provider keeps each installation's refresh token in the "
                "broker's store, and was given none (ProviderConfig.store)"
            )
        self.store: Store = found
        """Where refresh tokens are kept; also the port of this provider's store ops."""
        self._in_flight = InFlight()
        self._unsaved = Unsaved()
        super().__init__(
            config, retry=retry, breaker=breaker, not_installed=legacy_rules(not_installed)
        )

    def __repr__(self) -> str:
        return f"LegacyProvider(app_id={self.app_id!r}, api_url={self.api_url!r})"

    @property
    def max_fetch_seconds(self) -> float:
        """The longest one ``acquire`` can take: two calls (a refused refresh token is
        tried once more with the stored one), each within its retry budget."""
        return 2 * self.http.max_call_seconds

    async def aready(self) -> None:
        """Build the HTTP clients' TLS context off the loop (it is its own HTTP port)."""
        await self.http.aready()

    @property
    def unsaved(self) -> int:
        """Refresh tokens this process holds because the store could not take them."""
        return len(self._unsaved)

    def _scrub(self, text: str) -> str:
        hidden = [self.app_secret.reveal(), *self._in_flight.values()]
        return scrub_secrets(text, hidden)[:_MAX_MESSAGE]

    def _check(self, key: TokenKey) -> None:
        if key.app_id != self.app_id:
            raise ConfigError(f"this provider serves app {self.app_id!r}, not {key.app_id!r}")

    # -- sending -----------------------------------------------------------------------
    def _send_flow(self, body: dict[str, str], what: str, grant: str) -> Flow[httpx2.Response]:
        """One call of ``/oauth/access`` within the retry budget, the breaker and the
        credentials breaker, with ``grant`` (a code or refresh token) hidden meanwhile."""
        request = access_request(self.api_url, body)

        def send() -> Flow[httpx2.Response]:
            with self._in_flight.holding(grant):
                return (yield from self.http.request_flow(request, what))

        return (
            yield from guarded(
                self.credentials,
                send(),
                what=what,
                refused=f"Wix refused app {self.app_id}'s credentials",
                log=log,
            )
        )

    # -- the refresh token in the store ---------------------------------------------------
    def _record_flow(self, rkey: TokenKey) -> Flow[Token | None]:
        """The installation's current refresh token: the stored one, or the one this
        process holds unsaved when that is newer (written now if the store takes it)."""
        pending = self._unsaved.get(rkey)
        try:
            stored: Token | None = yield from GetToken(rkey)
        except StorageError:
            if pending is None:
                raise
            return pending  # the store is down: go on with the one held here
        if pending is None:
            return stored
        if stored is not None and stored.obtained_at >= pending.obtained_at:
            self._unsaved.settled(stored)
            return stored
        try:
            written = yield from PutToken(pending)
        except StorageError:
            return pending
        self._unsaved.settled(pending)
        if written:
            log.info("stored the refresh token of %s that an earlier write lost", rkey)
            return pending
        return (yield from GetToken(rkey))  # a newer one landed meanwhile

    def _keep_flow(
        self, rkey: TokenKey, refresh_token: str, after: Token | None, now: float
    ) -> Flow[bool]:
        """Store ``refresh_token``, newer than ``after`` (``None``: a code exchange, whose
        new grant replaces whatever is stored); whether it is the stored one now.

        A store that cannot take it leaves it with this process (``_unsaved``), logged;
        a code exchange then raises the store's error, saying so."""
        record = refresh_record(rkey, refresh_token, next_version(after, now))
        for _ in range(3):
            try:
                written = yield from PutToken(record)
            except StorageError as exc:
                self._unsaved.keep(record)
                reason = scrub_secrets(str(exc), [refresh_token])
                if after is None:
                    raise type(exc)(
                        f"{REQUEST}: Wix issued the refresh token of {rkey.instance_id}, but "
                        f"the store could not take it ({reason}); this process keeps it and "
                        "stores it with its next refresh of that installation"
                    ) from None
                log.warning(
                    "the new refresh token of %s could not be stored (%s); this process "
                    "keeps it and stores it with the next refresh",
                    rkey,
                    reason,
                )
                return False
            if written:
                self._unsaved.settled(record)
                return True
            if after is not None:
                # What is stored now came from a later grant or swap: it is kept.
                log.info("a newer refresh token of %s was stored meanwhile; it is kept", rkey)
                return False
            stored = yield from GetToken(rkey)
            record = refresh_record(rkey, refresh_token, next_version(stored, now))
        raise StorageError(f"the refresh token of {rkey} kept being replaced while it was stored")

    # -- the refresh -----------------------------------------------------------------------
    def _token_flow(self, key: TokenKey) -> Flow[Token]:
        self._check(key)
        rkey = refresh_key(key)
        record = yield from self._record_flow(rkey)
        if record is None:
            raise InstanceNotInstalled(
                f"{REFRESH}: no refresh token is stored for {key.instance_id}: its install "
                "was never completed here (tokenbroker legacy exchange), or it was removed; "
                "the site owner must install the app again",
                status=None,
            )
        obtained = self._clock.time()  # counted from before the request: errs early
        body = refresh_body(self.app_id, self._secret.reveal(), record.access_token)
        try:
            response = yield from self._send_flow(body, REFRESH, record.access_token)
        except InstanceNotInstalled as refused:
            again = yield from self._record_flow(rkey)
            if again is None or again.access_token == record.access_token:
                raise self._grant_gone(key, refused) from refused
            # Another process swapped it after we read it: try the stored one, once.
            log.info(
                "%s: Wix refused the refresh token of %s that another process had "
                "swapped; trying the stored one",
                REFRESH,
                key.instance_id,
            )
            record = again
            obtained = self._clock.time()
            body = refresh_body(self.app_id, self._secret.reveal(), record.access_token)
            try:
                response = yield from self._send_flow(body, REFRESH, record.access_token)
            except InstanceNotInstalled as refused_again:
                raise self._grant_gone(key, refused_again) from refused_again
        with self._in_flight.holding(record.access_token):
            answer = parse_answer(
                key,
                response,
                obtained,
                what=REFRESH,
                default_lifetime=self.default_lifetime,
                scrub=self._scrub,
                need_refresh=False,
            )
        if answer.refresh_token is not None and answer.refresh_token != record.access_token:
            yield from self._keep_flow(rkey, answer.refresh_token, record, obtained)
        return answer.token

    def _grant_gone(self, key: TokenKey, refused: InstanceNotInstalled) -> InstanceNotInstalled:
        said = str(refused).removesuffix(with_request_id("", refused.request_id))
        return InstanceNotInstalled(
            f"{said}; the refresh token of {key.instance_id} is refused, so its grant is "
            "gone: the site owner must install the app again (and its new code be exchanged)",
            status=refused.status,
            wix_message=refused.wix_message,
            code=refused.code,
            request_id=refused.request_id,
        )

    def acquire(self, key: TokenKey) -> Token:
        return run_sync(self._token_flow(key), self)

    async def aacquire(self, key: TokenKey) -> Token:
        return await run_async(self._token_flow(key), self)

    # -- the install (see tokenbroker.wix.legacy.complete_install) ----------------------------
    def exchange_flow(self, key: TokenKey, code: str, policy: RefreshPolicy) -> Flow[Token]:
        """Swap an install's authorization code for its refresh token (stored, replacing
        any older grant's) and a first access token (stamped by ``policy``, stored)."""
        self._check(key)
        rkey = refresh_key(key)
        obtained = self._clock.time()
        body = code_body(self.app_id, self._secret.reveal(), code)
        try:
            response = yield from self._send_flow(body, REQUEST, code)
        except InstanceNotInstalled as refused:
            said = str(refused).removesuffix(with_request_id("", refused.request_id))
            raise AuthorizationCodeRefused(
                f"{said}; the authorization code for {key.instance_id} is refused: it was "
                "used already, is more than 10 minutes old, or is not this app's",
                status=refused.status,
                wix_message=refused.wix_message,
                code=refused.code,
                request_id=refused.request_id,
            ) from refused
        with self._in_flight.holding(code):
            answer = parse_answer(
                key,
                response,
                obtained,
                what=REQUEST,
                default_lifetime=self.default_lifetime,
                scrub=self._scrub,
                need_refresh=True,
            )
        assert answer.refresh_token is not None  # need_refresh
        yield from self._keep_flow(rkey, answer.refresh_token, None, obtained)
        token = policy.stamp(answer.token)
        try:
            yield from PutToken(token)
        except StorageError as exc:  # a cache of a 5-minute token: the grant is what counts
            log.warning("the first access token of %s was not stored: %s", key, exc)
        return token

    # -- forgetting -------------------------------------------------------------------------
    def _forget_flow(self, instance_id: str, before: datetime | None) -> Flow[bool]:
        rkey = refresh_key(TokenKey(self.name, self.app_id, validate_id(instance_id)))
        if before is None:
            self._unsaved.discard(rkey)
            return (yield from DeleteToken(rkey))
        pending = self._unsaved.get(rkey)
        if pending is not None and pending.obtained_at <= before:
            self._unsaved.settled(pending)
        stored = yield from GetToken(rkey)
        if stored is None or stored.obtained_at > before:
            return False  # none, or a grant from after the removal (a later install)
        return (yield from DeleteToken(rkey, only=stored.access_token))

    def forget(self, instance_id: str, *, before: datetime | None = None) -> bool:
        """Delete the installation's refresh token (it was removed); whether one was.

        With ``before`` (a removal's time), only one obtained by then: a late removal
        never deletes the grant of a later install.
        """
        return run_sync(self._forget_flow(instance_id, before), self)

    async def aforget(self, instance_id: str, *, before: datetime | None = None) -> bool:
        """The async twin of ``forget``."""
        return await run_async(self._forget_flow(instance_id, before), self)

    def has_grant(self, instance_id: str) -> bool:
        """Whether a refresh token is stored (or held unsaved) for the installation."""
        rkey = refresh_key(TokenKey(self.name, self.app_id, validate_id(instance_id)))
        return run_sync(self._record_flow(rkey), self) is not None
