"""URL helpers: passwords never printed, schemes read, garbage survived."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbroker.backends.urls import redact_url, scheme_of, scrub, url_passwords


class TestRedactUrl:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg://u:***@h/db"),
            (
                "mysql+pymysql://root:pw@127.0.0.1:3306/test",
                "mysql+pymysql://root:***@127.0.0.1:3306/test",
            ),
            ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
            (
                "rediss://user:pw@h:6380/1?ssl_cert_reqs=none",
                "rediss://user:***@h:6380/1?ssl_cert_reqs=none",
            ),
            ("postgresql://u:p%40ss%2Fw@h/db", "postgresql://u:***@h/db"),
            ("postgresql://u:pw@h", "postgresql://u:***@h"),
            ("postgresql://u:pw@h?sslmode=require", "postgresql://u:***@h?sslmode=require"),
        ],
    )
    def test_the_password_is_replaced(self, url: str, shown: str) -> None:
        assert redact_url(url) == shown

    @pytest.mark.parametrize(
        "url",
        [
            "mysql://u:p@ss@h/db",  # "@" pasted unencoded
            "mysql://u:p/ss@h/db",  # "/" pasted unencoded
            "mysql://u:p?ss@h/db",
            "mysql://u:p#ss@h/db",
            "mysql://u:p:ss@h/db",
        ],
    )
    def test_a_password_with_unencoded_delimiters_is_hidden_whole(self, url: str) -> None:
        shown = redact_url(url)
        assert "ss" not in shown.split("@")[0]
        assert shown.startswith("mysql://u:***@")
        assert shown.endswith("h/db")

    @pytest.mark.parametrize(
        "url",
        [
            "memory://",
            "memory://?max_tokens=10",
            "sqlite:///relative.db",
            "sqlite:////abs/path/tokens.db",
            "sqlite:///:memory:",
            "postgresql+psycopg://postgres@127.0.0.1:5432/test",
            "redis://localhost:6379/0",
            "redis://h:6379",
            "postgresql://u:@h/db",  # an empty password: nothing to hide
            "",
            "not a url",
            "://",
            "::::@@@@",
        ],
    )
    def test_a_url_without_a_password_is_unchanged(self, url: str) -> None:
        assert redact_url(url) == url

    @pytest.mark.parametrize("garbage", [None, 42, b"redis://:pw@h", object()])
    def test_garbage_never_raises(self, garbage: Any) -> None:
        shown = redact_url(garbage)
        assert isinstance(shown, str)
        assert "pw" not in shown


class TestSchemeOf:
    @pytest.mark.parametrize(
        ("url", "scheme"),
        [
            ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg"),
            ("SQLite:///x.db", "sqlite"),
            ("memory://", "memory"),
            ("redis://h", "redis"),
            ("no scheme here", ""),
            ("", ""),
            ("://x", ""),
        ],
    )
    def test_scheme_is_read_and_lower_cased(self, url: str, scheme: str) -> None:
        assert scheme_of(url) == scheme

    def test_garbage_has_no_scheme(self) -> None:
        assert scheme_of(None) == ""  # type: ignore[arg-type]


class TestUrlPasswords:
    def test_both_the_written_and_the_decoded_password_are_returned(self) -> None:
        assert url_passwords("postgresql://u:p%40ss@h/db") == ("p%40ss", "p@ss")

    def test_a_url_without_a_password_has_none(self) -> None:
        assert url_passwords("sqlite:///x.db") == ()
        assert url_passwords(None) == ()  # type: ignore[arg-type]


class TestQueryPasswords:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (
                "unix:///run/redis.sock?db=0&password=hunter2",
                "unix:///run/redis.sock?db=0&password=***",
            ),
            ("redis://h:6379/0?PASSWORD=x&db=1", "redis://h:6379/0?PASSWORD=***&db=1"),
            ("redis://:pw@h/0?token=abc#frag", "redis://:***@h/0?token=***#frag"),
        ],
    )
    def test_passwords_in_the_query_are_hidden_too(self, url: str, expected: str) -> None:
        assert redact_url(url) == expected

    def test_a_password_option_of_any_name_is_hidden(self) -> None:
        # redis-py reads ssl_password from the query too; one redactor covers every store.
        assert (
            redact_url("rediss://h:6380/0?ssl_password=k3y&db=1")
            == "rediss://h:6380/0?ssl_password=***&db=1"
        )


class TestUrlPasswordsInTheQuery:
    def test_query_passwords_are_returned_with_the_userinfo_one(self) -> None:
        assert url_passwords("redis://:pw@h/0?password=x%2By&db=1") == ("pw", "x%2By", "x+y")

    def test_a_plus_in_a_query_password_is_returned_both_ways(self) -> None:
        assert url_passwords("unix:///s.sock?password=a+b") == ("a+b", "a b")


class TestScrub:
    def test_every_password_is_replaced(self) -> None:
        assert scrub("auth pw1 then pw2", ("pw1", "pw2")) == "auth *** then ***"

    def test_a_password_holding_another_is_hidden_whole(self) -> None:
        assert scrub("bad secretive!", ["secret", "secretive"]) == "bad ***!"

    def test_empty_passwords_change_nothing(self) -> None:
        assert scrub("message", ["", ""]) == "message"
