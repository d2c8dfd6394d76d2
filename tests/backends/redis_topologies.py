"""Private Redis topologies on loopback ports: a 3-master Cluster and a Sentinel group.

Both are built from ``redis-server`` and ``redis-cli`` processes of our own, keep
nothing on disk (``--save "" --appendonly no``) and bind 127.0.0.1 only, on free
ports: the shared Redis on 6379 is never touched. ``start`` polls (bounded) until
the topology is usable, ``stop`` kills every process by its PID and always runs,
even after a failed start. Plain Python (no pytest), so the benchmarks reuse it.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from redis.crc import key_slot

__all__ = [
    "RedisCluster",
    "RedisNode",
    "SentinelGroup",
    "TopologyError",
    "binaries",
    "free_ports",
]

SERVICE = "mymaster"
START_TIMEOUT = 30.0


class TopologyError(RuntimeError):
    """A topology could not be started (the message says which part and why)."""


def binaries() -> tuple[str, str]:
    """``redis-server`` and ``redis-cli``, or a ``TopologyError`` saying which is missing."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise TopologyError("redis-server and redis-cli must be installed for this topology")
    return server, cli


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


def poll(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll ``condition`` until it holds, else a ``TopologyError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TopologyError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class RedisNode:
    """One ``redis-server`` (or sentinel) process on a loopback port."""

    def __init__(self, binary: str, port: int, workdir: Path, args: list[str]) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / f"{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise TopologyError(
                f"{self.binary} on port {self.port} exited with {self.process.returncode}: "
                + self.log_tail()
            )

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = (self.workdir / f"{self.port}.log").read_text(errors="replace")
            return " | ".join(text.strip().splitlines()[-lines:])
        return "(no log)"

    def ping(self) -> bool:
        self.check_running()
        with self.client() as client:
            return bool(client.ping())

    def kill(self) -> None:
        """SIGKILL by PID, and reap it."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
        if process is not None:
            process.wait(30)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


def _server_args(port: int, *extra: str) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        *extra,
    ]


class _Topology:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: list[RedisNode] = []

    def stop(self) -> None:
        """Stop every process started, by PID (safe to call twice, or after a failed start)."""
        for node in reversed(self.nodes):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                node.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[_Topology]:
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def start(self) -> None:
        raise NotImplementedError


class RedisCluster(_Topology):
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each, every
    node on two free ports (its own and its cluster bus)."""

    def __init__(
        self, workdir: Path, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 2000
    ) -> None:
        super().__init__(workdir)
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL listing every startup node."""
        return "redis+cluster://" + ",".join(n.address for n in self.nodes)

    def start(self) -> None:
        server, cli = binaries()
        count = self.masters * (1 + self.replicas)
        ports = free_ports(2 * count)
        for port, bus in zip(ports[:count], ports[count:], strict=True):
            args = _server_args(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(bus),
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                str(self.node_timeout_ms),
            )
            node = RedisNode(server, port, self.workdir / f"node-{port}", args)
            self.nodes.append(node)
            node.start()
        for node in self.nodes:
            poll(node.ping, f"cluster node {node.address}")
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise TopologyError(f"redis-cli --cluster create failed: {created.stdout[-500:]}")
        poll(self.ready, "cluster_state:ok on every node, and every replica in sync")

    def ready(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                info = client.execute_command("CLUSTER INFO")
                state = info.get("cluster_state") if isinstance(info, dict) else None
                if state != "ok" and "cluster_state:ok" not in str(info):
                    return False
                replication = client.info("replication")
                if replication.get("role") == "slave" and (
                    replication.get("master_link_status") != "up"
                ):
                    return False
        return True

    def node_id(self, node: RedisNode) -> str:
        with node.client() as client:
            return str(client.execute_command("CLUSTER MYID").decode())

    def kill_owner(self, key: str) -> RedisNode:
        """SIGKILL, by PID, the master serving the slot of ``key``; returns it."""
        owner = self.owner_of(key)
        owner.kill()
        return owner

    def wait_for_promotion(self, key: str, dead: RedisNode, timeout: float = 30.0) -> RedisNode:
        """Poll until a live node serves the slot of ``key`` again (its replica,
        promoted) and the cluster is ``ok``; returns that node."""
        live = [n for n in self.nodes if n is not dead]

        def promoted() -> bool:
            for node in live:
                with node.client() as client:
                    info = client.execute_command("CLUSTER INFO")
                    if isinstance(info, dict) and info.get("cluster_state") != "ok":
                        return False
            return self.owner_of(key, ask=live[0]) is not dead

        poll(promoted, "a replica to take over the killed master's slots", timeout)
        return self.owner_of(key, ask=live[0])

    def owner_of(self, key: str, ask: RedisNode | None = None) -> RedisNode:
        """The node serving the slot of ``key`` now, as ``ask`` (or the first node) says."""
        slot = key_slot(key.encode())
        with (ask or self.nodes[0]).client() as client:
            for start, end, (_h, port, *_), *_r in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == port)
        raise TopologyError(f"no node serves slot {slot}")

    def migrate_slot(self, slot: int, source: RedisNode, target: RedisNode) -> int:
        """Move ``slot`` with its keys from ``source`` to ``target``, the way
        ``redis-cli --cluster reshard`` does: IMPORTING, MIGRATING, MIGRATE every
        key, then SETSLOT NODE everywhere. Returns how many keys moved."""
        source_id, target_id = self.node_id(source), self.node_id(target)
        moved = 0
        with source.client() as src, target.client() as dst:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
            while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
                moved += len(keys)
            for node in (target, source, *self.nodes):
                with node.client() as client:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        poll(self.ready, f"cluster_state:ok after moving slot {slot}")
        return moved


class SentinelGroup(_Topology):
    """A master, a replica and three sentinels watching ``mymaster`` (quorum 2),
    quick to fail over: down after 1 s, failover timeout 3 s."""

    def __init__(self, workdir: Path, down_after_ms: int = 1000) -> None:
        super().__init__(workdir)
        self.down_after_ms = down_after_ms
        self.sentinels: list[RedisNode] = []
        self.master: RedisNode | None = None
        self.replica: RedisNode | None = None

    @property
    def url(self) -> str:
        """A ``redis+sentinel://`` URL naming every sentinel and the service."""
        hosts = ",".join(s.address for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def start(self) -> None:
        server, _cli = binaries()
        master_port, replica_port, *sentinel_ports = free_ports(5)
        self.master = RedisNode(
            server, master_port, self.workdir / "master", _server_args(master_port)
        )
        self.replica = RedisNode(
            server,
            replica_port,
            self.workdir / "replica",
            _server_args(replica_port, "--replicaof", "127.0.0.1", str(master_port)),
        )
        for node in (self.master, self.replica):
            self.nodes.append(node)
            node.start()
        for port in sentinel_ports:
            directory = self.workdir / f"sentinel-{port}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"  # sentinels rewrite their config
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            sentinel = RedisNode(server, port, directory, [str(config), "--sentinel"])
            self.sentinels.append(sentinel)
            self.nodes.append(sentinel)
            sentinel.start()
        poll(self.ready, "a synced replica and three sentinels that know each other")

    def ready(self) -> bool:
        assert self.replica is not None
        with self.replica.client() as client:
            if client.info("replication").get("master_link_status") != "up":
                return False
        for sentinel in self.sentinels:
            sentinel.check_running()
            with sentinel.client() as client:
                state = client.sentinel_master(SERVICE)
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
        return True

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        with self.sentinels[0].client() as client:
            _host, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def kill_master(self) -> RedisNode:
        """SIGKILL the current master by PID; returns it."""
        port = self.master_port()
        master = next(n for n in (self.master, self.replica) if n is not None and n.port == port)
        master.kill()
        return master

    def wait_for_failover(self, old_port: int, timeout: float = 20.0) -> int:
        """Poll until every sentinel names a master other than ``old_port`` that
        answers as a master; returns its port."""

        def promoted() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    _h, port = client.sentinel_get_master_addr_by_name(SERVICE)
                    ports.add(int(port))
            if len(ports) != 1 or old_port in ports:
                return False
            node = next(n for n in self.nodes if n.port in ports)
            with node.client() as client:
                return bool(client.info("replication").get("role") == "master")

        poll(promoted, "the sentinels to promote the replica", timeout)
        return self.master_port()
