"""``tokenbroker serve``: the webhook service under uvicorn."""

from __future__ import annotations

import click

from ..broker import TokenBroker
from ..core.errors import ConfigError
from .app import main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=click.IntRange(0, 65535), show_default=True)
@click.option("--log-level", default="info", show_default=True)
def serve(host: str, port: int, log_level: str) -> None:
    """Run the webhook service (POST /webhooks/wix, GET /healthz) with uvicorn."""
    try:
        import uvicorn  # noqa: PLC0415
    except ModuleNotFoundError:
        raise ConfigError(
            "the webhook service needs uvicorn; install it with: pip install 'tokenbroker[server]'"
        ) from None
    from ..service.app import create_app  # noqa: PLC0415

    broker = TokenBroker.from_env()
    broker.verifier  # noqa: B018 - refuse to start without a usable public key
    uvicorn.run(create_app(broker), host=host, port=port, log_level=log_level)
    broker.close()
