"""``tokenbroker service-key add|list|revoke``: the keys of the token API and the proxy.

The keys live (hashed) in the store, so every ``tokenbroker serve`` on it knows
them; these commands need the store only, never an app secret.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from ..broker.assemble import open_store
from .app import choose_app, cli_config, main

if TYPE_CHECKING:
    from ..service.keys import ServiceKeys


@contextmanager
def _keys() -> Iterator[ServiceKeys]:
    from ..service.keys import ServiceKeys  # noqa: PLC0415 - the server extra, checked here

    config = cli_config(require_secret=False)
    store = open_store(config.store, config.encryption_key)
    try:
        yield ServiceKeys(store)
    finally:
        store.close()


@main.group("service-key")
def service_key() -> None:
    """Keys for callers of the token API and the proxy (tokenbroker serve --token-api).

    A key covers the apps named with --app and has the scopes named with --scope:
    'proxy' (call Wix through the proxy, never seeing a token; the default) or
    'token' (read raw tokens; it implies 'proxy'). Only a hash is kept in the store.
    """


@service_key.command("add")
@click.argument("name")
@click.option(
    "--app",
    "apps",
    multiple=True,
    required=True,
    metavar="APP",
    help="An app the key covers, by its name in the config ('default' for the "
    "environment's app); repeat for more.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["token", "proxy"]),
    help="What the key may do: 'proxy' (the default) or 'token' (implies proxy); repeat for both.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the key and its record.")
def add(name: str, apps: tuple[str, ...], scopes: tuple[str, ...], as_json: bool) -> None:
    """Make the key NAME and print it, once: only its hash is kept."""
    config = cli_config(require_secret=False)
    for app in apps:
        choose_app(config, app)  # a configured app, or a usage error listing them
    with _keys() as keys:
        key = keys.add(name, apps, scopes or ("proxy",))
        made = keys.get(name)
    if as_json:
        record = made.to_json() if made is not None else {"name": name}
        click.echo(json.dumps({"key": key, **record}))
    else:
        click.echo(key)
    click.echo(
        f"service key {name!r} made; it is shown this once (only its hash is kept)", err=True
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.isoformat(timespec="seconds")


@service_key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per key.")
def list_keys(as_json: bool) -> None:
    """List the keys (revoked ones too): names, apps, scopes, times; never a key."""
    with _keys() as keys:
        found = keys.list()
    if as_json:
        click.echo(json.dumps([key.to_json() for key in found]))
        return
    rows = [("NAME", "APPS", "SCOPES", "CREATED", "REVOKED")]
    rows += [
        (k.name, ",".join(k.apps), ",".join(k.scopes), _when(k.created_at), _when(k.revoked_at))
        for k in found
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@service_key.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the key NAME: every serve on the store refuses it within seconds."""
    with _keys() as keys:
        key = keys.revoke(name)
    click.echo(f"revoked service key {key.name!r} (at {_when(key.revoked_at)})")
