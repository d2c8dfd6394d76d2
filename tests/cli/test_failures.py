"""Every failure of every command: the documented exit status and one line on stderr.

README: "Errors are one line on stderr, without a traceback: exit status 1 for Wix
and storage errors, 2 for usage and configuration errors."
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import Result

from tokenbroker.cli.app import EXTRAS, missing_extra

from ..conftest import INSTANCE
from ..webhook_helpers import free_port
from .conftest import Invoke, run_process

USAGE, CONFIG, FAILED = 2, 2, 1


def assert_one_error_line(stderr: str, status: int, expected: int) -> str:
    """The one line, after checking that it is all there is and the status is right."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("tokenbroker: error: "), stderr
    assert status == expected, stderr
    return lines[0]


def assert_failed_cleanly(result: Result, expected: int) -> str:
    line = assert_one_error_line(result.stderr, result.exit_code, expected)
    assert "Traceback" not in result.output
    return line


# Every command that reads the settings and opens the store.
WITH_A_STORE = {
    "token": ("token", INSTANCE),
    "finish-setup": ("finish-setup", INSTANCE),
    "finish-setup --pending": ("finish-setup", "--pending"),
    "installations list": ("installations", "list"),
    "installations add": ("installations", "add", "a"),
    "installations remove": ("installations", "remove", "a"),
    "refresh": ("refresh", "--no-progress"),
    "db status": ("db", "status"),
    "db upgrade": ("db", "upgrade"),
}
# The store commands that keep no schema answer "nothing to do" without touching Redis.
NO_SCHEMA_COMMANDS = {"db status", "db upgrade"}


