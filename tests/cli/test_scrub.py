"""The CLI's last line of defence: secrets are starred out of its output, words are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenbroker.cli.app import scrub, scrub_secrets

from .conftest import Invoke


class TestScrubReplacesWholeValuesOnly:
    @pytest.mark.parametrize(
        ("text", "secret"),
        [
            ("see https://www.wixapis.com", "http"),
            ("plugins: auto_finish_setup, builtin_backends", "s"),
            ("registered schemes: mysql, postgresql, sqlite", "sql"),
            ("a pre-secret and secret_two", "secret"),
        ],
    )
    def test_a_short_secret_inside_a_word_is_left_alone(self, text: str, secret: str) -> None:
        assert scrub_secrets(text, [secret]) == text

    @pytest.mark.parametrize(
        ("text", "shown"),
        [
            ("pw", "***"),
            ("the secret is pw.", "the secret is ***."),
            ("'pw' refused", "'***' refused"),
            ('{"client_secret": "pw"}', '{"client_secret": "***"}'),
            ("user:pw@host and pw", "user:***@host and ***"),
        ],
    )
    def test_a_short_secret_standing_alone_is_starred(self, text: str, shown: str) -> None:
        assert scrub_secrets(text, ["pw"]) == shown

    def test_a_long_secret_is_starred_even_inside_other_text(self) -> None:
        secret = "0f3a9c1e-5b7d-4e2f-8a6b-9c0d1e2f3a4b"
        assert scrub_secrets(f"body=%3D{secret}x", [secret]) == "body=%3D***x"

    def test_a_secret_containing_another_is_hidden_whole(self) -> None:
        assert scrub_secrets("key abc and abcdef", ["abc", "abcdef"]) == "key *** and ***"


class TestWhatTheCliScrubs:
    def test_the_app_secret_as_set(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TOKENBROKER_APP_SECRET", "hunter2")
        assert scrub("secret hunter2 in https://x") == "secret *** in https://x"

    def test_the_app_secret_read_from_its_file(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        path = tmp_path / "secret"
        path.write_text("hunter2\n")
        monkeypatch.delenv("TOKENBROKER_APP_SECRET", raising=False)
        monkeypatch.setenv("TOKENBROKER_APP_SECRET_FILE", str(path))
        assert scrub("secret hunter2 in https://x") == "secret *** in https://x"

    def test_the_encryption_keys(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "TOKENBROKER_ENCRYPTION_KEY", "first-key-0123456789, second-key-0123456789"
        )
        assert scrub("first-key-0123456789/second-key-0123456789") == "***/***"


class TestTheCommandsOutput:
    def test_a_short_secret_does_not_mangle_the_api_url(self, run: Invoke) -> None:
        result = run(
            "doctor",
            TOKENBROKER_APP_SECRET="http",
            TOKENBROKER_API_URL="",
            TOKENBROKER_STORE="memory://",
        )
        assert result.exit_code == 0, result.output
        assert "API https://www.wixapis.com" in result.stdout

    def test_a_short_secret_from_the_file_is_starred_where_it_stands_alone(
        self, run: Invoke, tmp_path: Path
    ) -> None:
        path = tmp_path / "secret"
        path.write_text("sql\n")
        result = run(
            "installations",
            "list",
            TOKENBROKER_APP_SECRET="",
            TOKENBROKER_APP_SECRET_FILE=str(path),
            TOKENBROKER_STORE="nosql://h/sql",
        )
        assert result.exit_code == 2
        assert "'nosql://h/***'" in result.stderr  # the secret, pasted into a URL
        assert "mysql, postgresql" in result.stderr  # words that merely contain it
        assert "sqlite" in result.stderr

    def test_a_long_secret_from_the_file_is_starred(self, run: Invoke, tmp_path: Path) -> None:
        secret = "0f3a9c1e-5b7d-4e2f-8a6b-9c0d1e2f3a4b"
        path = tmp_path / "secret"
        path.write_text(secret)
        result = run(
            "installations",
            "list",
            TOKENBROKER_APP_SECRET="",
            TOKENBROKER_APP_SECRET_FILE=str(path),
            TOKENBROKER_STORE=f"nosql://h/{secret}",
        )
        assert result.exit_code == 2
        assert secret not in result.output
        assert "'nosql://h/***'" in result.stderr
