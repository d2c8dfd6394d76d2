"""``tokenbroker serve``: the service under uvicorn, with its limits.

Webhooks for every configured app (or the one ``--app`` names); with ``--token-api``
the token API and the proxy too, for callers holding a service key. It listens on
loopback unless told otherwise, or on a Unix socket (``--uds PATH``, mode 0660).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import click
from click.core import ParameterSource

from ..broker import TokenBroker
from .app import app_option, choose_app, cli_config, configured_brokers, main

# uvicorn's own level names (``uvicorn.config.LOG_LEVELS``), spelled out so that
# ``--help`` and usage errors work on an install without uvicorn
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
MIB: Final = 1024 * 1024


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, type=click.IntRange(0, 65535), show_default=True)
@click.option(
    "--uds",
    metavar="PATH",
    default=None,
    type=click.Path(dir_okay=False, resolve_path=False),
    help="Listen on this Unix socket (made 0660: its owner and group may connect) "
    "instead of --host and --port: for a sidecar on the same host.",
)
@app_option
@click.option(
    "--token-api",
    is_flag=True,
    help="Also serve the token API and the proxy under /v1 (callers need a service "
    "key: tokenbroker service-key add). Off by default.",
)
@click.option(
    "--no-proxy",
    is_flag=True,
    help="With --token-api: leave the proxy (/v1/.../wix/{path}) out.",
)
@click.option(
    "--proxy-max-body",
    default=10 * MIB,
    type=click.IntRange(0, 1024 * MIB),
    show_default=True,
    metavar="BYTES",
    help="The largest request body the proxy forwards; a larger one is answered 413.",
)
@click.option(
    "--key-concurrency",
    default=32,
    type=click.IntRange(1, 100_000),
    show_default=True,
    help="Proxied calls in flight per service key; one more is answered 429.",
)
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
@click.option(
    "--no-metrics",
    is_flag=True,
    help="Leave GET /metrics (Prometheus; unauthenticated, no secrets) out.",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="Serve GET /metrics on its own listener on 127.0.0.1:PORT (and not on the "
    "main one): keeps the unauthenticated metrics off a public address.",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str,
    port: int,
    uds: str | None,
    app: str | None,
    token_api: bool,
    no_proxy: bool,
    proxy_max_body: int,
    key_concurrency: int,
    log_level: str,
    receipt_timeout: float,
    timeout_keep_alive: int,
    limit_concurrency: int,
    no_metrics: bool,
    metrics_port: int | None,
) -> None:
    """Run the service with uvicorn: POST /webhooks/wix/{name} (and /webhooks/wix
    for one app), GET /healthz; with --token-api, GET /v1/apps/{name}/instances/{id}/token,
    ANY /v1/apps/{name}/instances/{id}/wix/{path} and GET /v1/openapi.json; GET /metrics
    unless --no-metrics (on its own loopback listener with --metrics-port)."""
    if uds is not None:
        for option in ("host", "port"):
            if ctx.get_parameter_source(option) is not ParameterSource.DEFAULT:
                raise click.UsageError(f"--uds and --{option} exclude each other")
    if no_proxy and not token_api:
        raise click.UsageError("--no-proxy needs --token-api")
    if no_metrics and metrics_port is not None:
        raise click.UsageError("--no-metrics and --metrics-port exclude each other")
    if not no_metrics:
        from ..service import require  # noqa: PLC0415 - the server extra

        require("prometheus_client", "tokenbroker serve's /metrics (or give --no-metrics)")
    from ..service.app import check_webhooks, create_app  # noqa: PLC0415 - the server extra
    from ..service.keys import ServiceKeys  # noqa: PLC0415
    from ..service.server import run  # noqa: PLC0415

    chosen = choose_app(cli_config(ctx), app).name if app is not None else None
    brokers = configured_brokers(ctx, degrade=True)  # long-running: ride out store outages
    try:
        served: Mapping[str, TokenBroker] = (
            brokers if chosen is None else {chosen: brokers.app(chosen)}
        )
        # refuse to start without a usable public key, unless the token API has work
        check_webhooks(served, required=not token_api, warn=False)
        keys = ServiceKeys(brokers.store) if token_api else None
        run(
            create_app(
                served,
                token_api=token_api,
                proxy=token_api and not no_proxy,
                keys=keys,
                proxy_max_body=proxy_max_body,
                key_concurrency=key_concurrency,
                # on the main listener unless it has one of its own
                metrics=not no_metrics and metrics_port is None,
            ),
            host=host,
            port=port,
            uds=uds,
            log_level=log_level.lower(),
            receipt_timeout=receipt_timeout,
            timeout_keep_alive=timeout_keep_alive,
            limit_concurrency=limit_concurrency,
            metrics_port=metrics_port,
        )
    finally:
        brokers.close()
