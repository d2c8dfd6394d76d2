"""``tokenbroker legacy``: Wix's legacy OAuth ("custom authentication") for older apps.

``legacy exchange`` completes an install by hand: it swaps the authorization code Wix
sent to the app's redirect URL for the installation's refresh token (stored, encrypted
when a key is set) and a first access token. The code is read from standard input,
never taken as an argument (a command line is visible to every user of the machine):
the bare code, or the whole redirect URL, whose ``instanceId`` must then be the one
given. On a terminal it is asked for without echo.
"""

from __future__ import annotations

import sys
from urllib.parse import quote

import click

from ..core.errors import ConfigError, TokenBrokerError
from ..core.secret import scrub_secrets
from ..wix.legacy import complete_install, parse_callback
from ..wix.legacy_wire import MAX_GRANT_LENGTH
from .app import app_option, configured_broker, fail, main, verbose

CLOSE_WINDOW = "https://www.wix.com/installer/close-window"
"""Where Wix expects the browser next, with ``?access_token=`` (documented: Custom
Authentication (Legacy))."""
_LIMIT = MAX_GRANT_LENGTH * 4  # a redirect URL carries more than the code


def read_code(instance_id: str) -> str:
    """The code on standard input: bare, or in Wix's redirect URL (exit 2 if neither)."""
    stream = sys.stdin
    if stream is None:  # no standard input at all
        text = ""
    elif stream.isatty():
        text = click.prompt("Authorization code (or the redirect URL)", hide_input=True, err=True)
    else:
        text = stream.read(_LIMIT + 2)
        if len(text.strip()) > _LIMIT:
            fail(f"standard input is over {_LIMIT} characters: not a code or redirect URL", 2)
    given = text.strip()
    if not given:
        fail(
            "no authorization code on standard input "
            '(try: printf %s "$CODE" | tokenbroker legacy exchange --instance ID)',
            2,
        )
    if "://" not in given and not given.startswith("?"):
        if any(ch.isspace() for ch in given):
            fail("expected one code on standard input, found whitespace inside it", 2)
        return given
    try:
        callback = parse_callback(given)
    except ConfigError as exc:
        fail(str(exc), 2)
    if callback.instance_id is not None and callback.instance_id != instance_id:
        fail(
            f"the redirect URL is for instance {callback.instance_id!r}, "
            f"not --instance {instance_id!r}",
            2,
        )
    return callback.code


@main.group()
def legacy() -> None:
    """Wix's legacy OAuth (custom authentication), for apps on provider wix-legacy."""


@legacy.command("exchange")
@click.option(
    "--instance",
    "instance_id",
    required=True,
    metavar="ID",
    help="The instance the code was issued for (instanceId of Wix's redirect).",
)
@click.option(
    "--close-window-url",
    is_flag=True,
    help="Print only the URL that finishes the install in the browser (it holds the "
    "first access token).",
)
@app_option
@verbose
def exchange(instance_id: str, close_window_url: bool, app: str | None) -> None:
    """Exchange an install's authorization code, read from standard input.

    For example: printf %s "$CODE" | tokenbroker legacy exchange --instance ID.
    Standard input holds the code, or the whole redirect URL Wix sent the
    browser to (then its instanceId must match). The installation's refresh
    token is stored (encrypted when a key is set) and the installation
    recorded. Wix's codes are valid once, for 10 minutes.
    """
    code = read_code(instance_id)
    try:
        with configured_broker(app=app) as broker:
            token = complete_install(broker, instance_id, code)
    except ConfigError as exc:
        fail(scrub_secrets(str(exc), [code]), 2)
    except TokenBrokerError as exc:
        fail(scrub_secrets(str(exc), [code]), 1)
    if close_window_url:
        click.echo(f"{CLOSE_WINDOW}?access_token={quote(token.access_token, safe='')}")
        return
    click.echo(
        f"exchanged the authorization code for {instance_id}: refresh token stored, "
        f"first access token {token.fingerprint} valid until "
        f"{token.expires_at.isoformat(timespec='seconds')}"
    )
