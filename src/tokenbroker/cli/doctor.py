"""``tokenbroker doctor``: is everything in place? Each check says what it found."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from ..core.errors import TokenBrokerError

if TYPE_CHECKING:
    from ..broker.broker import TokenBroker
    from ..broker.brokers import TokenBrokers
    from ..config import Config


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(
    environ: Mapping[str, str] | None = None,
    *,
    instance_id: str | None = None,
    config_path: str | None = None,
    app: str | None = None,
) -> list[Check]:
    """Run every check; a failed one does not stop the ones that do not depend on it.

    The store, the schema and encryption are checked once; the webhook key of each
    app (``app`` alone, when given); ``instance_id``'s token with ``app``'s broker
    (or the only app's).
    """
    from ..broker.brokers import TokenBrokers  # noqa: PLC0415
    from ..config import resolve_config  # noqa: PLC0415
    from ..plugins.manager import loaded_plugins  # noqa: PLC0415

    env = os.environ if environ is None else environ
    checks: list[Check] = []
    try:
        config = resolve_config(config_path, env)
        if app is not None:
            config = attrs.evolve(config, apps={app: config.app(app)})
    except TokenBrokerError as exc:
        return [Check("settings", False, str(exc))]
    checks.append(Check("settings", True, _describe(config)))

    plugins = loaded_plugins()
    broken = [p for p in plugins if p.error]
    checks.append(
        Check(
            "plugins",
            not broken,
            "; ".join(f"{p.name}: {p.error}" for p in broken) or ", ".join(p.name for p in plugins),
        )
    )
    try:
        brokers = TokenBrokers(config)
    except TokenBrokerError as exc:
        checks.append(Check("store", False, str(exc)))
        return checks
    with brokers:
        checks.extend(_store_checks(brokers))
        from_env = config.source == "environment"
        checks.append(
            _encryption_check(
                config.encryption_key is not None,
                "TOKENBROKER_ENCRYPTION_KEY unset" if from_env else "no encryption_key",
            )
        )
        for name, broker in brokers.items():
            label = "webhooks" if len(brokers) == 1 else f"webhooks {name}"
            unset = (
                "TOKENBROKER_APP_PUBLIC_KEY unset" if from_env else f"apps.{name}: no public_key"
            )
            public_key = config.apps[name].public_key is not None
            checks.append(_webhook_check(broker, public_key, label, unset))
        if instance_id is not None:
            checks.append(_token_check(brokers.only(), instance_id))
    return checks


def _describe(config: Config) -> str:
    if config.source == "environment":
        (app,) = config.apps.values()
        return f"app {app.app_id}, API {app.api_url}"
    apps = ", ".join(f"{name} ({app.app_id}, {app.provider})" for name, app in config.apps.items())
    return f"{config.source}: {len(config.apps)} app(s): {apps}"


def _token_check(broker: TokenBroker, instance_id: str) -> Check:
    try:
        token = broker.token(instance_id)
    except TokenBrokerError as exc:
        return Check("token", False, f"{instance_id}: {exc}")
    return Check(
        "token",
        True,
        f"{instance_id}: token {token.fingerprint}, "
        f"expires {token.expires_at:%Y-%m-%d %H:%M:%S} UTC",
    )


def _store_checks(brokers: TokenBrokers) -> list[Check]:
    from ..backends.sql import SCHEMA_VERSION, SQLStore  # noqa: PLC0415

    store = brokers.store
    try:
        counts = {name: len(broker.installations()) for name, broker in brokers.items()}
    except TokenBrokerError as exc:
        return [Check("store", False, str(exc))]
    if len(counts) == 1:
        count = f"{next(iter(counts.values()))} active installation(s)"
    else:
        count = "active installations: " + ", ".join(f"{n} {c}" for n, c in counts.items())
    checks = [Check("store", True, f"{store.url} answers; {count}")]
    inner = getattr(store, "inner", store)
    if isinstance(inner, SQLStore) and inner.sqlite_path is not None:
        checks.append(_private_files_check(inner.sqlite_path))
    if isinstance(inner, SQLStore):
        found = inner.schema_version()
        if found == SCHEMA_VERSION:
            checks.append(Check("schema", True, f"version {found}"))
        else:
            checks.append(
                Check(
                    "schema",
                    False,
                    f"version {found}, expected {SCHEMA_VERSION}: run tokenbroker db upgrade",
                )
            )
    return checks


# SQLite's siblings of the database file: they hold its pages, tokens included.
_SQLITE_SIBLINGS: Final = ("-wal", "-shm", "-journal")


def _private_files_check(path: Path) -> Check:
    """The SQLite files hold tokens: none may be open to the group or to others."""
    exposed = []
    for candidate in (path, *(path.with_name(path.name + end) for end in _SQLITE_SIBLINGS)):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except OSError:
            continue  # not there (SQLite removes its siblings when the last connection closes)
        if mode & 0o077:
            exposed.append(f"{candidate} is mode {mode:04o}")
    if exposed:
        return Check(
            "file permissions",
            False,
            f"{'; '.join(exposed)}: readable or writable by group or others, and it "
            f"holds tokens; run chmod 600 {path}* (and chmod 700 {path.parent})",
        )
    return Check("file permissions", True, f"{path} is private to its owner")


def _encryption_check(enabled: bool, unset: str) -> Check:
    detail = "tokens are encrypted at rest" if enabled else f"off ({unset})"
    return Check("encryption", True, detail)


def _webhook_check(broker: TokenBroker, configured: bool, label: str, unset: str) -> Check:
    if not configured:
        return Check(label, True, f"off ({unset})")
    try:
        broker.verifier  # noqa: B018 - loading the key is the check
    except TokenBrokerError as exc:
        return Check(label, False, str(exc))
    return Check(label, True, "public key loaded (RS256)")
