"""The battery of tests every storage backend passes.

Subclass ``StoreConformance`` in a test module and give it a ``store`` fixture::

    from tokenbroker.testing.conformance import StoreConformance

    class TestMyStoreConformance(StoreConformance):
        @pytest.fixture
        def store(self):
            store = MyStore(...)
            yield store
            store.close()

Every test makes its own keys (uuid4), so the store may be shared with other
tests, other processes, or hold data from earlier runs. A backend that can
damage a stored record on purpose overrides ``corrupt_token`` to run the
"corrupted record reads as missing" test; otherwise that test is skipped.

Needs pytest and pytest-asyncio (the async tests carry the ``asyncio`` mark,
so they run in pytest-asyncio's strict mode as well as in auto mode).
"""

from __future__ import annotations

from .async_twins import _AsyncConformance
from .fencing import _FencingConformance

# Re-exported: backend tests build records with it, in-process and in worker scripts.
from .helpers import _token as _token
from .installations import _InstallationConformance
from .leases import _LeaseConformance
from .tokens import _TokenConformance

__all__ = ["StoreConformance"]


# Listed last-collected first: pytest collects inherited tests in reverse MRO order,
# so this runs the protocol check, then tokens, leases, fencing, installations, async twins.
class StoreConformance(
    _AsyncConformance,
    _InstallationConformance,
    _FencingConformance,
    _LeaseConformance,
    _TokenConformance,
):
    """What every ``Store`` guarantees, as tests. Subclass it; provide ``store``.

    The name does not start with ``Test``: pytest collects the subclasses only.
    """
