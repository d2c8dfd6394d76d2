"""The one record codec: the fields every store keeps, and strict reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tokenbroker.backends.codec import (
    Corrupt,
    installation_fields,
    installation_from_fields,
    json_object,
    json_text,
    token_fields,
    token_from_fields,
)
from tokenbroker.core.installation import Installation, InstallationStatus
from tokenbroker.core.token import Token, TokenKey

NOW = datetime(2031, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
KEY = TokenKey("wix", "app", "inst")


def installation(**changes: Any) -> Installation:
    values: dict[str, Any] = {
        "app_id": "app",
        "instance_id": "inst",
        "status": InstallationStatus.REMOVED,
        "installed_at": NOW,
        "removed_at": NOW + timedelta(days=1),
        "origin_instance_id": "origin",
        "updated_at": NOW + timedelta(days=1),
        "extra": {"plan": "pro", "seats": 3},
        **changes,
    }
    return Installation(**values)


class TestTokens:
    def test_a_token_survives_its_fields(self) -> None:
        token = Token(
            key=KEY,
            access_token="tok",
            token_type="Bearer",
            obtained_at=NOW,
            expires_at=NOW + timedelta(hours=4),
            refresh_at=NOW + timedelta(hours=3),
        )
        assert token_from_fields(KEY, token_fields(token)) == token

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("access_token", ""),
            ("token_type", None),
            ("obtained_at", -1),
            ("expires_at", "soon"),
            ("refresh_at", True),
        ],
    )
    def test_a_damaged_field_is_corrupt(self, field: str, value: object) -> None:
        fields = {
            "access_token": "tok",
            "token_type": "Bearer",
            "obtained_at": 1,
            "expires_at": 2,
            field: value,
        }
        with pytest.raises(Corrupt, match=field):
            token_from_fields(KEY, fields)


class TestInstallations:
    def test_an_installation_survives_its_fields(self) -> None:
        inst = installation()
        assert installation_from_fields("app", "inst", installation_fields(inst)) == inst

    def test_fields_hold_times_as_microseconds_and_extra_as_a_dict(self) -> None:
        fields = installation_fields(installation(setup_finished_at=None))
        assert fields["status"] == "removed"
        assert fields["installed_at"] == int(NOW.timestamp()) * 1_000_000 + 678_901
        assert fields["setup_finished_at"] is None
        assert fields["extra"] == {"plan": "pro", "seats": 3}

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"status": "paused"}, "status"),
            ({"extra": ["a"]}, "extra is a JSON list"),
            ({"extra": None}, "extra"),
            ({"origin_instance_id": 7}, "origin_instance_id"),
            ({"updated_at": -5}, "updated_at"),
        ],
    )
    def test_a_damaged_field_is_corrupt(self, changes: dict[str, Any], match: str) -> None:
        fields = {**installation_fields(installation()), **changes}
        with pytest.raises(Corrupt, match=match):
            installation_from_fields("app", "inst", fields)


class TestJson:
    def test_text_is_compact_and_sorted(self) -> None:
        assert json_text({"b": 1, "a": "é"}) == '{"a":"\\u00e9","b":1}'
        assert json_text({"b": 1, "a": "é"}, ensure_ascii=False) == '{"a":"é","b":1}'

    @pytest.mark.parametrize("raw", [b"{not json", "[1, 2]", b"\xff", None])
    def test_anything_but_an_object_is_corrupt(self, raw: Any) -> None:
        with pytest.raises(Corrupt, match="the value"):
            json_object(raw, "the value")

    def test_an_object_is_read_from_text_or_bytes(self) -> None:
        assert json_object('{"a":1}', "x") == json_object(b'{"a":1}', "x") == {"a": 1}
