"""The SQL store's batch operations for the bulk refresher (``core.bulk``).

* The due listing is three statements a page, each a primary-key range: a page
  of the app's installed ids after the last page's last one (keyset paging), the
  tokens in that range (the access token only of those due: missing, expiring
  by ``until``, or due by their refresh stamp), and the health records of that
  range. Every installation's id travels (the report names the fresh ones);
  tokens travel only as their times, but for the due ones.
* Leases, writes and releases are one transaction a batch, with multi-row
  statements: the batch's lease rows are read (and locked), the free ones
  deleted, ours inserted in one statement; token rows are read under lock,
  judged (obtained_at, and the fence of the row and of the key's lease), then
  updated in one executemany and the missing ones inserted in one statement.
  A batch that meets a row another process inserted meanwhile is run again;
  the primary keys admit one winner, as the per-key calls do.

Every lease of a batch has one owner (a random token), so the release is one
``UPDATE``/``DELETE`` by owner. Fences (the ``fence`` columns) are written when
the tables have them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...core.bulk import Due, DuePage, ThreadedBulk
from ...core.fencing import next_fence
from ...core.health import from_record, health_app_id
from ...core.installation import Installation
from ...core.protocols import Lease
from ...core.token import Token, TokenKey
from ..codec import Corrupt, from_micros, json_object, token_fields, token_from_fields
from .bulk_statements import TOKEN_FIELDS, among, by_app, listing, reader

if TYPE_CHECKING:
    from .store import SQLStore

__all__ = ["SQLBulk"]

log = logging.getLogger("tokenbroker.store")

_ATTEMPTS: Final = 3


class SQLBulk(ThreadedBulk):
    """``BulkTokenStore`` over an ``SQLStore`` (its engine, tables and transactions)."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store
        tables = store._tables
        self._tokens, self._leases = tables.tokens, tables.leases
        self._fenced = "fence" in self._tokens.c and "fence" in self._leases.c
        self._statements = listing(tables.installations, self._tokens)

    # -- the listing ----------------------------------------------------------------
    def due_pages(
        self, provider: str, app_id: str, *, now: float, until: float, page: int
    ) -> Iterator[DuePage]:
        ids, tokens, health = self._statements
        health_app = health_app_id(app_id)
        after = ""  # every id is longer than the empty string
        while True:
            params = {"b_app_id": app_id, "b_after": after, "b_limit": page}
            found = self._store._read("listing due tokens", reader(ids, params))
            if not found:
                return
            span = {"b_after": after, "b_last": found[-1].instance_id}
            token_rows = self._store._read(
                "listing due tokens",
                reader(
                    tokens,
                    {
                        **span,
                        "b_provider": provider,
                        "b_app_id": app_id,
                        "b_until": int(until * 1_000_000),
                        "b_now": int(now * 1_000_000),
                    },
                ),
            )
            due_tokens = {row.instance_id: row for row in token_rows if row.due}
            fresh = {row.instance_id for row in token_rows if not row.due}
            due = [row for row in found if row.instance_id not in fresh]
            healths: dict[str, sa.Row[Any]] = {}
            if due:
                health_rows = self._store._read(
                    "listing due tokens", reader(health, {**span, "b_app_id": health_app})
                )
                healths = {row.instance_id: row for row in health_rows}
            yield DuePage(
                [
                    self._due_row(
                        TokenKey(provider, app_id, row.instance_id),
                        row,
                        due_tokens.get(row.instance_id),
                        healths.get(row.instance_id),
                    )
                    for row in due
                ],
                [row.instance_id for row in found if row.instance_id in fresh],
            )
            if len(found) < page:
                return
            after = found[-1].instance_id

    def _due_row(
        self,
        key: TokenKey,
        row: sa.Row[Any],
        token_row: sa.Row[Any] | None,
        health_row: sa.Row[Any] | None,
    ) -> Due:
        token: Token | None = None
        health = None
        registry_at = None
        try:
            registry_at = None if row.updated_at is None else from_micros(row.updated_at, "at")
            if token_row is not None:
                token = token_from_fields(key, cast("Mapping[str, Any]", token_row._mapping))
            if health_row is not None:
                at = health_row.updated_at
                record = Installation(
                    app_id=health_app_id(key.app_id),
                    instance_id=key.instance_id,
                    updated_at=None if at is None else from_micros(at, "updated_at"),
                    extra=json_object(health_row.extra, "extra"),
                )
                health = from_record(record)
        except Corrupt as why:  # due all the same: the refresh overwrites it
            log.warning("ignoring a corrupted record of %s in %s: %s", key, self._store.url, why)
        return Due(key, token, health, registry_at)

    def get_tokens(self, keys: Sequence[TokenKey]) -> list[Token | None]:
        t = self._tokens
        statements = [
            sa.select(t.c.instance_id, *(t.c[name] for name in TOKEN_FIELDS)).where(
                t.c.provider == provider, t.c.app_id == app_id, among(t.c.instance_id, ids)
            )
            for (provider, app_id), ids in by_app(keys).items()
        ]

        def read(conn: Connection) -> dict[TokenKey, Token | None]:
            found: dict[TokenKey, Token | None] = {}
            for statement, (provider, app_id) in zip(statements, by_app(keys), strict=True):
                for row in conn.execute(statement):
                    key = TokenKey(provider, app_id, row.instance_id)
                    found[key] = self._token(key, row)
            return found

        found = self._store._read("get_tokens", read) if keys else {}
        return [found.get(key) for key in keys]

    def _token(self, key: TokenKey, row: sa.Row[Any]) -> Token | None:
        try:
            return token_from_fields(key, cast("Mapping[str, Any]", row._mapping))
        except Corrupt as why:
            log.warning("ignoring corrupted token for %s in %s: %s", key, self._store.url, why)
            return None

    # -- leases -----------------------------------------------------------------------
    def acquire_leases(self, keys: Sequence[TokenKey], ttl: float) -> list[Lease | None]:
        store, lt = self._store, self._leases
        owner = secrets.token_hex(16)
        granted: dict[TokenKey, Lease] = {}

        def take(conn: Connection) -> None:
            granted.clear()
            now = store._clock.time()
            now_us = int(now * 1_000_000)
            until_us = now_us + max(int(ttl * 1_000_000), 0)
            for (provider, app_id), ids in by_app(keys).items():
                where = (lt.c.provider == provider, lt.c.app_id == app_id)
                columns = [lt.c.instance_id, lt.c.expires_at]
                if self._fenced:
                    columns.append(lt.c.fence)
                found = conn.execute(
                    sa.select(*columns)
                    .where(*where, among(lt.c.instance_id, ids))
                    .with_for_update()
                ).all()
                held = {row.instance_id for row in found if row.expires_at > now_us}
                free = {row.instance_id: row for row in found if row.expires_at <= now_us}
                if free:
                    conn.execute(
                        lt.delete().where(
                            *where, among(lt.c.instance_id, list(free)), lt.c.expires_at <= now_us
                        )
                    )
                # A new fence stays above the lease row's and the stored token's.
                stored: dict[str, int] = {}
                if self._fenced:
                    tt = self._tokens
                    fences = sa.select(tt.c.instance_id, tt.c.fence).where(
                        tt.c.provider == provider,
                        tt.c.app_id == app_id,
                        among(tt.c.instance_id, ids),
                    )
                    stored = {row.instance_id: row.fence for row in conn.execute(fences)}
                rows = []
                for instance_id in ids:
                    if instance_id in held:
                        continue
                    previous = free.get(instance_id)
                    seen = max(previous.fence if previous else 0, stored.get(instance_id, 0))
                    fence = next_fence(seen if self._fenced else None, now)
                    row = {
                        "provider": provider,
                        "app_id": app_id,
                        "instance_id": instance_id,
                        "owner": owner,
                        "expires_at": until_us,
                    }
                    if self._fenced:
                        row["fence"] = fence
                    rows.append(row)
                    key = TokenKey(provider, app_id, instance_id)
                    granted[key] = Lease(key, owner, until_us / 1_000_000, fence * self._fenced)
                if rows:
                    conn.execute(lt.insert(), rows)

        self._settled("acquire_leases", take)
        now = store._clock.time()
        if store._sweeper.claim(now):  # as the per-key acquire does
            store._sweeper.sweep(store._tx, now)
        return [granted.get(key) for key in keys]

    def release_leases(self, grants: Sequence[Lease]) -> int:
        lt = self._leases
        by_owner: dict[tuple[str, str, str], list[str]] = {}
        for grant in grants:
            group = (grant.key.provider, grant.key.app_id, grant.owner)
            by_owner.setdefault(group, []).append(grant.key.instance_id)

        def release(conn: Connection) -> int:
            released = 0
            for (provider, app_id, owner), ids in by_owner.items():
                where = (
                    lt.c.provider == provider,
                    lt.c.app_id == app_id,
                    lt.c.owner == owner,
                    among(lt.c.instance_id, ids),
                )
                # With fences the row stays, marked free, to remember the key's fence.
                statement = (
                    lt.update().where(*where).values(expires_at=0)
                    if self._fenced
                    else lt.delete().where(*where)
                )
                released += conn.execute(statement).rowcount
            return released

        return self._store._run("release_leases", release, write=True) if by_owner else 0

    # -- tokens -------------------------------------------------------------------------
    def put_tokens(self, writes: Sequence[tuple[Token, int]]) -> list[bool]:
        t, lt = self._tokens, self._leases
        written: dict[TokenKey, bool] = {}

        def write(conn: Connection) -> None:
            written.clear()
            groups: dict[tuple[str, str], list[tuple[Token, int]]] = {}
            for token, fence in writes:
                groups.setdefault((token.key.provider, token.key.app_id), []).append((token, fence))
            for (provider, app_id), batch in groups.items():
                ids = [token.key.instance_id for token, _ in batch]
                where = (t.c.provider == provider, t.c.app_id == app_id)
                columns = [t.c.instance_id, t.c.obtained_at]
                if self._fenced:
                    columns.append(t.c.fence)
                stored = {
                    row.instance_id: row
                    for row in conn.execute(
                        sa.select(*columns)
                        .where(*where, among(t.c.instance_id, ids))
                        .with_for_update()
                    )
                }
                lease_fences: dict[str, int] = {}
                if self._fenced:
                    lease_where = (lt.c.provider == provider, lt.c.app_id == app_id)
                    lease_fences = {
                        row.instance_id: row.fence
                        for row in conn.execute(
                            sa.select(lt.c.instance_id, lt.c.fence).where(
                                *lease_where, among(lt.c.instance_id, ids)
                            )
                        )
                    }
                updates, inserts = [], []
                for token, fence in batch:
                    instance_id = token.key.instance_id
                    values = token_fields(token)
                    row = stored.get(instance_id)
                    ok = row is None or row.obtained_at <= values["obtained_at"]
                    if self._fenced and fence > 0:
                        ok = ok and lease_fences.get(instance_id, 0) <= fence
                        ok = ok and (row is None or row.fence <= fence)
                    if self._fenced:
                        values["fence"] = fence if fence > 0 or row is None else row.fence
                    written[token.key] = ok
                    if not ok:
                        continue
                    if row is None:
                        inserts.append(
                            {
                                "provider": provider,
                                "app_id": app_id,
                                "instance_id": instance_id,
                                **values,
                            }
                        )
                    else:
                        updates.append({"b_instance_id": instance_id, **values})
                if updates:
                    statement = (
                        t.update()
                        .where(*where, t.c.instance_id == sa.bindparam("b_instance_id"))
                        .values(
                            {
                                name: sa.bindparam(name)
                                for name in updates[0]
                                if name != "b_instance_id"
                            }
                        )
                    )
                    conn.execute(statement, updates)
                if inserts:
                    conn.execute(t.insert(), inserts)

        self._settled("put_tokens", write)
        return [written.get(token.key, False) for token, _ in writes]

    def _settled(self, what: str, work: Any) -> None:
        """Run ``work`` in one write transaction; again when a row another process
        inserted meanwhile blocked one of ours (it is then read, locked, and judged)."""
        store = self._store
        for _ in range(_ATTEMPTS):
            if store._run(
                what, lambda conn: work(conn) or True, write=True, on_conflict=lambda: False
            ):
                return
        store._run(what, lambda conn: work(conn) or True, write=True)
