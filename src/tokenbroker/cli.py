"""The ``tokenbroker`` command.

Errors are one line on stderr, never a traceback: exit status 1 for provider
and storage errors, 2 for usage and configuration errors. Tokens are printed
only where asked for (``tokenbroker token``); secrets never.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .client import TokenBroker
from .core.errors import ConfigError, TokenBrokerError
from .core.installation import Installation
from .settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, status: int) -> NoReturn:
    click.echo(f"tokenbroker: error: {message}", err=True)
    sys.exit(status)


def _scrub(text: str) -> str:
    """Last line of defence: no configured secret reaches the terminal."""
    secret = os.environ.get("TOKENBROKER_APP_SECRET")
    return text.replace(secret, "***") if secret else text


class _Group(click.Group):
    """Turns our errors into one clear line and the right exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _fail(_scrub(str(exc)), 2)
        except TokenBrokerError as exc:
            _fail(_scrub(str(exc)), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # an unexpected bug: still no traceback, no secret
            if os.environ.get("TOKENBROKER_DEBUG"):
                raise
            _fail(f"unexpected {type(exc).__name__}: {_scrub(str(exc))}", 1)


def _broker(require_secret: bool = True) -> TokenBroker:
    return TokenBroker.from_env() if require_secret else _registry_broker()


def _registry_broker() -> TokenBroker:
    """A broker for registry-only commands, which need no app secret."""
    settings = Settings.from_env(require_secret=False)
    return TokenBroker(
        app_id=settings.app_id,
        app_secret=settings.app_secret or "unused-for-registry-commands",
        store=settings.store,
        api_url=settings.api_url,
        encryption_key=settings.encryption_key,
    )


def _verbose(func: F) -> F:
    def callback(ctx: click.Context, param: click.Parameter, value: int) -> None:
        if value:
            logging.basicConfig(
                level=logging.DEBUG if value > 1 else logging.INFO,
                format="%(levelname)s %(name)s: %(message)s",
            )

    return click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=callback,
        help="Log what happens (-vv for debug).",
    )(func)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tokenbroker")
def main() -> None:
    """A valid Wix access token for every installation of your app.

    Configured by TOKENBROKER_APP_ID, TOKENBROKER_APP_SECRET (or
    TOKENBROKER_APP_SECRET_FILE), TOKENBROKER_STORE and TOKENBROKER_API_URL.
    """


@main.command()
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the expiry.")
@_verbose
def token(instance_id: str, as_json: bool) -> None:
    """Print a valid access token for INSTANCE_ID (the raw token alone)."""
    with _broker() as broker:
        tok = broker.token(instance_id)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "access_token": tok.access_token,
                    "token_type": tok.token_type,
                    "expires_at": tok.expires_at.isoformat(),
                    "instance_id": tok.instance_id,
                }
            )
        )
    else:
        click.echo(tok.access_token)


@main.command("finish-setup")
@click.argument("instance_id", required=False)
@click.option(
    "--pending", is_flag=True, help="Retry every installation whose automatic finish-setup failed."
)
@_verbose
def finish_setup(instance_id: str | None, pending: bool) -> None:
    """Tell Wix that INSTANCE_ID needs no more setup (APP_FINISHED_CONFIGURATION)."""
    if pending == (instance_id is not None):
        raise click.UsageError("give either INSTANCE_ID or --pending")
    with _broker() as broker:
        if instance_id is not None:
            broker.finish_setup(instance_id)
            click.echo(f"sent APP_FINISHED_CONFIGURATION for {instance_id}")
            return
        done = broker.retry_pending_setup()
    click.echo(f"sent APP_FINISHED_CONFIGURATION for {len(done)} pending installation(s)")


@main.group()
def installations() -> None:
    """The registry of installations (app instances)."""


def _row(inst: Installation) -> str:
    installed = inst.installed_at.isoformat(timespec="seconds") if inst.installed_at else "-"
    setup = "setup finished" if inst.setup_finished_at else "setup pending"
    return f"{inst.instance_id}\t{inst.status.value}\t{installed}\t{setup}"


@installations.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed installations.")
def installations_list(as_json: bool, include_removed: bool) -> None:
    """List recorded installations."""
    with _broker(require_secret=False) as broker:
        found = broker.installations(include_removed=include_removed)
    if as_json:
        click.echo(json.dumps([inst.to_json() for inst in found], indent=2))
        return
    for inst in found:
        click.echo(_row(inst))
    if not found:
        click.echo("no installations recorded", err=True)


