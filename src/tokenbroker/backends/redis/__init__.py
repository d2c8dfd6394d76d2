"""``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``.

One store over redis-py, with native clients on both sides: ``redis.Redis``
for the sync methods and ``redis.asyncio.Redis`` for the async twins (one per
event loop). ``urls`` reads the URL, ``clients`` builds and keeps the clients,
``ports`` wraps each as the typed commands (``ops``) the flows of ``store``
ask for, ``failures`` tells an outage from a misconfiguration, ``scripts``
the Lua compare-and-sets, ``values`` the stored bytes.

Key layout (``P`` is the key prefix, ``tokenbroker:`` unless the constructor or
the URL's ``?key_prefix=`` says otherwise; every id is escaped so that ``%``,
``:``, ``{`` and ``}`` never appear in it raw, which keeps keys unambiguous)::

    P{provider:app:instance}:token   string: the token as JSON, expiring with it
    P{provider:app:instance}:lease   string: the lease owner, PX ttl
    P{app}:inst:instance             string: the installation as JSON
    P{app}:installations             sorted set: every instance id of the app, score 0

The braces are Redis Cluster hash tags: a token shares its slot with its lease,
and an app's installation records share one with their index, so every script
and every multi-key command stays inside one slot (and tokens of one busy app
still spread over the whole cluster).

Times are integer microseconds since the epoch, as in the SQL store. Sentinel
and Cluster URLs are parsed and turned into redis-py's own Sentinel and
RedisCluster clients; the test suite runs against a single server only, so
those two paths are exercised as far as URL parsing and client construction.
"""

from __future__ import annotations

import importlib

from ...core.errors import ConfigError


def _require_redis_py() -> None:
    # redis-py is an optional dependency: check for all of it here, where the
    # package is entered, so its absence is one ConfigError naming the extra
    # rather than an ImportError from whichever module happens to import it first.
    for module in (
        "redis",
        "redis.asyncio",
        "redis.asyncio.cluster",
        "redis.asyncio.retry",
        "redis.asyncio.sentinel",
        "redis.backoff",
        "redis.cluster",
        "redis.connection",
        "redis.exceptions",
        "redis.retry",
        "redis.sentinel",
    ):
        try:
            importlib.import_module(module)
        except ImportError as missing:  # pragma: no cover - exercised in a subprocess
            raise ConfigError(
                f"the Redis store needs redis-py (no module {missing.name or 'redis'!r}): "
                "install it with: pip install 'tokenbroker[redis]'"
            ) from None


_require_redis_py()

from .store import DEFAULT_EXPIRY_GRACE, DEFAULT_KEY_PREFIX, RedisStore  # noqa: E402
from .urls import RedisTarget, parse_redis_url  # noqa: E402

__all__ = [
    "DEFAULT_EXPIRY_GRACE",
    "DEFAULT_KEY_PREFIX",
    "RedisStore",
    "RedisTarget",
    "parse_redis_url",
]
