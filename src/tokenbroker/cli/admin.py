"""Operator commands: ``doctor``, ``backends``, ``plugins``, ``db``, ``encryption-key``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..backends.encrypted import EncryptedStore
from ..broker.assemble import open_store
from ..core.errors import ConfigError
from ..core.protocols import Store
from .app import app_option, choose_app, cli_config, main, scrub, state_of


@main.command()
def backends() -> None:
    """List the registered store URL schemes and the plugin that registered each."""
    from ..plugins.manager import backends as registry  # noqa: PLC0415

    entries = sorted(registry.entries().values(), key=lambda e: e.name)
    width = max((len(e.name) for e in entries), default=0)
    for entry in entries:
        click.echo(f"{entry.name.ljust(width)}  {entry.plugin}  {entry.description}".rstrip())


@main.command()
@click.option(
    "--instance", "instance_id", default=None, help="Also fetch a token for this instance."
)
@app_option
@click.pass_context
def doctor(ctx: click.Context, instance_id: str | None, app: str | None) -> None:
    """Check settings, plugins, store, schema, encryption, webhooks (and a token).

    Without --app every configured app is checked; --instance needs one app.
    """
    from .doctor import run_checks  # noqa: PLC0415

    config_path = state_of(ctx).config_path
    if app is not None or instance_id is not None:
        try:
            config = cli_config(ctx, require_secret=False)
        except ConfigError:
            config = None  # the settings check says what is wrong
        if config is not None:
            app = choose_app(config, app).name
    checks = run_checks(instance_id=instance_id, config_path=config_path, app=app)
    for check in checks:
        mark = click.style("✓", fg="green") if check.ok else click.style("✗", fg="red")
        click.echo(f"{mark} {check.name}: {scrub(check.detail)}")
    if not all(check.ok for check in checks):
        sys.exit(1)


@main.command()
def plugins() -> None:
    """List the loaded plugins: entry-point name, distribution, module.

    Exits 1 if any plugin failed to load (listed with FAILED and its error).
    """
    from ..plugins.manager import loaded_plugins  # noqa: PLC0415

    found = loaded_plugins()
    for plugin in found:
        dist = plugin.distribution or "-"
        if plugin.version:
            dist = f"{dist} {plugin.version}"
        state = f"  FAILED: {scrub(plugin.error)}" if plugin.error else ""
        click.echo(f"{plugin.name}\t{dist}\t{plugin.module}{state}")
    if any(plugin.error for plugin in found):
        sys.exit(1)


@main.group()
def db() -> None:
    """The store's schema: status and upgrade (SQL stores)."""


@contextmanager
def _store(app: str | None) -> Iterator[Store]:
    config = cli_config(require_secret=False)
    if app is not None:
        choose_app(config, app)  # the store is every app's: a name is only checked
    store = open_store(config.store, config.encryption_key)
    try:
        yield store
    finally:
        store.close()


def _sql(store: Store) -> Any:
    from ..backends.sql import SQLStore  # noqa: PLC0415

    inner = store.inner if isinstance(store, EncryptedStore) else store
    return inner if isinstance(inner, SQLStore) else None


@db.command("status")
@app_option
def db_status(app: str | None) -> None:
    """Show the store URL and its schema version (the store is every app's)."""
    from ..backends.sql import SCHEMA_VERSION  # noqa: PLC0415

    with _store(app) as store:
        sql = _sql(store)
        click.echo(f"store: {store.url}")
        if sql is None:
            click.echo("schema: none (this backend keeps no schema)")
            return
        found = sql.schema_version()
        state = "not created yet" if found is None else f"version {found}"
        click.echo(f"schema: {state}; this tokenbroker writes version {SCHEMA_VERSION}")


@db.command("upgrade")
@app_option
def db_upgrade(app: str | None) -> None:
    """Create the tables, or upgrade them to this tokenbroker's schema version."""
    with _store(app) as store:
        sql = _sql(store)
        if sql is None:
            click.echo(f"{store.url}: nothing to upgrade (this backend keeps no schema)")
            return
        before, after = sql.upgrade()
        if before == after:
            click.echo(f"{store.url}: schema version {after}, up to date")
        elif before is None:
            click.echo(f"{store.url}: tables created at schema version {after}")
        else:
            click.echo(f"{store.url}: upgraded from schema version {before} to {after}")


@main.command("encryption-key")
def encryption_key() -> None:
    """Print a new Fernet key for TOKENBROKER_ENCRYPTION_KEY."""
    from ..backends.encrypted import new_key  # noqa: PLC0415

    try:
        key = new_key()
    except ImportError:  # cryptography is an optional dependency
        raise ConfigError(
            "encryption keys need the cryptography package, which is not installed; "
            "install it with: pip install 'tokenbroker[encryption]'"
        ) from None
    click.echo(key)
