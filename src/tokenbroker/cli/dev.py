"""Commands for trying tokenbroker out: ``emulator`` and ``demo``."""

from __future__ import annotations

from collections.abc import Sequence

import click

from ..core.errors import ConfigError
from .app import fail, main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--app-id", default="demo-app-id", show_default=True)
@click.option("--app-secret", default="demo-app-secret", show_default=True)
@click.option("--install", "instances", multiple=True, help="Instance id to install (repeatable).")
@click.option("--token-lifetime", default=14400, type=click.IntRange(1), show_default=True)
@click.option("--latency", default=0.0, type=click.FloatRange(0), show_default=True)
@click.option(
    "--request-timeout",
    default=10.0,
    type=click.FloatRange(0, min_open=True),
    show_default=True,
    help="Seconds a connection has to send each whole request before it is closed.",
)
def emulator(
    host: str,
    port: int,
    app_id: str,
    app_secret: str,
    instances: Sequence[str],
    token_lifetime: int,
    latency: float,
    request_timeout: float,
) -> None:
    """Run the Wix emulator (Create Access Token, Send BI Event, Get App Instance)."""
    from ..testing.emulator import BindError, WixEmulator  # noqa: PLC0415

    try:
        emu = WixEmulator(
            app_id,
            app_secret,
            token_lifetime=token_lifetime,
            latency=latency,
            request_timeout=request_timeout,
            host=host,
            port=port,
        )
        for instance_id in instances or ("demo-instance",):
            emu.install(instance_id)
    except (TypeError, ValueError) as exc:
        # click's FloatRange lets nan and inf through; the emulator's own checks do not.
        raise ConfigError(f"emulator: {exc}") from None
    try:
        url = emu.start()
    except BindError as exc:
        # The environment, not the usage, is at fault: rc 1, one line, no traceback.
        fail(str(exc), 1)
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
