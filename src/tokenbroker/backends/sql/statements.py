"""Every statement the SQL store runs, built once per store, and the rows they
read and write: tokens and installations go through the shared codec, so a
row holds exactly the fields a Redis value does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import sqlalchemy as sa

from ...core.installation import Installation, InstallationStatus
from ...core.token import Token, TokenKey
from ..codec import (
    installation_fields,
    installation_from_fields,
    json_object,
    json_text,
    token_from_fields,
)
from .schema import Tables

__all__ = [
    "Statements",
    "installation_from_row",
    "installation_row",
    "key_of",
    "key_params",
    "token_from_row",
]


def _binds(columns: Iterable[sa.Column[Any]]) -> dict[str, Any]:
    return {column.name: sa.bindparam(column.name) for column in columns}


class Statements:
    """Every statement a call runs, built once per store.

    Building a Core statement and computing its cache key cost more than the
    lookup itself on SQLite; a call now only binds values. Parameters that
    pick rows are named ``b_*``: SQLAlchemy keeps the column names for the
    values an INSERT or UPDATE writes.
    """

    def __init__(self, tables: Tables) -> None:
        t, lt, it = tables.tokens, tables.leases, tables.installations
        token_key = (
            t.c.provider == sa.bindparam("b_provider"),
            t.c.app_id == sa.bindparam("b_app_id"),
            t.c.instance_id == sa.bindparam("b_instance_id"),
        )
        # An unfenced write leaves the row's fence as it was; a fenced one sets it.
        token_values = _binds([c for c in t.columns if not c.primary_key and c.name != "fence"])
        fenced_values = {**token_values, "fence": sa.bindparam("fence")}
        not_newer = t.c.obtained_at <= sa.bindparam("b_obtained_at")
        self.get_token = sa.select(t).where(*token_key)
        self.lock_token = self.get_token.with_for_update()
        self.token_fence = sa.select(t.c.fence).where(*token_key)
        self.insert_token = t.insert().values(_binds(t.columns))
        self.update_token = t.update().where(*token_key).values(token_values)
        self.update_token_unless_newer = (
            t.update().where(*token_key, not_newer).values(token_values)
        )
        self.update_token_fenced = t.update().where(*token_key).values(fenced_values)
        self.update_token_fenced_unless_newer = (
            t.update()
            .where(*token_key, not_newer, t.c.fence <= sa.bindparam("b_fence"))
            .values(fenced_values)
        )
        self.delete_token = t.delete().where(*token_key)
        self.delete_token_if = t.delete().where(
            *token_key, t.c.access_token == sa.bindparam("b_access_token")
        )

        lease_key = (
            lt.c.provider == sa.bindparam("b_provider"),
            lt.c.app_id == sa.bindparam("b_app_id"),
            lt.c.instance_id == sa.bindparam("b_instance_id"),
        )
        self.lock_lease = sa.select(lt.c.expires_at, lt.c.fence).where(*lease_key).with_for_update()
        self.insert_lease = lt.insert().values(_binds(lt.columns))
        # Taken over only as it was read: lapsed, and with the fence that was judged.
        self.take_lease = (
            lt.update()
            .where(
                *lease_key,
                lt.c.expires_at <= sa.bindparam("b_now"),
                lt.c.fence == sa.bindparam("b_fence"),
            )
            .values(owner=sa.bindparam("owner"), expires_at=sa.bindparam("expires_at"))
            .values(fence=sa.bindparam("fence"))
        )
        self.renew_lease = (
            lt.update()
            .where(
                *lease_key,
                lt.c.owner == sa.bindparam("b_owner"),
                lt.c.fence == sa.bindparam("b_fence"),
                lt.c.expires_at > sa.bindparam("b_now"),
            )
            .values(expires_at=sa.bindparam("expires_at"))
        )
        # Released rows stay, free (expires_at 0), to remember their fence until swept.
        self.release_lease = (
            lt.update()
            .where(*lease_key, lt.c.owner == sa.bindparam("b_owner"), lt.c.expires_at > 0)
            .values(expires_at=0)
        )

        installation_key = (
            it.c.app_id == sa.bindparam("b_app_id"),
            it.c.instance_id == sa.bindparam("b_instance_id"),
        )
        self.get_installation = sa.select(it).where(*installation_key)
        self.lock_installation = self.get_installation.with_for_update()
        self.insert_installation = it.insert().values(_binds(it.columns))
        self.update_installation = (
            it.update()
            .where(*installation_key)
            .values(_binds([c for c in it.columns if not c.primary_key]))
        )

        def page(include_removed: bool, after: bool) -> sa.Select[Any]:
            query = sa.select(it).where(it.c.app_id == sa.bindparam("b_app_id"))
            if not include_removed:
                installed = InstallationStatus.INSTALLED.value
                query = query.where(it.c.status == sa.bindparam("b_status", installed))
            if after:
                query = query.where(it.c.instance_id > sa.bindparam("b_after"))
            limit = sa.bindparam("b_limit", type_=sa.Integer)
            return query.order_by(it.c.instance_id).limit(limit)

        # (include_removed, after a previous page) -> the page's query
        self.installation_pages = {
            (removed, after): page(removed, after)
            for removed in (False, True)
            for after in (False, True)
        }


# --- values <-> rows -------------------------------------------------------


def key_of(key: TokenKey) -> dict[str, str]:
    """A token key as the values of its primary-key columns."""
    return {"provider": key.provider, "app_id": key.app_id, "instance_id": key.instance_id}


def key_params(key: TokenKey) -> dict[str, Any]:
    """The parameters of ``Statements``' key conditions."""
    return {"b_provider": key.provider, "b_app_id": key.app_id, "b_instance_id": key.instance_id}


def token_from_row(key: TokenKey, row: sa.Row[Any]) -> Token:
    # A row's mapping is keyed by column name as well: no copy on the read path.
    return token_from_fields(key, cast("Mapping[str, Any]", row._mapping))


def installation_row(inst: Installation) -> dict[str, Any]:
    """The non-key columns of ``inst``: its codec fields, ``extra`` as JSON text
    (no JSON column type works the same on every dialect)."""
    fields = installation_fields(inst)
    return {**fields, "extra": json_text(fields["extra"])}


def installation_from_row(row: sa.Row[Any]) -> Installation:
    fields = {**row._mapping, "extra": json_object(row.extra, "extra")}
    return installation_from_fields(row.app_id, row.instance_id, fields)
