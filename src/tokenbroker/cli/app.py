"""The ``tokenbroker`` command group and what every command shares.

Errors are one line on stderr, never a traceback: exit status 1 for provider
and storage errors, 2 for usage and configuration errors (a missing optional
dependency among them, named with the ``pip install`` that brings it). A
reader that closes the pipe early (``tokenbroker demo | head``) ends the
command quietly with 141, the status of a process killed by SIGPIPE. Tokens
are printed only where asked for (``tokenbroker token``); secrets never.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import click

from ..broker import Installations, TokenBroker
from ..broker.assemble import registry_store
from ..core.errors import ConfigError, TokenBrokerError
from ..core.secret import scrub_secrets
from ..core.token import TokenKey, validate_id
from ..settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BROKEN_PIPE: Final = 128 + 13
"""What a shell reports for a process killed by SIGPIPE: ``yes | head`` does the same."""

# The optional dependencies behind the extras of pyproject.toml, by top-level module.
EXTRAS: Final = {
    "cryptography": "encryption",
    "jwt": "webhooks",
    "redis": "redis",
    "psycopg": "postgres",
    "pymysql": "mysql",
    "starlette": "server",
    "uvicorn": "server",
}


def fail(message: str, status: int) -> NoReturn:
    """One line on stderr, with every secret scrubbed, and exit with ``status``."""
    click.echo(f"tokenbroker: error: {one_line(scrub(message))}", err=True)
    sys.exit(status)


def one_line(text: str) -> str:
    """``text`` with its lines joined: a multi-line driver message stays one line."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _secrets(environ: Mapping[str, str]) -> list[str]:
    found = [environ.get("TOKENBROKER_APP_SECRET", "").strip()]
    path = environ.get("TOKENBROKER_APP_SECRET_FILE", "").strip()
    if path:
        # Unreadable, then no broker could have read it either: nothing to hide.
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found.append(Path(path).read_text(encoding="utf-8").strip())
    found.extend(environ.get("TOKENBROKER_ENCRYPTION_KEY", "").split(","))
    return [s.strip() for s in found if s.strip()]


def scrub(text: str) -> str:
    """Last line of defence: no configured secret reaches the terminal (the app
    secret, as set or read from ``TOKENBROKER_APP_SECRET_FILE``, and the encryption keys)."""
    return scrub_secrets(text, _secrets(os.environ))


def missing_extra(exc: ImportError) -> str | None:
    """The message for an optional dependency that is not installed, naming the
    extra to install; ``None`` if ``exc`` is no such thing."""
    if "pip install 'tokenbroker[" in str(exc):
        return str(exc)  # said already, where it was raised
    cause: BaseException | None = exc
    while isinstance(cause, ImportError):
        name = (cause.name or "").partition(".")[0]
        if name in EXTRAS:
            return (
                f"this needs the {name} package, which is not installed; "
                f"install it with: pip install 'tokenbroker[{EXTRAS[name]}]'"
            )
        cause = cause.__cause__ or cause.__context__
    return None


def _quiet_exit_on_closed_stdout() -> NoReturn:
    # Whatever is still buffered for the closed pipe would fail again at exit,
    # with a traceback-like "Exception ignored" message: send it nowhere.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


def _usage_line(exc: click.UsageError) -> str:
    message = exc.format_message()
    if exc.ctx is None:
        return message
    return f"{message} (see '{exc.ctx.command_path} --help')"


class _Group(click.Group):
    """Turns our errors into one clear line and the right exit status."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's ``main``, but a usage error is one line too (click prints three)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        no_args_is_help: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except no_args_is_help as exc:  # `tokenbroker` alone: the help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            fail(_usage_line(exc), exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", 1)
        # Not standalone, click returns what the command returned (None for ours)
        # or the status of a ``ctx.exit(status)``.
        sys.exit(status if isinstance(status, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            fail(str(exc), 2)
        except TokenBrokerError as exc:
            fail(str(exc), 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            _quiet_exit_on_closed_stdout()
        except ImportError as exc:
            message = missing_extra(exc)
            if message is None:
                _unexpected(exc)
            fail(message, 2)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                _quiet_exit_on_closed_stdout()
            _unexpected(exc)
        except Exception as exc:
            _unexpected(exc)


def _unexpected(exc: Exception) -> NoReturn:
    """An unexpected bug: still no traceback (unless TOKENBROKER_DEBUG), no secret."""
    if os.environ.get("TOKENBROKER_DEBUG"):
        raise exc
    fail(f"unexpected {type(exc).__name__}: {exc}", 1)


def configured_broker(*, degrade: bool = False) -> TokenBroker:
    """The broker the environment configures (needs the app secret).

    A one-shot command fails (exit 1) on a store outage rather than riding it
    out; ``degrade=True`` is for the long-running ones (``refresh --watch``).
    """
    return TokenBroker.from_env(degrade=degrade)


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
