"""What the emulated Wix remembers: the app's credentials, installations, issued tokens.

``_Records`` is the root of ``WixEmulator``'s bases: its lock guards every record here
and every counter the subclasses add, so one hold sees them all consistent.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from . import checks
from .installation import DEFAULT_PERMISSIONS, _Installation, make_installation


def checked(check: Callable[[str, Any], object]) -> Callable[[Any, Any, Any], None]:
    """An attrs validator from one of ``checks``, naming the knob as it is passed."""

    def validate(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        check(attribute.alias or attribute.name, value)

    return validate


def _callable(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r}")


def _max_tokens(name: str, value: object) -> None:
    checks.integer(name, value, low=1)


@attrs.define
class _IssuedToken:
    """A token Wix gave out: to the app (Create Access Token) or by ``issue_token``."""

    instance_id: str
    expires_at: float
    issued_at: float = 0.0
    subject_type: str = "APP"
    subject_id: str = ""
    client_id: str = ""
    revoked: bool = False


@attrs.define(eq=False, repr=False)
class _Records:
    """Credentials, installations and tokens; what changes is guarded by ``_lock``."""

    _app_id: str = attrs.field(default="demo-app-id", validator=checked(checks.text))
    _app_secret: str = attrs.field(default="demo-app-secret", validator=checked(checks.text))
    _token_lifetime: float = attrs.field(
        default=14400, kw_only=True, validator=checked(checks.positive)
    )
    _clock: Callable[[], float] = attrs.field(
        default=time.time, kw_only=True, validator=checked(_callable)
    )
    # Issued tokens are remembered up to this many, the oldest forgotten first, so a
    # long-running emulator does not grow without bound.
    _max_tokens: int = attrs.field(default=10_000, kw_only=True, validator=checked(_max_tokens))

    # The emulator's only lock: the subclass builds its condition on it, so one hold
    # covers these records and its counters alike (reset_counters clears both at once).
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _installations: dict[str, _Installation] = attrs.field(init=False, factory=dict)
    # In issue order (dicts keep it), so the first is the one to forget.
    _tokens: dict[str, _IssuedToken] = attrs.field(init=False, factory=dict)
    _tokens_by_instance: dict[str, collections.deque[str]] = attrs.field(init=False, factory=dict)

    @property
    def app_id(self) -> str:
        return self._app_id

    @property
    def token_lifetime(self) -> float:
        """``expires_in`` given to tokens issued from now on: seconds, finite, positive."""
        with self._lock:
            return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: float) -> None:
        checks.positive("token_lifetime", value)
        with self._lock:
            self._token_lifetime = value

    # -- installations ---------------------------------------------------------------

    def install(
        self,
        instance_id: str,
        *,
        app_name: str = "Demo App",
        site_id: str | None = None,
        site_display_name: str = "Demo Site",
        app_version: str = "latest",
        billing: Mapping[str, Any] | None = None,
        permissions: Sequence[str] = DEFAULT_PERMISSIONS,
        available_plans: Sequence[Mapping[str, Any]] = (),
        origin_instance_id: str | None = None,
        free_trial_available: bool = False,
        locale: str = "en",
        payment_currency: str = "USD",
        url: str | None = None,
        description: str | None = None,
        installed_wix_apps: Sequence[str] = (),
        owner_email: str | None = None,
        owner_id: str | None = None,
        account_id: str | None = None,
    ) -> None:
        """Install the app on an instance (again, if it was installed before).

        The options are what Get App Instance answers (its documented fields):

        * ``app_name``, ``app_version``: ``instance.appName``, ``instance.appVersion``.
        * ``billing``: ``instance.billing`` as a JSON mapping (``packageName``,
          ``billingCycle``, ...); given, the instance is paid (``isFree`` false) and its
          ``packageName`` is the ``vendorProductId`` Token Info and the signed instance
          carry. None (the default) is a free instance, sent without billing.
        * ``permissions``, ``available_plans``: ``instance.permissions`` (strs) and
          ``instance.availablePlans`` (mappings such as ``{"packageName": ...}``).
        * ``origin_instance_id``: the instance this one was cloned from; given, it is
          sent with ``copiedFromTemplate`` true.
        * ``free_trial_available``: ``instance.freeTrialAvailable``.
        * ``site_id``: ``site.siteId``; by default a UUID fixed by the instance ID.
        * ``site_display_name``, ``locale``, ``payment_currency``, ``description``,
          ``installed_wix_apps``: the ``site`` fields of those names.
        * ``url``: ``site.url``, sent only when given (a published site).
        * ``owner_email``: sent as ``site.ownerInfo`` only when given.
        * ``owner_id``: the site owner's user ID (``siteOwnerId`` and the default
          ``uid`` of a signed instance); by default a UUID fixed by the instance ID.
        * ``account_id``: Token Info's ``accountId``; by default ``owner_id``.
        """
        installation = make_installation(
            instance_id,
            app_name=app_name,
            site_id=site_id,
            site_display_name=site_display_name,
            app_version=app_version,
            billing=billing,
            permissions=permissions,
            available_plans=available_plans,
            origin_instance_id=origin_instance_id,
            free_trial_available=free_trial_available,
            locale=locale,
            payment_currency=payment_currency,
            url=url,
            description=description,
            installed_wix_apps=installed_wix_apps,
            owner_email=owner_email,
            owner_id=owner_id,
            account_id=account_id,
        )
        with self._lock:
            self._installations[installation.instance_id] = installation

    def uninstall(self, instance_id: str) -> None:
        """Remove an installation and revoke its tokens; a no-op if not installed."""
        with self._lock:
            self._installations.pop(instance_id, None)
            self._revoke_instance_locked(instance_id)

    @property
    def installed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._installations)

    # -- tokens ----------------------------------------------------------------------

    def revoke(self, access_token: str) -> None:
        """Make one token unusable; unknown tokens are ignored."""
        with self._lock:
            issued = self._tokens.get(access_token)
            if issued is not None:
                issued.revoked = True

    def revoke_instance(self, instance_id: str) -> None:
        """Revoke every token issued for an instance; the installation stays."""
        with self._lock:
            self._revoke_instance_locked(instance_id)

    def _revoke_instance_locked(self, instance_id: str) -> None:
        for token in self._tokens_by_instance.get(instance_id, ()):
            self._tokens[token].revoked = True

    def issued_tokens_for(self, instance_id: str) -> list[str]:
        """The tokens issued for the instance, oldest first, revoked or expired too.

        Both kinds: the app's (Create Access Token) and those of ``issue_token``. Only
        the newest ``max_tokens`` tokens (across all instances) are remembered; a
        forgotten token is unknown to the endpoints, as a purged one is to Wix.
        """
        with self._lock:
            return list(self._tokens_by_instance.get(instance_id, ()))

    def _issue_locked(self, token: str, issued: _IssuedToken) -> None:
        self._tokens[token] = issued
        self._tokens_by_instance.setdefault(issued.instance_id, collections.deque()).append(token)
        while len(self._tokens) > self._max_tokens:
            oldest = next(iter(self._tokens))
            instance_id = self._tokens.pop(oldest).instance_id
            # Tokens are issued in one order, so the oldest overall is its instance's oldest.
            per_instance = self._tokens_by_instance[instance_id]
            per_instance.popleft()
            if not per_instance:
                del self._tokens_by_instance[instance_id]

    def _live_token_locked(self, token: str) -> _IssuedToken | str:
        """The token's record if it is usable now, else why not."""
        issued = self._tokens.get(token)
        if issued is None:
            return "Unknown access token"
        if issued.revoked:
            return "The access token was revoked"
        if self._clock() >= issued.expires_at:
            return "The access token has expired"
        if issued.instance_id not in self._installations:
            return "The app is no longer installed on this instance"
        return issued
