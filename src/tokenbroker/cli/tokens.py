"""``tokenbroker token`` and ``tokenbroker finish-setup``: the Wix guide's steps."""

from __future__ import annotations

import json

import click

from ..broker.installations import SETUP_PENDING
from .app import app_option, configured_broker, fail, main, verbose


@main.command()
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the expiry.")
@app_option
@verbose
def token(instance_id: str, as_json: bool, app: str | None) -> None:
    """Print a valid access token for INSTANCE_ID (the raw token alone)."""
    with configured_broker(app=app) as broker:
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
@app_option
@verbose
def finish_setup(instance_id: str | None, pending: bool, app: str | None) -> None:
    """Tell Wix that INSTANCE_ID needs no more setup (APP_FINISHED_CONFIGURATION).

    With --pending, exits 1 if any pending installation is still failing.
    """
    if pending == (instance_id is not None):
        raise click.UsageError("give either INSTANCE_ID or --pending")
    with configured_broker(app=app) as broker:
        if instance_id is not None:
            broker.finish_setup(instance_id)
            click.echo(f"sent APP_FINISHED_CONFIGURATION for {instance_id}")
            return
        done = broker.retry_pending_setup()
        # The retry logs each failure with its reason; what is still flagged is what failed.
        still = [
            inst.instance_id
            for inst in broker.installations.list()
            if inst.extra.get(SETUP_PENDING) and inst.setup_finished_at is None
        ]
    click.echo(f"sent APP_FINISHED_CONFIGURATION for {len(done)} pending installation(s)")
    if still:
        fail(f"finish-setup still failing for {len(still)} installation(s): {_some(still)}", 1)


def _some(ids: list[str], shown: int = 5) -> str:
    more = len(ids) - shown
    return ", ".join(ids[:shown]) + (f" and {more} more" if more > 0 else "")
