"""Commands for trying tokenbroker out: ``emulator`` and ``demo``."""

from __future__ import annotations

from collections.abc import Sequence

import click

from .app import main


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
    from ..testing.emulator import WixEmulator  # noqa: PLC0415

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
