"""A fleet of two services on one store: a key made by one is known by both, and a revoked
key is refused by both within seconds (each caches what it read for at most 2 s)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tokenbroker import TokenBroker, store_from_url
from tokenbroker.service.keys import ServiceKeys
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET
from ..polling import wait_until
from .service_api import Api, serving


@pytest.fixture
def fleet(wix_emulator: WixEmulator, sqlite_url: str) -> Iterator[list[Api]]:
    """Two services, each with its own broker and store object, on one SQLite file."""
    with ExitStack() as stack:
        replicas = []
        for _ in range(2):
            broker = stack.enter_context(
                TokenBroker(
                    app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
                )
            )
            # each service checks keys with a ServiceKeys of its own, on its own store
            replicas.append(stack.enter_context(serving(broker)))
        yield replicas


@pytest.fixture
def operator(sqlite_url: str) -> Iterator[ServiceKeys]:
    """What ``tokenbroker service-key`` uses: a store object of its own."""
    store = store_from_url(sqlite_url)
    yield ServiceKeys(store)
    store.close()


def status(api: Api, key: str) -> int:
    return api.client.get(
        "/v1/apps/default/instances/inst-1/token", headers={"Authorization": f"Bearer {key}"}
    ).status_code


def test_a_key_revoked_anywhere_is_refused_everywhere_within_seconds(
    fleet: list[Api], operator: ServiceKeys
) -> None:
    key = operator.add("fleet", ["default"], ["token"])
    assert [status(api, key) for api in fleet] == [200, 200]  # each has it cached now
    operator.revoke("fleet")
    for api in fleet:
        wait_until(lambda api=api: status(api, key) == 401, "the revocation to reach a replica", 10)
    assert [status(api, key) for api in fleet] == [401, 401]


def test_a_new_key_works_on_every_replica_at_once(fleet: list[Api], operator: ServiceKeys) -> None:
    key = operator.add("fresh", ["default"], ["token"])
    assert [status(api, key) for api in fleet] == [200, 200]
