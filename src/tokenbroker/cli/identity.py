"""``tokenbroker token-info``: what Wix's Token Info says about a token.

The token is read from standard input, never taken as an argument: a command
line is visible to every user of the machine (``ps``), a pipe is not. On a
terminal it is asked for without echo.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

import click

from ..core.clock import to_datetime
from ..wix.identity import MAX_CREDENTIAL_LENGTH, TokenInfo
from .app import app_option, choose_app, cli_config, configured_broker, fail, main, verbose


def read_token() -> str:
    """The one token on standard input (a usage error, exit 2, when there is none)."""
    stream = sys.stdin
    if stream is None:  # no standard input at all
        text = ""
    elif stream.isatty():
        text = click.prompt("Token", hide_input=True, err=True)
    else:
        text = stream.read(MAX_CREDENTIAL_LENGTH + 2)
        if len(text.strip()) > MAX_CREDENTIAL_LENGTH:
            fail(f"the token on standard input is over {MAX_CREDENTIAL_LENGTH} characters", 2)
    token = text.strip()
    if not token:
        fail('no token on standard input (try: printf %s "$TOKEN" | tokenbroker token-info)', 2)
    if any(ch.isspace() for ch in token):
        fail("expected one token on standard input, found whitespace inside it", 2)
    return token


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = int((moment - now).total_seconds())
    ago = seconds < 0
    seconds = abs(seconds)
    span = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"
    return f"{moment.isoformat()} ({span} ago)" if ago else f"{moment.isoformat()} (in {span})"


def _lines(info: TokenInfo, app_id: str, now: datetime) -> list[tuple[str, str]]:
    if not info.active:
        return [("active", "no")]
    app = info.client_id or "-"
    if info.client_id is not None:
        app += " (this app)" if info.client_id == app_id else f" (not this app, {app_id})"
    subject = " ".join(part for part in (info.subject_type, info.subject_id) if part) or "-"
    return [
        ("active", "yes"),
        ("subject", subject),
        ("app", app),
        ("instance", info.instance_id or "-"),
        ("site", info.site_id or "-"),
        ("account", info.account_id or "-"),
        ("vendor product", info.vendor_product_id or "-"),
        ("issued", _when(info.iat, now)),
        ("expires", _when(info.exp, now)),
    ]


@main.command("token-info")
@click.option("--json", "as_json", is_flag=True, help="Print Wix's answer as one JSON object.")
@app_option
@verbose
def token_info(as_json: bool, app: str | None) -> None:
    """Ask Wix's Token Info about a token read from standard input.

    For example: printf %s "$TOKEN" | tokenbroker token-info. The token is
    never taken as an argument, where ps would show it. Exits 1 when Wix says
    the token is not active (or refuses to say).
    """
    choose_app(cli_config(), app)  # a wrong --app is said before the token is asked for
    token = read_token()
    with configured_broker(app=app) as broker:
        info = broker.wix.token_info(token)
        app_id = broker.app_id
        now = to_datetime(broker.clock.time())
    if as_json:
        click.echo(json.dumps({**info.to_json(), "this_app": info.client_id == app_id}))
    else:
        rows = _lines(info, app_id, now)
        width = max(len(name) for name, _ in rows) + 1
        for name, value in rows:
            click.echo(f"{name + ':':<{width}} {value}")
    if not info.active:
        sys.exit(1)
