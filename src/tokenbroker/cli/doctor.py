"""``tokenbroker doctor``: is everything in place? Each check says what it found."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import attrs

from ..core.errors import TokenBrokerError


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(
    environ: Mapping[str, str] | None = None, *, instance_id: str | None = None
) -> list[Check]:
    """Run every check; a failed one does not stop the ones that do not depend on it."""
    from ..broker.broker import TokenBroker  # noqa: PLC0415
    from ..plugins.manager import loaded_plugins  # noqa: PLC0415
    from ..settings import Settings  # noqa: PLC0415

    env = os.environ if environ is None else environ
    checks: list[Check] = []
    try:
        settings = Settings.from_env(env)
    except TokenBrokerError as exc:
        return [Check("settings", False, str(exc))]
    checks.append(Check("settings", True, f"app {settings.app_id}, API {settings.api_url}"))

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
        broker = TokenBroker.from_env(env)
    except TokenBrokerError as exc:
        checks.append(Check("store", False, str(exc)))
        return checks
    with broker:
        checks.extend(_store_checks(broker))
        checks.append(_encryption_check(settings.encryption_key is not None))
        checks.append(_webhook_check(broker, settings.public_key is not None))
        if instance_id is not None:
            try:
                token = broker.token(instance_id)
            except TokenBrokerError as exc:
                checks.append(Check("token", False, f"{instance_id}: {exc}"))
            else:
                checks.append(
                    Check(
                        "token",
                        True,
                        f"{instance_id}: token {token.fingerprint}, "
                        f"expires {token.expires_at:%Y-%m-%d %H:%M:%S} UTC",
                    )
                )
    return checks


def _store_checks(broker: object) -> list[Check]:
    from ..backends.sql import SCHEMA_VERSION, SQLStore  # noqa: PLC0415
    from ..broker.broker import TokenBroker  # noqa: PLC0415

    assert isinstance(broker, TokenBroker)
    store = broker.store
    try:
        count = len(broker.installations())
    except TokenBrokerError as exc:
        return [Check("store", False, str(exc))]
    checks = [Check("store", True, f"{store.url} answers; {count} active installation(s)")]
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


def _encryption_check(enabled: bool) -> Check:
    detail = "tokens are encrypted at rest" if enabled else "off (TOKENBROKER_ENCRYPTION_KEY unset)"
    return Check("encryption", True, detail)


def _webhook_check(broker: object, configured: bool) -> Check:
    from ..broker.broker import TokenBroker  # noqa: PLC0415

    assert isinstance(broker, TokenBroker)
    if not configured:
        return Check("webhooks", True, "off (TOKENBROKER_APP_PUBLIC_KEY unset)")
    try:
        broker.verifier  # noqa: B018 - loading the key is the check
    except TokenBrokerError as exc:
        return Check("webhooks", False, str(exc))
    return Check("webhooks", True, "public key loaded (RS256)")
