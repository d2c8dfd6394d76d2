"""``tokenbroker serve``: the webhook service under uvicorn, with its limits."""

from __future__ import annotations

import click

from ..broker import TokenBroker
from .app import main

# uvicorn's own level names (``uvicorn.config.LOG_LEVELS``), spelled out so that
# ``--help`` and usage errors work on an install without uvicorn
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=click.IntRange(0, 65535), show_default=True)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    show_default=True,
    help="For uvicorn's and tokenbroker's loggers.",
)
@click.option(
    "--receipt-timeout",
    default=10.0,
    type=click.FloatRange(0, 3600, min_open=True),
    show_default=True,
    help="Seconds a client has to send a whole request, from connecting (or from "
    "the first byte of a later request on a kept-alive connection); then it is closed.",
)
@click.option(
    "--timeout-keep-alive",
    default=5,
    type=click.IntRange(1, 3600),
    show_default=True,
    help="Seconds an idle connection is kept open between requests.",
)
@click.option(
    "--limit-concurrency",
    default=100,
    type=click.IntRange(1, 100_000),
    show_default=True,
    help="Connections served at once; a request on one more is answered 503.",
)
def serve(
    host: str,
    port: int,
    log_level: str,
    receipt_timeout: float,
    timeout_keep_alive: int,
    limit_concurrency: int,
) -> None:
    """Run the webhook service (POST /webhooks/wix, GET /healthz) with uvicorn."""
    from ..service.app import create_app  # noqa: PLC0415 - the server extra, checked here
    from ..service.server import run  # noqa: PLC0415

    broker = TokenBroker.from_env()
    broker.verifier  # noqa: B018 - refuse to start without a usable public key
    try:
        run(
            create_app(broker),
            host=host,
            port=port,
            log_level=log_level.lower(),
            receipt_timeout=receipt_timeout,
            timeout_keep_alive=timeout_keep_alive,
            limit_concurrency=limit_concurrency,
        )
    finally:
        broker.close()
