"""``sqlite:///path``, ``postgresql+psycopg://…``, ``mysql+pymysql://…``: one SQL store.

``store`` holds ``SQLStore``; ``schema`` its tables, version and upgrades;
``statements`` the statements and rows; ``sweep`` the bounded sweep of
lapsed leases; ``engines`` the per-dialect engine
setup; ``transactions`` running work with retries and clean errors;
``failures`` which of those errors are outages and which misconfigurations. Times
are stored as integer microseconds since the epoch (see ``..codec``); the
URL query may carry ``table_prefix=…`` to keep several deployments in one
database.
"""

from __future__ import annotations

from .schema import SCHEMA_VERSION
from .store import SQLStore

__all__ = ["SCHEMA_VERSION", "SQLStore"]
