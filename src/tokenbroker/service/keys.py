"""Service keys: who may call the token API and the proxy, kept (hashed) in the store.

A key looks like ``tbk_<name>_<secret>``: ``name`` is the key's name (a slug, so the
key says which record to check: one store read, not a scan), ``secret`` 43 url-safe
characters from ``secrets.token_urlsafe(32)``, 256 bits of entropy. The whole key is
shown once, by ``add``; the store keeps only its SHA-256.

Why SHA-256, and not a password hash or an HMAC: a slow hash (bcrypt, scrypt, argon2)
protects secrets people choose, which are few enough to try one by one; a key with
256 random bits cannot be found from its hash by trying, slow hash or not, and a slow
hash would only slow every request. An HMAC would need a secret that every ``serve``
of the fleet shares, one more thing to leak and to rotate, and adds nothing against
someone who reads the store when the key itself has full entropy. The check compares
digests with ``hmac.compare_digest`` (constant time), and an unknown name is compared
against a dummy digest too, so a refusal takes the same work whatever the reason.

Where the keys are kept: one reserved installation record per key, under the app id
``tokenbroker~service-keys`` (the way of ``tokenbroker~meta`` and the health records),
with ``extra = {"hash", "apps", "scopes", "created_at", "revoked_at"}``. Every process
on the store sees the same keys. Revoking writes a newer record with the status
``removed``; each process caches what it read for at most ``cache_ttl`` seconds
(default 2), so a revoked key is refused everywhere within that.

Scopes: ``proxy`` lets a key call Wix through the proxy (it never sees a token);
``token`` lets it read raw tokens, and implies ``proxy``: whoever can read the token
can call Wix with it anyway, so refusing it the proxy would protect nothing.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import attrs

from ..core.clock import Clock, SystemClock, to_datetime
from ..core.errors import ConfigError
from ..core.flow import Flow, run_async, run_sync
from ..core.installation import Installation, InstallationStatus
from ..core.ops import AcquireLease, GetInstallation, PutInstallation, ReleaseLease
from ..core.protocols import Store
from ..core.token import TokenKey

KEYS_APP: Final = "tokenbroker~service-keys"
"""The reserved app id under which service keys are kept."""
PREFIX: Final = "tbk_"
SECRET_BYTES: Final = 32
SECRET_CHARS: Final = 43  # len(secrets.token_urlsafe(32))
TOKEN: Final = "token"  # noqa: S105 - a scope's name
PROXY: Final = "proxy"
SCOPES: Final = (TOKEN, PROXY)
DEFAULT_SCOPES: Final = (PROXY,)
DEFAULT_CACHE_TTL: Final = 2.0
MAX_CACHE_TTL: Final = 60.0
DEFAULT_CACHE_SIZE: Final = 4096
_ADD_LEASE_TTL: Final = 30.0

NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
"""A key's name, and an app's: the config file's slug."""
KEY: Final = re.compile(
    rf"{PREFIX}(?P<name>[a-z][a-z0-9_-]{{0,62}})_(?P<secret>[A-Za-z0-9_-]{{{SECRET_CHARS}}})"
)
_DUMMY: Final = "sha256:" + "0" * 64


def digest(key: str) -> str:
    """What the store keeps of ``key``: ``sha256:<hex>`` (see the module)."""
    return "sha256:" + hashlib.sha256(key.encode("ascii")).hexdigest()


def name_of(key: str) -> str | None:
    """The name a well-formed key carries, or ``None`` for anything else."""
    match = KEY.fullmatch(key)
    return match.group("name") if match is not None else None


def check_name(value: object, what: str = "service key name") -> str:
    """``value`` if it is a slug (``^[a-z][a-z0-9_-]{0,62}$``), else a ``ConfigError``."""
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        shown = repr(value)[:70]
        raise ConfigError(
            f"{what} {shown} is not a slug (a lowercase letter, then up to 62 of a-z, 0-9, _ or -)"
        )
    return value


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def check_scopes(scopes: Iterable[object]) -> tuple[str, ...]:
    """The scopes, each ``token`` or ``proxy``, at least one; else a ``ConfigError``."""
    if isinstance(scopes, str):
        scopes = (scopes,)
    found = []
    for scope in scopes:
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; the scopes are: {', '.join(SCOPES)}")
        found.append(str(scope))
    if not found:
        raise ConfigError("a service key needs at least one scope (token or proxy)")
    return _unique(found)


