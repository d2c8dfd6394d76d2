"""The statements of the SQL store's batch operations (``bulk``) that are built once
per store, and the helpers that pick a batch's rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...core.installation import InstallationStatus
from ...core.token import TokenKey

__all__ = ["TOKEN_FIELDS", "among", "by_app", "listing", "reader"]

TOKEN_FIELDS: Final = (
    "access_token",
    "token_type",
    "obtained_at",
    "expires_at",
    "refresh_at",
    "must_refresh_at",
)


def by_app(keys: Sequence[TokenKey]) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for key in keys:
        groups.setdefault((key.provider, key.app_id), []).append(key.instance_id)
    return groups


def among(column: sa.Column[str], ids: Sequence[str]) -> sa.ColumnElement[bool]:
    """``column IN ids``, and within their range: a batch's ids are one stretch of a
    page, and the range lets the planner take the primary key even when its table
    statistics are stale (a cold start fills the tables faster than they are
    analysed; an ``IN`` alone was then planned as a scan of the app's every row)."""
    return sa.and_(column >= min(ids), column <= max(ids), column.in_(ids))


def reader(
    statement: sa.Select[Any], params: dict[str, Any]
) -> Callable[[Connection], list[sa.Row[Any]]]:
    return lambda conn: list(conn.execute(statement, params))


def listing(it: sa.Table, t: sa.Table) -> tuple[sa.Select[Any], sa.Select[Any], sa.Select[Any]]:
    """The three statements of a page: the page of installed ids, the tokens in its
    range (the access token only of those due), the health records in its range.
    Each reads a primary-key range, a plan no table statistics can spoil (a join
    over tables filled faster than they are analysed could sort every token a page)."""
    after: sa.BindParameter[str] = sa.bindparam("b_after", type_=sa.String)
    last: sa.BindParameter[str] = sa.bindparam("b_last", type_=sa.String)
    ids = (
        sa.select(it.c.instance_id, it.c.updated_at)
        .where(
            it.c.app_id == sa.bindparam("b_app_id"),
            it.c.status == InstallationStatus.INSTALLED.value,
            it.c.instance_id > after,
        )
        .order_by(it.c.instance_id)
        .limit(sa.bindparam("b_limit", type_=sa.Integer))
    )
    due = sa.or_(
        t.c.expires_at <= sa.bindparam("b_until"),
        t.c.refresh_at.is_(None),
        t.c.refresh_at <= sa.bindparam("b_now"),
    )
    columns = [t.c[name] for name in TOKEN_FIELDS if name != "access_token"]
    tokens = sa.select(
        t.c.instance_id,
        sa.case((due, t.c.access_token), else_=sa.null()).label("access_token"),
        *columns,
        sa.case((due, 1), else_=0).label("due"),
    ).where(
        t.c.provider == sa.bindparam("b_provider"),
        t.c.app_id == sa.bindparam("b_app_id"),
        t.c.instance_id > after,
        t.c.instance_id <= last,
    )
    health = sa.select(it.c.instance_id, it.c.updated_at, it.c.extra).where(
        it.c.app_id == sa.bindparam("b_app_id"), it.c.instance_id > after, it.c.instance_id <= last
    )
    return ids, tokens, health