@installations.command("add")
@click.argument("instance_ids", nargs=-1, required=True)
def installations_add(instance_ids: Sequence[str]) -> None:
    """Record installations by instance id (idempotent)."""
    with _broker(require_secret=False) as broker:
        for instance_id in instance_ids:
            broker.key(instance_id)  # validate them all before writing any
        for instance_id in instance_ids:
            broker.add_installation(instance_id)
            click.echo(f"recorded {instance_id}")


@installations.command("remove")
@click.argument("instance_ids", nargs=-1, required=True)
def installations_remove(instance_ids: Sequence[str]) -> None:
    """Mark installations removed and forget their tokens."""
    with _broker(require_secret=False) as broker:
        for instance_id in instance_ids:
            broker.key(instance_id)
        for instance_id in instance_ids:
            found = broker.remove_installation(instance_id)
            click.echo(f"removed {instance_id}" if found else f"{instance_id} was not recorded")


@main.command()
def backends() -> None:
    """List the registered store URL schemes and the plugin that registered each."""
    from .plugins.registry import backends as registry  # noqa: PLC0415

    entries = sorted(registry.entries().values(), key=lambda e: e.name)
    width = max((len(e.name) for e in entries), default=0)
    for entry in entries:
        click.echo(f"{entry.name.ljust(width)}  {entry.plugin}  {entry.description}".rstrip())


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1h30m`` → seconds."""
    import re  # noqa: PLC0415

    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 2h or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


if TYPE_CHECKING:
    _FloatParam = click.ParamType[float]
else:  # click < 8.2 has no generic ParamType
    _FloatParam = click.ParamType


class _Duration(_FloatParam):
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float | int):
            return float(value)
        try:
            return parse_duration(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


@main.command()
@click.option(
    "--within",
    type=_Duration(),
    default="30m",
    show_default=True,
    help="Refresh tokens that are missing or expire within this long.",
)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--watch", is_flag=True, help="Keep running, refreshing every --interval.")
@click.option(
    "--interval",
    type=_Duration(),
    default="5m",
    show_default=True,
    help="With --watch: time between runs.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: on when stderr is a terminal).",
)
@_verbose
def refresh(
    within: float, concurrency: int, watch: bool, interval: float, progress: bool | None
) -> None:
    """Refresh every installed instance whose token is missing or due."""
    import time  # noqa: PLC0415

    show = sys.stderr.isatty() if progress is None else progress
    with _broker() as broker:
        while True:
            report = _refresh_once(broker, within, concurrency, show)
            click.echo(report.summary())
            for instance_id, reason in report.failed:
                click.echo(f"failed {instance_id}: {reason}", err=True)
            if not watch:
                if report.failed:
                    sys.exit(1)
                return
            time.sleep(interval)


def _refresh_once(broker: TokenBroker, within: float, concurrency: int, show: bool) -> Any:
    if not show:
        return broker.refresh_due(within=within, concurrency=concurrency)
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(transient=True) as bar:
        task = bar.add_task("refreshing", total=None)

        def start(total: int) -> None:
            bar.update(task, total=total)

        def step(result: Any) -> None:
            bar.advance(task)

        return broker.refresh_due(
            within=within, concurrency=concurrency, progress=step, on_start=start
        )


@main.command()
@click.option(
    "--instance", "instance_id", default=None, help="Also fetch a token for this instance."
)
def doctor(instance_id: str | None) -> None:
    """Check settings, plugins, store, schema, encryption, webhooks (and a token)."""
    from .doctor import run_checks  # noqa: PLC0415

    checks = run_checks(instance_id=instance_id)
    for check in checks:
        mark = click.style("✓", fg="green") if check.ok else click.style("✗", fg="red")
        click.echo(f"{mark} {check.name}: {_scrub(check.detail)}")
    if not all(check.ok for check in checks):
        sys.exit(1)


@main.command()
def plugins() -> None:
    """List the loaded plugins: entry-point name, distribution, module."""
    from .plugins.manager import loaded_plugins  # noqa: PLC0415

    for plugin in loaded_plugins():
        dist = plugin.distribution or "-"
        if plugin.version:
            dist = f"{dist} {plugin.version}"
        state = f"  FAILED: {plugin.error}" if plugin.error else ""
        click.echo(f"{plugin.name}\t{dist}\t{plugin.module}{state}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=click.IntRange(0, 65535), show_default=True)
@click.option("--log-level", default="info", show_default=True)
def serve(host: str, port: int, log_level: str) -> None:
    """Run the webhook service (POST /webhooks/wix, GET /healthz) with uvicorn."""
    try:
        import uvicorn  # noqa: PLC0415
    except ModuleNotFoundError:
        raise ConfigError(
            "the webhook service needs uvicorn; install it with: pip install 'tokenbroker[server]'"
        ) from None
    from .web import create_app  # noqa: PLC0415

    broker = TokenBroker.from_env()
    broker.verifier  # noqa: B018 - refuse to start without a usable public key
    uvicorn.run(create_app(broker), host=host, port=port, log_level=log_level)
    broker.close()


@main.group()
def db() -> None:
    """The store's schema: status and upgrade (SQL stores)."""


