"""The built-in storage backends, registered like any third-party plugin's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hookspecs import hookimpl

if TYPE_CHECKING:
    from ..core.protocols import Store
    from .registry import RegisterBackend


def _memory(url: str) -> Store:
    from ..backends.memory import MemoryStore  # noqa: PLC0415 - import only what is used

    return MemoryStore.from_url(url)


def _sql(url: str) -> Store:
    from ..backends.sql import SQLStore  # noqa: PLC0415

    return SQLStore(url)


@hookimpl
def tokenbroker_register_backends(register: RegisterBackend) -> None:
    register("memory", _memory, description="in-process, bounded (tests, single process)")
    register("sqlite", _sql, description="SQLite file through SQLAlchemy (the embedded default)")
    register("postgresql", _sql, description="PostgreSQL through SQLAlchemy (psycopg 3)")
    register("mysql", _sql, description="MariaDB/MySQL through SQLAlchemy (PyMySQL)")
    register("mariadb", _sql, description="MariaDB through SQLAlchemy (PyMySQL)")