def check_apps(apps: Iterable[object]) -> tuple[str, ...]:
    """The app names, each a slug, at least one; else a ``ConfigError``."""
    if isinstance(apps, str):
        apps = (apps,)
    found = _unique(check_name(app, "app name") for app in apps)
    if not found:
        raise ConfigError("a service key must cover at least one app (--app NAME)")
    return found


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@attrs.frozen
class ServiceKey:
    """What the store knows of one key: never the key itself, only its digest."""

    name: str
    apps: tuple[str, ...]
    scopes: tuple[str, ...]
    created_at: datetime | None
    revoked_at: datetime | None = None
    digest: str = attrs.field(default=_DUMMY, repr=False)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        """Whether the key may use ``scope`` (``token`` implies ``proxy``)."""
        return scope in self.scopes or (scope == PROXY and TOKEN in self.scopes)

    def covers(self, app: str) -> bool:
        return app in self.apps

    def to_json(self) -> dict[str, Any]:
        """The key's record as shown by ``service-key list --json``: no digest."""
        return {
            "name": self.name,
            "apps": list(self.apps),
            "scopes": list(self.scopes),
            "created_at": _iso(self.created_at),
            "revoked_at": _iso(self.revoked_at),
            "active": self.active,
        }

    @classmethod
    def from_record(cls, record: Installation) -> ServiceKey | None:
        """The key a reserved record holds; ``None`` for a record that is not one."""
        extra = record.extra
        found = extra.get("hash")
        apps, scopes = extra.get("apps"), extra.get("scopes")
        if not isinstance(found, str) or not isinstance(apps, list) or not isinstance(scopes, list):
            return None
        try:
            return cls(
                name=record.instance_id,
                apps=check_apps(apps),
                scopes=check_scopes(scopes),
                created_at=record.installed_at,
                revoked_at=None if record.active else _revoked_at(record),
                digest=found,
            )
        except ConfigError:
            return None

    def record(self, updated_at: datetime) -> Installation:
        revoked = self.revoked_at is not None
        return Installation(
            app_id=KEYS_APP,
            instance_id=self.name,
            status=InstallationStatus.REMOVED if revoked else InstallationStatus.INSTALLED,
            installed_at=self.created_at,
            removed_at=self.revoked_at,
            updated_at=updated_at,
            extra={
                "hash": self.digest,
                "apps": list(self.apps),
                "scopes": list(self.scopes),
                "created_at": _iso(self.created_at),
                "revoked_at": _iso(self.revoked_at),
            },
        )


def _revoked_at(record: Installation) -> datetime:
    return record.removed_at or record.updated_at or to_datetime(0)


