from __future__ import annotations

import pickle

import pytest

from tokenbroker import ConfigError, Secret, Token, TokenKey
from tokenbroker.core.clock import to_datetime
from tokenbroker.core.token import validate_id


class TestInstanceIdValidation:
    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("", "empty"),
            ("   ", "empty"),
            (" inst", "whitespace"),
            ("x" * 257, "257 characters"),
            ("in\nst", "control characters"),
            ("in\x00st", "control characters"),
            ("in\u200bst", "control characters"),
            ("in\ud800st", "control characters"),
            (42, "must be a string"),
        ],
    )
    def test_bad_ids_are_config_errors_naming_the_problem(self, value: object, reason: str) -> None:
        with pytest.raises(ConfigError, match=reason):
            validate_id(value)

    @pytest.mark.parametrize(
        "value", ["inst-1", "x" * 256, "e7a8c1b2-5d6f-4a3b-9c8d-0e1f2a3b4c5d", "ünï"]
    )
    def test_good_ids_pass_unchanged(self, value: str) -> None:
        assert validate_id(value) == value


class TestSecretsStayHidden:
    def test_secret_repr_and_str_are_masked(self) -> None:
        secret = Secret("hunter2")
        assert "hunter2" not in repr(secret)
        assert "hunter2" not in str(secret)
        assert "hunter2" not in f"{secret}"
        assert secret.reveal() == "hunter2"

    def test_secrets_compare_by_value(self) -> None:
        assert Secret("a") == Secret("a")
        assert Secret("a") != Secret("b")

    def test_secret_survives_pickling_for_multiprocessing(self) -> None:
        assert pickle.loads(pickle.dumps(Secret("s"))).reveal() == "s"

    def test_token_repr_masks_the_access_token(self) -> None:
        token = Token(
            key=TokenKey("wix", "app", "inst"),
            access_token="OAUTH2.very-secret",
            token_type="Bearer",
            expires_at=to_datetime(2e9),
            obtained_at=to_datetime(2e9 - 60),
        )
        assert "very-secret" not in repr(token)
        assert "very-secret" not in token.fingerprint
        assert len(token.fingerprint) == 12
