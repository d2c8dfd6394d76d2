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

import attrs
import click

from ..broker import Installations, TokenBroker, TokenBrokers
from ..broker.assemble import open_store
from ..config import AppConfig, Config, resolve_config
from ..core.errors import ConfigError, TokenBrokerError
from ..core.secret import scrub_secrets
from ..core.token import TokenKey, validate_id

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
    found = [environ.get("TOKENBROKER_APP_SECRET", "").strip(), *_CONFIG_SECRETS]
    path = environ.get("TOKENBROKER_APP_SECRET_FILE", "").strip()
    if path:
        # Unreadable, then no broker could have read it either: nothing to hide.
        with contextlib.suppress(OSError, UnicodeDecodeError):
            found.append(Path(path).read_text(encoding="utf-8").strip())
    found.extend(environ.get("TOKENBROKER_ENCRYPTION_KEY", "").split(","))
    return [s.strip() for s in found if s.strip()]


def scrub(text: str) -> str:
    """Last line of defence: no configured secret reaches the terminal (the app
    secret, as set or read from ``TOKENBROKER_APP_SECRET_FILE``, the encryption keys,
    and every secret of a config file this process read)."""
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


# -- the configuration and the app a command works on ----------------------------------
_STATE: Final = "tokenbroker.cli"
_CONFIG_SECRETS: set[str] = set()
"""The secrets of the config this process loaded: scrubbed like the environment's."""


@attrs.define
class CliState:
    """What the top-level options chose, shared by the command's contexts."""

    config_path: str | None = None
    configs: dict[bool, Config] = attrs.field(factory=dict)


def state_of(ctx: click.Context | None = None) -> CliState:
    """The top-level options' state of ``ctx`` (default: the current context)."""
    ctx = ctx or click.get_current_context()
    state = ctx.meta.get(_STATE)
    if not isinstance(state, CliState):
        state = ctx.meta[_STATE] = CliState()
    return state


def cli_config(ctx: click.Context | None = None, *, require_secret: bool = True) -> Config:
    """The config ``--config`` names, else ``TOKENBROKER_CONFIG``'s, else the
    environment's single app (``default``); read once per command."""
    state = state_of(ctx)
    config = state.configs.get(require_secret)
    if config is None:
        config = resolve_config(state.config_path, require_secret=require_secret)
        _CONFIG_SECRETS.update(config.secrets())
        state.configs[require_secret] = config
    return config


def choose_app(config: Config, app: str | None) -> AppConfig:
    """The app ``--app`` names; left out, the only one. Several apps without
    ``--app``, or a name not configured, is a usage error (exit 2) listing them."""
    names = ", ".join(config.apps)
    if app is None:
        if len(config.apps) == 1:
            return next(iter(config.apps.values()))
        raise click.UsageError(
            f"{len(config.apps)} apps are configured: choose one with --app NAME (apps: {names})"
        )
    if app not in config.apps:
        raise click.UsageError(f"unknown app {app!r} for --app (apps: {names})")
    return config.apps[app]


def configured_brokers(ctx: click.Context | None = None, **options: Any) -> TokenBrokers:
    """Every configured app's broker over one store (``tokenbroker serve``, ``refresh``);
    ``options`` go to ``TokenBrokers`` (``degrade=True`` for long-running commands)."""
    options.setdefault("degrade", False)
    return TokenBrokers(cli_config(ctx), **options)


def configured_broker(
    ctx: click.Context | None = None, app: str | None = None, *, degrade: bool = False
) -> TokenBroker:
    """The broker of the app ``--app`` names (needs its secret); only that app is built.

    A one-shot command fails (exit 1) on a store outage rather than riding it
    out; ``degrade=True`` is for the long-running ones (``refresh --watch``).
    """
    config = cli_config(ctx)
    chosen = choose_app(config, app)
    return app_broker(config, chosen, degrade=degrade)


def app_broker(config: Config, app: AppConfig, **options: Any) -> TokenBroker:
    """A ``TokenBroker`` of its own (owning its store) for one app of ``config``."""
    try:
        return TokenBroker(
            **app.broker_kwargs(),
            store=config.store,
            encryption_key=config.encryption_key,
            **options,
        )
    except ConfigError as exc:
        if config.source == "environment":
            raise
        raise ConfigError(f"{config.source}: apps.{app.name}: {exc}") from None


def registry(ctx: click.Context | None = None, app: str | None = None) -> Installations:
    """The installation registry of the app ``--app`` names: no app secret, no provider."""
    config = cli_config(ctx, require_secret=False)
    chosen = choose_app(config, app)
    app_id, provider = chosen.app_id, chosen.provider
    return Installations(
        app_id=app_id,
        store=open_store(config.store, config.encryption_key),
        clock=_system_clock(),
        key=lambda instance_id: TokenKey(provider, app_id, validate_id(instance_id)),
    )


def app_option(func: F) -> F:
    """``--app NAME``: the app a command works on (may be left out when there is one)."""
    return click.option(
        "--app",
        "app",
        metavar="NAME",
        default=None,
        help="The app to work on, by its name in the config file (may be left out "
        "when only one is configured; the environment's app is 'default').",
    )(func)


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
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    default=None,
    help="The config file (TOML): one store, any number of apps. Default: the file "
    "TOKENBROKER_CONFIG names, else the TOKENBROKER_* variables as one app, 'default'.",
)
@click.version_option(package_name="tokenbroker")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """A valid Wix access token for every installation of your apps.

    Configured by a config file (--config FILE or TOKENBROKER_CONFIG), or by
    TOKENBROKER_APP_ID, TOKENBROKER_APP_SECRET (or TOKENBROKER_APP_SECRET_FILE),
    TOKENBROKER_STORE and TOKENBROKER_API_URL for a single app. Commands that
    work on one app take --app NAME; with one app it may be left out.
    """
    if config_path is not None and not config_path.strip():
        raise click.BadParameter("is empty", param_hint="'--config'")
    state_of(ctx).config_path = config_path
