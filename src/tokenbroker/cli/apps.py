"""``tokenbroker apps``: the configured apps (never their secrets)."""

from __future__ import annotations

import json

import click

from .app import cli_config, main


@main.command("apps")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def apps(as_json: bool) -> None:
    """List the configured apps: name, app id, provider, API URL.

    From the config file (--config or TOKENBROKER_CONFIG), else the environment's
    single app, 'default'. Secrets are never shown; none is needed to list.
    """
    config = cli_config(require_secret=False)
    rows = [
        {
            "name": app.name,
            "app_id": app.app_id,
            "provider": app.provider,
            "api_url": app.api_url,
        }
        for app in config.apps.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}\t{row['app_id']}\t{row['provider']}\t{row['api_url'] or '-'}")
