"""The Redis store's batch operations for the bulk refresher (``core.bulk``).

Redis has no secondary index to ask for due tokens, so the listing pages the app's
installation index (``ZRANGEBYLEX``, a page at a time) and reads each page's
records, tokens and, for the due ones, health records in one ``MGET`` each (on a
Cluster the tokens, one slot each, in one pipeline): four round trips a page of
500, every installation's token read. Leases, writes and releases are the per-key
commands and scripts, a batch sent as one pipeline (no transaction: each command
or script is atomic on its own key, as the per-key calls are).

The async twins run each batch's pipeline in a worker thread on the sync client:
one thread hop per batch, not per key.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import redis.cluster

from ...core.bulk import Due, DuePage, ThreadedBulk, maybe_due
from ...core.health import from_record, health_app_id
from ...core.protocols import Lease
from ...core.token import Token, TokenKey
from ..codec import to_micros
from .clients import DRIVER_ERRORS
from .scripts import RELEASED_KEEP_MS, SCRIPTS, ScriptName
from .values import encode_token

if TYPE_CHECKING:
    from .store import RedisStore

__all__ = ["RedisBulk"]

_CHUNK: Final = 1000
"""Commands per pipeline: bounds one reply's size."""


class RedisBulk(ThreadedBulk):
    """``BulkTokenStore`` over a ``RedisStore`` (its client, key names and codec)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    def _call(self, what: str, work: Callable[[Any], Any]) -> Any:
        store = self._store
        try:
            return work(store.client)
        except DRIVER_ERRORS as error:
            raise store._clients.storage_error(what, error) from None

    def _pipelined(self, what: str, commands: Sequence[Callable[[Any], object]]) -> list[Any]:
        """Each command queued on a pipeline, sent a chunk at a time; their replies."""

        def send(client: Any) -> list[Any]:
            replies: list[Any] = []
            for start in range(0, len(commands), _CHUNK):
                pipe = client.pipeline(transaction=False)
                for command in commands[start : start + _CHUNK]:
                    command(pipe)
                replies.extend(pipe.execute())
            return replies

        return list(self._call(what, send)) if commands else []

    def _script(self, name: ScriptName, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """A queued call of one of the store's scripts: by hash on one server, as
        text on a Cluster (whose pipelines do not load scripts on their nodes)."""
        if isinstance(self._store.client, redis.cluster.RedisCluster):
            text = SCRIPTS[name]
            return lambda pipe: pipe.execute_command("EVAL", text, len(keys), *keys, *args)
        script = self._store._clients.sync_port().scripts[name]
        return lambda pipe: script(keys=keys, args=args, client=pipe)

    # -- the listing ----------------------------------------------------------------
    def due_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> Iterator[DuePage]:
        store = self._store
        index, health_app = store.index_key(app_id), health_app_id(app_id)
        cluster = isinstance(store.client, redis.cluster.RedisCluster)
        after: bytes | None = None
        while True:
            low = b"-" if after is None else b"(" + after

            def members(client: Any, low: bytes = low) -> list[bytes]:
                return list(client.zrangebylex(index, low, b"+", start=0, num=page))

            found = self._call("listing due tokens", members)
            ids = [m.decode() for m in found]
            records = self._mget([store.installation_key(app_id, i) for i in ids], cluster)
            active = []
            for instance_id, raw in zip(ids, records, strict=True):
                record = store._installation_or_none(app_id, instance_id, raw)
                if record is not None and record.active:
                    active.append(record)
            keys = [TokenKey(provider, app_id, r.instance_id) for r in active]
            tokens = self._mget([store.token_key(k) for k in keys], cluster, own_slots=True)
            due, fresh = [], []
            for record, key, raw in zip(active, keys, tokens, strict=True):
                token = store._token_or_none(key, raw)
                if maybe_due(token, now, until):
                    due.append(Due(key, token, None, record.updated_at))
                else:
                    fresh.append(record.instance_id)
            healths = self._mget(
                [store.installation_key(health_app, d.key.instance_id) for d in due], cluster
            )
            rows = []
            for row, raw in zip(due, healths, strict=True):
                instance_id = row.key.instance_id
                record = store._installation_or_none(health_app, instance_id, raw)
                health = from_record(record)
                rows.append(row if health is None else attrs.evolve(row, health=health))
            if rows or fresh:
                yield DuePage(rows, fresh)
            if len(found) < page:
                return
            after = found[-1]

    def _mget(self, names: list[str], cluster: bool, *, own_slots: bool = False) -> list[Any]:
        """The values of ``names``: one MGET; on a Cluster, keys of one slot each
        (``own_slots``) go as a pipeline of GETs."""
        if not names:
            return []
        if cluster and own_slots:
            return self._pipelined("listing due tokens", [_get(n) for n in names])
        return list(self._call("listing due tokens", lambda client: client.mget(names)))

    def get_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]:
        store = self._store
        cluster = isinstance(store.client, redis.cluster.RedisCluster)
        found = self._mget([store.token_key(k) for k in keys], cluster, own_slots=True)
        return [store._token_or_none(k, raw) for k, raw in zip(keys, found, strict=True)]

    # -- leases -------------------------------------------------------------------------
    def acquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]:
        store = self._store
        owner = secrets.token_hex(16)  # one per batch: the fence makes each lease's own
        ttl_ms = max(1, math.ceil(ttl * 1000))
        now = time.time()  # wall-clock time, as the per-key acquire judges it
        commands = [
            self._script(
                "acquire_lease", (store.lease_key(key), store.token_key(key)), (owner, ttl_ms)
            )
            for key in keys
        ]
        fences = self._pipelined("acquire_leases", commands)
        return [
            Lease(key, f"{owner}:{int(fence)}", now + ttl, int(fence)) if fence else None
            for key, fence in zip(keys, fences, strict=True)
        ]

    def release_leases(self, grants: Sequence[Lease]) -> int:
        store = self._store
        commands = [
            self._script("release_lease", (store.lease_key(g.key),), (g.owner, RELEASED_KEEP_MS))
            for g in grants
        ]
        return sum(int(done) for done in self._pipelined("release_leases", commands))

    # -- tokens -------------------------------------------------------------------------
    def put_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]:
        store = self._store
        grace_ms = store._grace_ms
        now_ms = int(time.time() * 1000)
        commands = []
        for token, fence in writes:
            expires_ms = -(-to_micros(token.expires_at) // 1000)
            keep_until_ms = max(expires_ms, now_ms) + grace_ms
            args = (to_micros(token.obtained_at), encode_token(token), keep_until_ms, fence)
            keys = (store.token_key(token.key), store.lease_key(token.key))
            commands.append(self._script("put_token", keys, args))
        # 0 is a readable stored token obtained later, -1 a later fence: both final
        # (the per-key call's second look is for values Python cannot read).
        return [int(done) > 0 for done in self._pipelined("put_tokens", commands)]


def _get(name: str) -> Callable[[Any], object]:
    return lambda pipe: pipe.get(name)
