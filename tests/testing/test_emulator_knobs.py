"""The emulator's knobs refuse bad values, it binds or fails in one clear error, and what
it remembers and counts stays bounded and true."""

from __future__ import annotations

import ast
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner

import tokenbroker.testing.emulator as emulator_package
from tokenbroker.cli import main
from tokenbroker.testing.emulator import BindError, WixEmulator

from .raw_http import APP_ID, APP_SECRET, INSTANCE, TOKEN_BODY

NOT_FINITE = [math.nan, math.inf, -math.inf]


@pytest.fixture
def emulator() -> Iterator[WixEmulator]:
    emu = WixEmulator(APP_ID, APP_SECRET)
    emu.install(INSTANCE)
    with emu:
        yield emu


@pytest.fixture
def client(emulator: WixEmulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emulator.url, timeout=5) as c:
        yield c


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def get_token(client: httpx2.Client) -> str:
    response = client.post(
        "/oauth2/token", content=TOKEN_BODY, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class TestConstructorKnobs:
    @pytest.mark.parametrize(
        "knob",
        [
            *({"token_lifetime": v} for v in [*NOT_FINITE, 0, -5]),
            *({"latency": v} for v in [*NOT_FINITE, -0.1]),
            *({"request_timeout": v} for v in [*NOT_FINITE, 0, -1]),
            {"port": -1},
            {"port": 65536},
            {"host": ""},
            {"max_tokens": 0},
        ],
        ids=lambda knob: "-".join(f"{k}={v}" for k, v in knob.items()),
    )
    def test_a_value_out_of_range_is_a_value_error_naming_the_knob(
        self, knob: dict[str, Any]
    ) -> None:
        (name,) = knob

        with pytest.raises(ValueError, match=name):
            WixEmulator(**knob)

    @pytest.mark.parametrize(
        "knob",
        [
            {"token_lifetime": "60"},
            {"token_lifetime": True},
            {"latency": None},
            {"port": "8080"},
            {"port": True},
            {"clock": 1_700_000_000.0},
            {"max_tokens": 1.5},
        ],
        ids=lambda knob: "-".join(f"{k}={v!r}" for k, v in knob.items()),
    )
    def test_a_value_of_the_wrong_type_is_a_type_error_naming_the_knob(
        self, knob: dict[str, Any]
    ) -> None:
        (name,) = knob

        with pytest.raises(TypeError, match=name):
            WixEmulator(**knob)

    @pytest.mark.parametrize(("app_id", "app_secret"), [("", "s"), ("a", "")])
    def test_empty_credentials_are_refused(self, app_id: str, app_secret: str) -> None:
        with pytest.raises(ValueError, match="must not be empty"):
            WixEmulator(app_id, app_secret)


class TestSettableKnobs:
    @pytest.mark.parametrize("value", [*NOT_FINITE, 0, -1])
    def test_token_lifetime_must_be_finite_and_positive(self, value: float) -> None:
        emu = WixEmulator()
        with pytest.raises(ValueError, match="token_lifetime"):
            emu.token_lifetime = value
        assert emu.token_lifetime == 14400

    @pytest.mark.parametrize("value", [*NOT_FINITE, -1])
    def test_latency_must_be_finite_and_not_negative(self, value: float) -> None:
        emu = WixEmulator()
        with pytest.raises(ValueError, match="latency"):
            emu.latency = value
        assert emu.latency == 0.0

    def test_a_fractional_lifetime_is_sent_as_set(self) -> None:
        emulator = WixEmulator(APP_ID, APP_SECRET, token_lifetime=2.5)
        emulator.install(INSTANCE)
        with emulator, httpx2.Client(base_url=emulator.url) as c:
            response = c.post(
                "/oauth2/token", content=TOKEN_BODY, headers={"Content-Type": "application/json"}
            )

        assert response.json()["expires_in"] == 2.5


class TestFaultKnobs:
    @pytest.mark.parametrize(
        "inject",
        [
            lambda e: e.fail_next(100),
            lambda e: e.fail_next(101),
            lambda e: e.fail_next(204),
            lambda e: e.fail_next(204, body=b"x"),
            lambda e: e.fail_next(205, body=b"x"),
            lambda e: e.fail_next(304),
            lambda e: e.fail_next(304, body=b"x"),
            lambda e: e.fail_next(200),
            lambda e: e.fail_next(302),
            lambda e: e.fail_next(600),
            lambda e: e.fail_next(500, headers={"X-Evil": "a\r\nSet-Cookie: x=1"}),
            lambda e: e.fail_next(500, headers={"Bad Name": "x"}),
            lambda e: e.fail_next(500, times=-1),
            lambda e: e.garbage_next(status=204),
            lambda e: e.garbage_next(status=304),
            lambda e: e.rate_limit_next(math.nan),
            lambda e: e.rate_limit_next(math.inf),
            lambda e: e.rate_limit_next(-0.5),
            lambda e: e.hang_next(math.nan),
            lambda e: e.hang_next(math.inf),
            lambda e: e.wait_for_in_flight(1, timeout=math.nan),
            lambda e: e.wait_for_in_flight(1, timeout=-1),
            lambda e: e.install(""),
        ],
        ids=[
            "fail-100",
            "fail-101",
            "fail-204",
            "fail-204-with-body",
            "fail-205-with-body",
            "fail-304",
            "fail-304-with-body",
            "fail-200-without-body",
            "fail-302-without-body",
            "fail-600",
            "header-injection",
            "header-name",
            "negative-times",
            "garbage-204",
            "garbage-304",
            "retry-after-nan",
            "retry-after-inf",
            "retry-after-negative",
            "hang-nan",
            "hang-inf",
            "wait-timeout-nan",
            "wait-timeout-negative",
            "empty-instance-id",
        ],
    )
    def test_a_bad_value_is_a_value_error_when_queued(
        self, emulator: WixEmulator, inject: Callable[[WixEmulator], None]
    ) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
            inject(emulator)

        assert emulator.calls == {}

    @pytest.mark.parametrize(
        "inject",
        [
            lambda e: e.fail_next(500, times=True),
            lambda e: e.fail_next(500, times=2.0),
            lambda e: e.fail_next(True),
            lambda e: e.fail_next(500, body=42),
            lambda e: e.garbage_next(body="text, not bytes"),
            lambda e: e.rate_limit_next("1"),
        ],
        ids=["times-bool", "times-float", "status-bool", "body-int", "garbage-str", "retry-str"],
    )
    def test_a_value_of_the_wrong_type_is_a_type_error_when_queued(
        self, emulator: WixEmulator, inject: Callable[[WixEmulator], None]
    ) -> None:
        with pytest.raises(TypeError):
            inject(emulator)

    def test_no_bad_fault_is_left_queued(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        with pytest.raises(ValueError, match="cannot carry a body"):
            emulator.fail_next(204, body=b"x")

        get_token(client)

    def test_a_malformed_success_answer_can_still_be_injected_with_a_body(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        # Deliberate: the provider tests feed 200s with garbage bodies through fail_next.
        emulator.fail_next(200, body={"access_token": 1})

        response = client.post(
            "/oauth2/token", content=TOKEN_BODY, headers={"Content-Type": "application/json"}
        )

        assert (response.status_code, response.json()) == (200, {"access_token": 1})

    @pytest.mark.parametrize(
        ("retry_after", "sent"), [(0, "0"), (0.2, "1"), (2.0, "2"), (2.01, "3"), (3600, "3600")]
    )
    def test_retry_after_is_sent_in_whole_seconds_rounded_up(
        self, emulator: WixEmulator, client: httpx2.Client, retry_after: float, sent: str
    ) -> None:
        emulator.rate_limit_next(retry_after)

        response = client.post(
            "/oauth2/token", content=TOKEN_BODY, headers={"Content-Type": "application/json"}
        )

        assert (response.status_code, response.headers["retry-after"]) == (429, sent)

    def test_a_fault_repeated_many_times_is_queued_once(
        self, emulator: WixEmulator, client: httpx2.Client
    ) -> None:
        emulator.fail_next(503, times=10**9)

        statuses = [client.post("/oauth2/token", content=TOKEN_BODY).status_code for _ in range(3)]

        assert statuses == [503, 503, 503]
        emulator.clear_faults()
        get_token(client)


class TestBinding:
    def test_a_busy_port_is_one_bind_error_naming_host_and_port(self, busy_port: int) -> None:
        emu = WixEmulator(port=busy_port)
        fds_before = open_fds()

        with pytest.raises(
            BindError, match=rf"^cannot listen on 127\.0\.0\.1:{busy_port}: "
        ) as raised:
            emu.start()

        assert isinstance(raised.value, OSError)
        assert "Errno" not in str(raised.value)
        assert not emu.running
        assert open_fds() == fds_before  # no half-built server holds a socket
        emu.stop()  # harmless after a failed start

    def test_an_emulator_that_failed_to_bind_starts_once_the_port_is_free(self) -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            emu = WixEmulator(port=port)
            with pytest.raises(BindError):
                emu.start()

        with emu:
            assert emu.url == f"http://127.0.0.1:{port}"

    def test_an_unknown_host_is_a_bind_error_too(self) -> None:
        with pytest.raises(BindError, match=r"cannot listen on no-such-host\.invalid:0: "):
            WixEmulator(host="no-such-host.invalid").start()

    def test_the_cli_on_a_busy_port_prints_one_line_and_exits_1(self, busy_port: int) -> None:
        result = CliRunner().invoke(main, ["emulator", "--port", str(busy_port)])

        assert result.exit_code == 1
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"tokenbroker: error: cannot listen on 127.0.0.1:{busy_port}: ")

    def test_the_cli_refuses_a_latency_that_is_not_finite_in_one_line_with_rc_2(self) -> None:
        # A subprocess with a timeout: an emulator that accepted NaN would serve forever.
        done = subprocess.run(
            [sys.executable, "-m", "tokenbroker", "emulator", "--latency", "nan"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "tokenbroker: error: emulator: latency must be finite, got nan"
        ]


class TestWhatItRemembers:
    def test_issued_tokens_are_forgotten_oldest_first_beyond_max_tokens(self) -> None:
        emu = WixEmulator(APP_ID, APP_SECRET, max_tokens=3)
        emu.install(INSTANCE)
        with emu, httpx2.Client(base_url=emu.url) as client:
            tokens = [get_token(client) for _ in range(5)]
            forgotten = client.get("/apps/v1/instance", headers={"Authorization": tokens[0]})
            kept = client.get("/apps/v1/instance", headers={"Authorization": tokens[2]})

        assert emu.issued_tokens_for(INSTANCE) == tokens[2:]
        assert forgotten.status_code == 401
        assert kept.status_code == 200

    def test_a_pause_ends_with_the_server(self) -> None:
        emu = WixEmulator(APP_ID, APP_SECRET)
        emu.install(INSTANCE)
        emu.start()
        emu.pause()
        emu.stop()

        with emu, httpx2.Client(base_url=emu.url, timeout=5) as client:
            get_token(client)  # a pause that outlived stop() would hold this until timeout


class TestCounting:
    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/oauth2/token"), ("PUT", "/apps/v1/bi-event"), ("POST", "/apps/v1/instance")],
    )
    def test_a_405_is_not_a_call_of_the_endpoint(
        self, emulator: WixEmulator, client: httpx2.Client, method: str, path: str
    ) -> None:
        assert client.request(method, path).status_code == 405

        assert emulator.calls == {}
        assert emulator.token_requests == 0

    def test_a_404_is_not_counted(self, emulator: WixEmulator, client: httpx2.Client) -> None:
        assert client.get("/oauth/nowhere").status_code == 404

        assert emulator.calls == {}


class TestHowItDescribesItself:
    def test_its_repr_names_public_knobs_not_private_fields(self, emulator: WixEmulator) -> None:
        text = repr(emulator)

        assert text.startswith(f"WixEmulator(app_id={APP_ID!r}, url={emulator.url!r}")
        assert "_app_id" not in text
        assert "_latency" not in text
        assert APP_SECRET not in text

    def test_docstrings_use_no_sphinx_roles_the_docs_render_literally(self) -> None:
        package = Path(emulator_package.__file__).parent
        roles = re.compile(r":(attr|meth|class|func|mod|exc|obj|data):`")
        found = {
            f"{path.name}:{number}"
            for path in package.glob("*.py")
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if roles.search(line)
        }

        assert not found

    def test_its_modules_import_only_the_standard_library_attrs_and_each_other(self) -> None:
        package = Path(emulator_package.__file__).parent
        allowed = set(sys.stdlib_module_names) | {"attrs", "__future__"}
        foreign = set()
        for path in package.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                foreign |= {f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed}

        assert not foreign
