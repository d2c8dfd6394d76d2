"""Running the webhook service for real (uvicorn on a free loopback port), and a
plugin that notes which webhook hooks were called."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from tokenbroker import hookimpl
from tokenbroker.plugins import plugin_manager

from .polling import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class HookLog:
    """A plugin that notes every webhook hook call: ``(hook, event type, instance)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.events: list[Any] = []

    def _note(self, hook: str, event: Any) -> None:
        self.calls.append((hook, event.event_type, event.instance_id))
        self.events.append(event)

    @hookimpl
    def tokenbroker_app_installed(self, event: Any) -> None:
        self._note("installed", event)

    @hookimpl
    def tokenbroker_app_removed(self, event: Any) -> None:
        self._note("removed", event)

    @hookimpl
    def tokenbroker_webhook_event(self, event: Any) -> None:
        self._note("event", event)

    def hooks(self, hook: str) -> list[str]:
        """The event types ``hook`` was called for, in order."""
        return [event_type for name, event_type, _ in self.calls if name == hook]


@contextmanager
def hook_log() -> Iterator[HookLog]:
    """Register a fresh ``HookLog`` for the duration of the block."""
    log = HookLog()
    name = f"hook-log-{id(log)}"
    plugin_manager().register(log, name=name)
    try:
        yield log
    finally:
        plugin_manager().unregister(name=name)