def _check_ttl(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"cache_ttl must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value <= MAX_CACHE_TTL:
        raise ConfigError(f"cache_ttl must be between 0 and {MAX_CACHE_TTL:g} seconds, not {value}")
    return float(value)


class ServiceKeys:
    """The service keys of every app on ``store``: add, list, revoke, authenticate.

    ``authenticate`` (and ``aauthenticate``) caches what it read of each name for
    ``cache_ttl`` seconds on ``clock`` (at most ``cache_size`` names), so a revoked
    key is refused by every process within ``cache_ttl``. A store outage is a
    ``StorageError``, never a refusal: a caller cannot tell an outage from a bad key.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ConfigError(
                f"cache_size must be a whole number of at least 1, not {cache_size!r}"
            )
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.cache_ttl = _check_ttl(cache_ttl)
        self._cache_size = cache_size
        self._cache: collections.OrderedDict[str, tuple[float, ServiceKey | None]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        # Bumped by every add and revoke here: a store read that began before one does
        # not put its (older) answer in the cache.
        self._generation = 0

    def __repr__(self) -> str:
        return f"ServiceKeys(store={self.store.url!r}, cache_ttl={self.cache_ttl:g})"

    # -- managing keys ----------------------------------------------------------------
    def add(self, name: str, apps: Iterable[str], scopes: Iterable[str] = DEFAULT_SCOPES) -> str:
        """Make a key; return it (the only time it is seen: only its digest is kept).

        A name in use by an active key is a ``ConfigError``: revoke that one first.
        """
        return run_sync(self._add_flow(name, apps, scopes), self)

    async def aadd(
        self, name: str, apps: Iterable[str], scopes: Iterable[str] = DEFAULT_SCOPES
    ) -> str:
        """The async twin of ``add``."""
        return await run_async(self._add_flow(name, apps, scopes), self)

    def _add_flow(self, name: str, apps: Iterable[str], scopes: Iterable[str]) -> Flow[str]:
        name, apps, scopes = check_name(name), check_apps(apps), check_scopes(scopes)
        # One writer per name at a time, fleet-wide: two `add`s of one name must not
        # both print a key when only the later record survives.
        lease = yield from AcquireLease(TokenKey(KEYS_APP, "add", name), _ADD_LEASE_TTL)
        if lease is None:
            raise ConfigError(f"service key {name!r} is being added by another process")
        try:
            stored = yield from GetInstallation(KEYS_APP, name)
            current = ServiceKey.from_record(stored) if stored is not None else None
            if current is not None and current.active:
                raise ConfigError(
                    f"service key {name!r} exists; revoke it first (tokenbroker "
                    f"service-key revoke {name})"
                )
            key = f"{PREFIX}{name}_{secrets.token_urlsafe(SECRET_BYTES)}"
            now = self._after(stored)
            made = ServiceKey(name, apps, scopes, created_at=now, digest=digest(key))
            yield from PutInstallation(made.record(now))
        finally:
            yield from ReleaseLease(lease)
        self._forget(name)
        return key

    def list(self, *, include_revoked: bool = True) -> list[ServiceKey]:
        """Every key, by name (revoked ones too unless ``include_revoked=False``)."""
        records = self.store.iter_installations(KEYS_APP, include_removed=include_revoked)
        found = (ServiceKey.from_record(record) for record in records)
        return sorted((key for key in found if key is not None), key=lambda key: key.name)

    def get(self, name: str) -> ServiceKey | None:
        """The key named ``name`` (active or revoked), or ``None``; never cached."""
        record = self.store.get_installation(KEYS_APP, check_name(name))
        return ServiceKey.from_record(record) if record is not None else None

    def revoke(self, name: str) -> ServiceKey:
        """Revoke the key named ``name``; an unknown name is a ``ConfigError``.

        Revoking a revoked key changes nothing. Every process refuses the key within
        its ``cache_ttl`` (this one at once)."""
        return run_sync(self._revoke_flow(name), self)

    async def arevoke(self, name: str) -> ServiceKey:
        """The async twin of ``revoke``."""
        return await run_async(self._revoke_flow(name), self)

    def _revoke_flow(self, name: str) -> Flow[ServiceKey]:
        name = check_name(name)
        stored = yield from GetInstallation(KEYS_APP, name)
        current = ServiceKey.from_record(stored) if stored is not None else None
        if current is None:
            raise ConfigError(f"there is no service key named {name!r}")
        if current.active:
            now = self._after(stored)
            current = attrs.evolve(current, revoked_at=now)
            yield from PutInstallation(current.record(now))
        self._forget(name)
        return current

    def _after(self, stored: Installation | None) -> datetime:
        """Now, or just after ``stored``'s time: the newer record always wins."""
        now = self.clock.time()
        if stored is not None and stored.updated_at is not None:
            now = max(now, stored.updated_at.timestamp() + 1e-3)
        return to_datetime(now)

    # -- checking keys ----------------------------------------------------------------
    def authenticate(self, presented: str) -> ServiceKey | None:
        """The active key ``presented`` is, or ``None`` (malformed, unknown, revoked,
        wrong secret: all alike). A store outage raises ``StorageError``."""
        return run_sync(self._authenticate_flow(presented), self)

    async def aauthenticate(self, presented: str) -> ServiceKey | None:
        """The async twin of ``authenticate``: never blocks the loop."""
        return await run_async(self._authenticate_flow(presented), self)

    def _authenticate_flow(self, presented: str) -> Flow[ServiceKey | None]:
        name = name_of(presented) if isinstance(presented, str) else None
        if name is None:
            return None
        cached, found = self._cached(name)
        if not cached:
            started, generation = self.clock.time(), self._generation
            record = yield from GetInstallation(KEYS_APP, name)
            found = ServiceKey.from_record(record) if record is not None else None
            self._remember(name, found, started, generation)
        expected = found.digest if found is not None else _DUMMY
        matches = hmac.compare_digest(expected, digest(presented))
        if found is None or not matches or not found.active:
            return None
        return found

    def _cached(self, name: str) -> tuple[bool, ServiceKey | None]:
        """``(True, key)`` for a cached name (``key`` ``None``: cached as unknown);
        ``(False, None)`` when it must be read."""
        now = self.clock.time()
        with self._lock:
            entry = self._cache.get(name)
            if entry is None:
                return False, None
            if not 0 <= now - entry[0] < self.cache_ttl:  # expired, or the clock went back
                del self._cache[name]
                return False, None
            return True, entry[1]

    def _remember(self, name: str, key: ServiceKey | None, started: float, generation: int) -> None:
        """Cache what a read begun at ``started`` found, dated from then (so a revocation
        elsewhere shows within ``cache_ttl``), unless a key changed here meanwhile."""
        if self.cache_ttl <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return
            self._cache.pop(name, None)
            while len(self._cache) >= self._cache_size:
                self._cache.popitem(last=False)
            self._cache[name] = (started, key)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._generation += 1
            self._cache.pop(name, None)


__all__ = [
    "DEFAULT_SCOPES",
    "KEYS_APP",
    "PROXY",
    "SCOPES",
    "TOKEN",
    "ServiceKey",
    "ServiceKeys",
    "check_apps",
    "check_name",
    "check_scopes",
    "digest",
    "name_of",
]
