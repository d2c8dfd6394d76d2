"""Session fixtures for the private Redis topologies (``redis_topologies``).

Imported by the test modules that use them (``from .conftest_topologies import
...``): each topology starts once for the session, on free loopback ports, and is
stopped by PID at the end whatever happened. One that cannot start skips its
tests, or fails them under ``CI=true`` (``conftest.server_unavailable``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import server_unavailable
from .redis_topologies import RedisCluster, SentinelGroup, TopologyError

__all__ = ["redis_cluster", "sentinel_group", "start_sentinel_group"]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster, up with ``cluster_state:ok``."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        try:
            cluster.start()
        except TopologyError as error:
            server_unavailable(f"the private Redis Cluster did not start: {error}")
        yield cluster
    finally:
        cluster.stop()


def start_sentinel_group(directory: Path) -> SentinelGroup:
    """A started Sentinel group (the caller stops it), or skip/fail saying why not."""
    group = SentinelGroup(directory)
    try:
        group.start()
    except TopologyError as error:
        group.stop()
        server_unavailable(f"the private Sentinel group did not start: {error}")
    except BaseException:
        group.stop()
        raise
    return group


@pytest.fixture(scope="session")
def sentinel_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A private master, replica and three sentinels; never failed over here."""
    group = start_sentinel_group(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        yield group
    finally:
        group.stop()