def _under_a_file(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return {"TOKENBROKER_STORE": f"sqlite:///{blocker}/tokens.db"}


def _not_a_database(tmp_path: Path) -> dict[str, str]:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is no SQLite database, not even close" * 20)
    return {"TOKENBROKER_STORE": f"sqlite:///{garbage}"}


def _redis_down(tmp_path: Path) -> dict[str, str]:
    return {"TOKENBROKER_STORE": f"redis://127.0.0.1:{free_port()}/0"}


KINDS = {
    "missing app id": (lambda tmp_path: {"TOKENBROKER_APP_ID": ""}, CONFIG),
    "unknown store scheme": (lambda tmp_path: {"TOKENBROKER_STORE": "nosql://h"}, CONFIG),
    "malformed encryption key": (
        lambda tmp_path: {"TOKENBROKER_ENCRYPTION_KEY": "not-a-fernet-key"},
        CONFIG,
    ),
    "store path under a file": (_under_a_file, FAILED),
    "store file not a database": (_not_a_database, FAILED),
    "store outage": (_redis_down, FAILED),
}


# A Redis store has no schema: the db commands have nothing to connect for there.
CASES = [
    (command, kind)
    for command in WITH_A_STORE
    for kind in KINDS
    if not (kind == "store outage" and command in NO_SCHEMA_COMMANDS)
]


class TestEveryFailureIsOneLine:
    @pytest.mark.parametrize(("command", "kind"), CASES)
    def test_a_settings_or_store_failure(
        self, run: Invoke, tmp_path: Path, command: str, kind: str
    ) -> None:
        make_env, expected = KINDS[kind]
        result = run(*WITH_A_STORE[command], **make_env(tmp_path))
        assert_failed_cleanly(result, expected)

    @pytest.mark.parametrize(
        "args",
        [
            ("token", "never-installed"),
            ("finish-setup", "never-installed"),
            ("token", "x" * 300),
            ("installations", "add", "bad\x01id"),
        ],
        ids=["token", "finish-setup", "token-bad-id", "add-bad-id"],
    )
    def test_a_wix_or_instance_failure(self, run: Invoke, args: tuple[str, ...]) -> None:
        expected = FAILED if args[-1] == "never-installed" else CONFIG
        assert_failed_cleanly(run(*args), expected)

    def test_a_wrong_secret(self, run: Invoke) -> None:
        result = run("token", INSTANCE, TOKENBROKER_APP_SECRET="the-wrong-one")
        assert "the-wrong-one" not in assert_failed_cleanly(result, FAILED)

    def test_a_secret_file_that_cannot_be_read(self, run: Invoke, tmp_path: Path) -> None:
        result = run(
            "token",
            INSTANCE,
            TOKENBROKER_APP_SECRET="",
            TOKENBROKER_APP_SECRET_FILE=str(tmp_path / "missing"),
        )
        assert "TOKENBROKER_APP_SECRET_FILE" in assert_failed_cleanly(result, CONFIG)


EVERY_COMMAND = [
    ("token",),
    ("finish-setup",),
    ("installations", "list"),
    ("installations", "add"),
    ("installations", "remove"),
    ("refresh",),
    ("db", "status"),
    ("db", "upgrade"),
    ("backends",),
    ("plugins",),
    ("doctor",),
    ("encryption-key",),
    ("demo",),
    ("serve",),
    ("emulator",),
]


class TestUsageErrorsAreOneLineAndExit2:
    @pytest.mark.parametrize("command", EVERY_COMMAND, ids=" ".join)
    def test_an_unknown_option(self, run: Invoke, command: tuple[str, ...]) -> None:
        line = assert_failed_cleanly(run(*command, "--no-such-option"), USAGE)
        assert "--no-such-option" in line
        assert f"(see 'tokenbroker {' '.join(command)} --help')" in line

    @pytest.mark.parametrize(
        "args",
        [
            ("no-such-command",),
            ("--no-such-option",),
            ("installations", "no-such-command"),
            ("token",),
            ("installations", "add"),
            ("installations", "remove"),
            ("finish-setup",),
            ("finish-setup", INSTANCE, "--pending"),
            ("refresh", "--within", "soon"),
            ("refresh", "--within", "-5m"),
            ("refresh", "--within", "-1"),
            ("refresh", "--interval", "0"),
            ("refresh", "--interval", "0s"),
            ("refresh", "--interval", "-1m"),
            ("refresh", "--interval", "0.5"),
            ("refresh", "--concurrency", "0"),
            ("refresh", "--concurrency", "many"),
            ("doctor", "--instance"),
            ("emulator", "--port", "70000"),
        ],
        ids=" ".join,
    )
    def test_a_bad_or_missing_argument(self, run: Invoke, args: tuple[str, ...]) -> None:
        assert_failed_cleanly(run(*args), USAGE)

    def test_a_negative_within_says_so(self, run: Invoke) -> None:
        line = assert_failed_cleanly(run("refresh", "--within", "-5m"), USAGE)
        assert "negative" in line

    def test_an_interval_below_one_second_names_the_minimum(self, run: Invoke) -> None:
        line = assert_failed_cleanly(run("refresh", "--interval", "0"), USAGE)
        assert "--interval" in line
        assert "minimum of 1s" in line

    def test_watch_with_a_zero_interval_refuses_to_start_instead_of_spinning(
        self, env: dict[str, str]
    ) -> None:
        # Before the minimum, this ran forever: the timeout is what would fail it.
        done = run_process(
            ["refresh", "--watch", "--interval", "0", "--no-progress"], env, timeout=30
        )
        assert_one_error_line(done.stderr, done.returncode, USAGE)

    def test_help_and_version_still_exit_0(self, run: Invoke) -> None:
        assert run("--help").exit_code == 0
        assert run("refresh", "--help").exit_code == 0
        assert run("--version").exit_code == 0


class TestAMissingExtraNamesThePipInstall:
    @pytest.mark.parametrize(
        ("args", "missing", "extra_env", "extra"),
        [
            (("encryption-key",), ("cryptography",), {}, "encryption"),
            (
                ("token", INSTANCE),
                ("cryptography",),
                {"TOKENBROKER_ENCRYPTION_KEY": "x" * 44},
                "encryption",
            ),
            (("installations", "list"), ("redis",), {"TOKENBROKER_STORE": "redis://h/0"}, "redis"),
        ],
        ids=["encryption-key", "token-encrypted", "redis"],
    )
    def test_on_a_base_install(
        self,
        env: dict[str, str],
        args: tuple[str, ...],
        missing: tuple[str, ...],
        extra_env: dict[str, str],
        extra: str,
    ) -> None:
        done = run_process(args, {**env, **extra_env}, without=missing)
        line = assert_one_error_line(done.stderr, done.returncode, CONFIG)
        assert f"pip install 'tokenbroker[{extra}]'" in line
        assert "unexpected" not in line

    def test_doctor_with_a_public_key_but_no_pyjwt(self, env: dict[str, str]) -> None:
        # Either the webhooks check fails naming the extra, or the command does:
        # never an "unexpected ImportError".
        key_env = {"TOKENBROKER_APP_PUBLIC_KEY": "a-key-that-is-never-read"}
        done = run_process(["doctor"], {**env, **key_env}, without=["jwt"])
        assert done.returncode in (FAILED, CONFIG)
        assert "pip install 'tokenbroker[webhooks]'" in done.stdout + done.stderr
        assert "unexpected" not in done.stderr
        assert "Traceback" not in done.stderr
        if done.stderr:
            assert_one_error_line(done.stderr, done.returncode, CONFIG)


class TestTheExtraForAMissingModule:
    def test_is_named_from_the_module_that_could_not_be_imported(self) -> None:
        error = ModuleNotFoundError("No module named 'redis'", name="redis")
        message = missing_extra(error)
        assert message is not None
        assert "pip install 'tokenbroker[redis]'" in message

    def test_is_found_behind_a_wrapping_import_error(self) -> None:
        try:
            try:
                import jwt.nothing_here  # noqa: F401
            except ImportError as inner:
                raise ImportError("the webhooks cannot load") from inner
        except ImportError as outer:
            message = missing_extra(outer)
        assert message is not None
        assert "pip install 'tokenbroker[webhooks]'" in message

    def test_an_unknown_module_is_not_an_extra(self) -> None:
        assert missing_extra(ModuleNotFoundError("nope", name="leftpad")) is None

    def test_every_extra_named_is_one_pyproject_declares(self) -> None:
        pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
        declared = set(pyproject["project"]["optional-dependencies"])
        assert set(EXTRAS.values()) <= declared