def _sql_store(broker: TokenBroker) -> Any:
    from .backends.sql import SQLStore  # noqa: PLC0415

    store = getattr(broker.store, "inner", broker.store)  # under encryption
    return store if isinstance(store, SQLStore) else None


@db.command("status")
def db_status() -> None:
    """Show the store URL and its schema version."""
    from .backends.sql import SCHEMA_VERSION  # noqa: PLC0415

    with _broker(require_secret=False) as broker:
        store = _sql_store(broker)
        click.echo(f"store: {broker.store.url}")
        if store is None:
            click.echo("schema: none (this backend keeps no schema)")
            return
        found = store.schema_version()
        state = "not created yet" if found is None else f"version {found}"
        click.echo(f"schema: {state}; this tokenbroker writes version {SCHEMA_VERSION}")


@db.command("upgrade")
def db_upgrade() -> None:
    """Create the tables, or upgrade them to this tokenbroker's schema version."""
    with _broker(require_secret=False) as broker:
        store = _sql_store(broker)
        if store is None:
            click.echo(f"{broker.store.url}: nothing to upgrade (this backend keeps no schema)")
            return
        before, after = store.upgrade()
        if before == after:
            click.echo(f"{broker.store.url}: schema version {after}, up to date")
        elif before is None:
            click.echo(f"{broker.store.url}: tables created at schema version {after}")
        else:
            click.echo(f"{broker.store.url}: upgraded from schema version {before} to {after}")


@main.command("encryption-key")
def encryption_key() -> None:
    """Print a new Fernet key for TOKENBROKER_ENCRYPTION_KEY."""
    from .backends.encrypted import new_key  # noqa: PLC0415

    click.echo(new_key())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--app-id", default="demo-app-id", show_default=True)
@click.option("--app-secret", default="demo-app-secret", show_default=True)
@click.option("--install", "instances", multiple=True, help="Instance id to install (repeatable).")
@click.option("--token-lifetime", default=14400, type=click.IntRange(1), show_default=True)
@click.option("--latency", default=0.0, type=click.FloatRange(0), show_default=True)
def emulator(
    host: str,
    port: int,
    app_id: str,
    app_secret: str,
    instances: Sequence[str],
    token_lifetime: int,
    latency: float,
) -> None:
    """Run the Wix emulator (Create Access Token, Send BI Event, Get App Instance)."""
    from .testing.emulator import WixEmulator  # noqa: PLC0415

    emu = WixEmulator(
        app_id, app_secret, token_lifetime=token_lifetime, latency=latency, host=host, port=port
    )
    for instance_id in instances or ("demo-instance",):
        emu.install(instance_id)
    url = emu.start()
    installed = ", ".join(sorted(emu.installed))
    click.echo(f"Wix emulator on {url} (app id {app_id}); installed: {installed}")
    click.echo(f"point tokenbroker at it with TOKENBROKER_API_URL={url}; Ctrl-C stops it")
    emu.serve_forever()


@main.command()
@click.option("--store", default=None, help="Store URL (default: SQLite in a fresh temp dir).")
def demo(store: str | None) -> None:
    """Walk through Wix's OAuth guide against an emulator started here."""
    from .demo import run_demo  # noqa: PLC0415

    run_demo(store, echo=click.echo, style=click.style)


if __name__ == "__main__":  # pragma: no cover
    main()
