"""The ``tokenbroker`` command group and what every command shares.

Errors are one line on stderr, never a traceback: exit status 1 for provider
and storage errors, 2 for usage and configuration errors. Tokens are printed
only where asked for (``tokenbroker token``); secrets never.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from ..broker import Installations, TokenBroker
from ..broker.assemble import registry_store
from ..core.errors import ConfigError, TokenBrokerError
from ..core.token import TokenKey, validate_id
from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, status: int) -> NoReturn:
    click.echo(f"tokenbroker: error: {message}", err=True)
    sys.exit(status)


def scrub(text: str) -> str:
    """Last line of defence: no configured secret reaches the terminal."""
    secret = os.environ.get("TOKENBROKER_APP_SECRET")
    return text.replace(secret, "***") if secret else text


class _Group(click.Group):
    """Turns our errors into one clear line and the right exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(scrub(str(exc)), 2)
        except TokenBrokerError as exc:
            fail(scrub(str(exc)), 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # an unexpected bug: still no traceback, no secret
            if os.environ.get("TOKENBROKER_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {scrub(str(exc))}", 1)


def configured_broker() -> TokenBroker:
    """The broker the environment configures (needs the app secret)."""
    return TokenBroker.from_env()


def registry() -> Installations:
    """The installation registry the environment names: no app secret, no provider."""
    settings = Settings.from_env(require_secret=False)
    app_id = settings.app_id
    return Installations(
        app_id=app_id,
        store=registry_store(settings),
        clock=_system_clock(),
        key=lambda instance_id: TokenKey("wix", app_id, validate_id(instance_id)),
    )


def _system_clock() -> Any:
    from ..core.clock import SystemClock  # noqa: PLC0415

    return SystemClock()


def verbose(func: F) -> F:
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
