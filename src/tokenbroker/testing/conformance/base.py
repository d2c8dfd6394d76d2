"""What a backend's conformance subclass provides or tunes, and the protocol check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from tokenbroker.core.protocols import InstallationStore, Store, TokenStore
from tokenbroker.core.token import TokenKey


class _ConformanceBase:
    """The knobs, the ``store`` fixture and the hook every conformance mixin relies on."""

    #: how many threads fight over one lease, and write one token at once
    threads: ClassVar[int] = 20
    #: a lease ttl short enough to watch lapse
    short_ttl: ClassVar[float] = 0.2
    #: how long past ``short_ttl`` a lapsed lease may still look held
    lapse_deadline: ClassVar[float] = 10.0

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError("a StoreConformance subclass must provide a `store` fixture")

    def corrupt_token(self, store: Store, key: TokenKey) -> object:
        """Damage the stored token for ``key`` so it cannot be read back.

        Return ``NotImplemented`` (the default) or raise ``NotImplementedError``
        when the backend cannot do that; the corruption test then skips.
        """
        return NotImplemented

    # --- the protocol ------------------------------------------------------

    def test_store_satisfies_the_store_protocols(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store, TokenStore)
        assert isinstance(store, InstallationStore)
        assert isinstance(store.shared, bool)
        assert isinstance(store.url, str)
