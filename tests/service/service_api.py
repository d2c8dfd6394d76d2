"""What the token API, proxy and service-key tests share: a service with the token API
on, run by uvicorn on loopback, its keys, and raw HTTP for what clients would fix."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
import httpx2

from tokenbroker import TokenBroker
from tokenbroker.service.app import create_app
from tokenbroker.service.keys import ServiceKeys

from ..webhook_helpers import running

APP = "default"
"""The name a single ``TokenBroker`` is served under."""


@attrs.define
class Api:
    """A running service: its URL, a client for it, the keys it checks, its broker."""

    url: str
    client: httpx2.Client
    keys: ServiceKeys
    broker: TokenBroker

    def key(
        self, name: str, *, apps: tuple[str, ...] = (APP,), scopes: tuple[str, ...] = ("token",)
    ) -> str:
        return self.keys.add(name, apps, scopes)

    def token(
        self, key: str | None, instance_id: str = "inst-1", app: str = APP
    ) -> httpx2.Response:
        return self.client.get(token_path(instance_id, app), headers=bearer(key))


def bearer(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def token_path(instance_id: str, app: str = APP) -> str:
    return f"/v1/apps/{app}/instances/{instance_id}/token"


def proxy_path(path: str, instance_id: str = "inst-1", app: str = APP) -> str:
    return f"/v1/apps/{app}/instances/{instance_id}/wix/{path}"


@contextmanager
def serving(source: Any, *, keys: ServiceKeys | None = None, **options: Any) -> Iterator[Api]:
    """``create_app(source, token_api=True, ...)`` under uvicorn; ``keys`` default to
    ``ServiceKeys`` on the (first) broker's store, shared with the app (so a key added
    here is known there at once)."""
    brokers: Mapping[str, TokenBroker] = (
        {APP: source} if isinstance(source, TokenBroker) else source
    )
    broker = next(iter(brokers.values()))
    keys = keys if keys is not None else ServiceKeys(broker.store)
    app = create_app(source, token_api=True, keys=keys, **options)
    with running(app) as url, httpx2.Client(base_url=url, timeout=30) as client:
        yield Api(url, client, keys, broker)


@attrs.frozen
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def raw_request(
    url: str,
    target: str,
    headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    body: bytes = b"",
) -> RawResponse:
    """``METHOD target`` sent byte for byte (no client normalises the path or drops a
    header), on a connection of its own (``Connection: close`` unless ``headers`` say
    otherwise); ``body`` is sent as it is (framed as ``headers`` say). One response,
    its body as sent (chunked framing included)."""
    host, _, port = url.removeprefix("http://").partition(":")
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    if not any(name.lower() == "connection" for name, _ in pairs):
        pairs.append(("Connection", "close"))
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in pairs]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + 10
        while chunk := sock.recv(65536):
            data += chunk
            assert time.monotonic() < deadline, "no complete response in time"
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        found[key] = f"{found[key]}, {value.strip()}" if key in found else value.strip()
    return RawResponse(int(status_line.split(" ", 2)[1]), found, body)
