"""The Redis backend, registered like any third-party plugin's.

redis-py is an optional dependency (``tokenbroker[redis]``): the backend module
is imported only when a Redis URL is used, and a missing redis-py is a
``ConfigError`` that says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from ..core.protocols import Store
    from .registry import RegisterBackend


def _redis(url: str) -> Store:
    from ..backends.redis import RedisStore  # noqa: PLC0415 - redis-py is optional

    return RedisStore(url)


@hookimpl
def tokenbroker_register_backends(register: RegisterBackend) -> None:
    register("redis", _redis, description="Redis through redis-py (rediss:// for TLS)")
    register("rediss", _redis, description="Redis over TLS through redis-py")
    register("unix", _redis, description="Redis over a unix socket: unix:///path/redis.sock?db=0")
    register(
        "redis+sentinel",
        _redis,
        description="Redis behind Sentinel: redis+sentinel://host:26379/service[/db]",
    )
    register(
        "redis+cluster", _redis, description="Redis Cluster: redis+cluster://host:port[,host:port]"
    )
