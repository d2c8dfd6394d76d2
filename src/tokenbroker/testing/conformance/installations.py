"""The conformance tests of a store's installation records."""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import attrs

from tokenbroker.core.installation import Installation, InstallationStatus
from tokenbroker.core.protocols import Store

from .base import _ConformanceBase
from .helpers import _BASE, _assert_aware, _installation


class _InstallationConformance(_ConformanceBase):
    """Installations: ``get_installation``, ``put_installation``, ``iter_installations``."""

    def test_get_of_a_missing_installation_returns_none(self, store: Store) -> None:
        assert store.get_installation(f"app-{uuid.uuid4()}", "inst-1") is None

    def test_put_then_get_installation_round_trips_every_field(self, store: Store) -> None:
        app = f"app-{uuid.uuid4()}"
        inst = _installation(app, origin_instance_id=f"origin-{uuid.uuid4()}")
        assert store.put_installation(inst) is True
        got = store.get_installation(app, inst.instance_id)
        assert got == inst
        assert got is not None
        _assert_aware(got.installed_at, got.setup_finished_at, got.updated_at)

    def test_put_of_the_identical_installation_returns_false(self, store: Store) -> None:
        inst = _installation(f"app-{uuid.uuid4()}")
        assert store.put_installation(inst) is True
        assert store.put_installation(attrs.evolve(inst)) is False

    def test_an_installation_with_older_updated_at_does_not_replace_a_newer_one(
        self, store: Store
    ) -> None:
        newer = _installation(f"app-{uuid.uuid4()}", status=InstallationStatus.REMOVED)
        older = attrs.evolve(
            newer,
            status=InstallationStatus.INSTALLED,
            removed_at=None,
            updated_at=_BASE - timedelta(microseconds=1),
        )
        assert store.put_installation(newer) is True
        assert store.put_installation(older) is False
        assert store.get_installation(newer.app_id, newer.instance_id) == newer

    def test_an_installation_with_newer_updated_at_replaces_the_stored_one(
        self, store: Store
    ) -> None:
        first = _installation(f"app-{uuid.uuid4()}")
        removed = attrs.evolve(
            first,
            status=InstallationStatus.REMOVED,
            removed_at=_BASE + timedelta(hours=1),
            updated_at=_BASE + timedelta(hours=1),
        )
        assert store.put_installation(first) is True
        assert store.put_installation(removed) is True
        assert store.get_installation(first.app_id, first.instance_id) == removed

    def test_a_record_without_updated_at_loses_to_a_stored_one_with_it(self, store: Store) -> None:
        dated = _installation(f"app-{uuid.uuid4()}")
        undated = attrs.evolve(dated, updated_at=None, extra={"from": "backfill"})
        assert store.put_installation(dated) is True
        assert store.put_installation(undated) is False
        assert store.get_installation(dated.app_id, dated.instance_id) == dated

    def test_concurrent_installation_puts_leave_the_latest_updated_at(self, store: Store) -> None:
        app = f"app-{uuid.uuid4()}"
        instance_id = f"inst-{uuid.uuid4()}"
        records = [
            _installation(app, instance_id, updated=_BASE + timedelta(seconds=i), extra={"i": i})
            for i in range(self.threads)
        ]
        random.shuffle(records)
        start = threading.Barrier(len(records))

        def put(record: Installation) -> bool:
            start.wait()
            return store.put_installation(record)

        with ThreadPoolExecutor(len(records)) as pool:
            written = list(pool.map(put, records))
        latest = max(records, key=lambda r: r.updated_at or _BASE)
        assert store.get_installation(app, instance_id) == latest
        assert written[records.index(latest)] is True

    def test_extra_with_non_ascii_text_round_trips(self, store: Store) -> None:
        inst = _installation(f"app-{uuid.uuid4()}", extra={"site": "Café 😀", "ß": ["ü"]})
        store.put_installation(inst)
        assert store.get_installation(inst.app_id, inst.instance_id) == inst

    def test_iter_installations_skips_removed_ones_unless_asked(self, store: Store) -> None:
        app = f"app-{uuid.uuid4()}"
        live = _installation(app, "inst-a")
        gone = _installation(app, "inst-b", status=InstallationStatus.REMOVED)
        store.put_installation(live)
        store.put_installation(gone)
        assert list(store.iter_installations(app)) == [live]
        assert list(store.iter_installations(app, include_removed=True)) == [live, gone]

    def test_iter_installations_is_ordered_by_instance_id_and_scoped_to_the_app(
        self, store: Store
    ) -> None:
        app = f"app-{uuid.uuid4()}"
        ids = ["inst-B", "inst-a", "inst-0", "inst-a-2", "inst-Z", f"inst-{uuid.uuid4()}"]
        for instance_id in random.sample(ids, len(ids)):
            store.put_installation(_installation(app, instance_id))
        store.put_installation(_installation(app + "-other", "inst-1"))
        found = [inst.instance_id for inst in store.iter_installations(app)]
        assert found == sorted(ids)

    def test_iter_installations_of_an_unknown_app_is_empty(self, store: Store) -> None:
        assert list(store.iter_installations(f"app-{uuid.uuid4()}")) == []
