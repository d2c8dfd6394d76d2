"""``tokenbroker serve`` as a real process: it starts, verifies, records, stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx2
import pytest
import uvicorn.config
from click.testing import CliRunner

from tokenbroker import TokenBroker
from tokenbroker.cli import main
from tokenbroker.cli.serve import LOG_LEVELS
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.webhooks import make_key_pair, sign_webhook

from .conftest import APP_ID, APP_SECRET
from .webhook_helpers import free_port
from .workers import worker_env

PRIVATE, PUBLIC = make_key_pair()


def test_serve_answers_verified_webhooks_and_refuses_forged_ones(
    wix_emulator: WixEmulator, sqlite_url: str
) -> None:
    port = free_port()
    env = worker_env(
        {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": sqlite_url,
            "TOKENBROKER_API_URL": wix_emulator.url,
            "TOKENBROKER_APP_PUBLIC_KEY": PUBLIC,
        }
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenbroker.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # poll until it answers (or died)
            assert server.poll() is None, server.communicate()[1]
            try:
                if httpx2.get(base + "/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "tokenbroker serve did not come up"
            time.sleep(0.05)
        body = sign_webhook(
            PRIVATE, event_type="AppInstalled", instance_id="inst-5", data={"appId": APP_ID}
        )
        assert httpx2.post(base + "/webhooks/wix", content=body).status_code == 200
        forged = sign_webhook(
            make_key_pair(fresh=True)[0], event_type="AppInstalled", instance_id="inst-6"
        )
        refused = httpx2.post(base + "/webhooks/wix", content=forged)
        assert refused.status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode in (0, -signal.SIGINT)
    assert APP_SECRET not in err
    with TokenBroker(
        app_id=APP_ID, app_secret=APP_SECRET, store=sqlite_url, api_url=wix_emulator.url
    ) as broker:
        assert [i.instance_id for i in broker.installations()] == ["inst-5"]


def test_serve_refuses_to_start_without_a_public_key(sqlite_url: str) -> None:
    env = worker_env(
        {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": sqlite_url,
        }
    )
    env.pop("TOKENBROKER_APP_PUBLIC_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "tokenbroker.cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "TOKENBROKER_APP_PUBLIC_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.linesep.join(result.stderr.splitlines()).count("error") == 1


class TestServeOptions:
    def test_an_unknown_log_level_is_a_usage_error(self) -> None:
        result = CliRunner().invoke(main, ["serve", "--log-level", "loud"])
        assert result.exit_code == 2
        assert "Invalid value for '--log-level'" in result.output
        assert "unexpected" not in result.output

    def test_the_log_levels_offered_are_uvicorns(self) -> None:
        assert set(LOG_LEVELS) == set(uvicorn.config.LOG_LEVELS)

    @pytest.mark.parametrize(
        "option",
        [
            ["--receipt-timeout", "0"],
            ["--timeout-keep-alive", "0"],
            ["--limit-concurrency", "0"],
        ],
        ids=["receipt-timeout", "keep-alive", "limit"],
    )
    def test_a_limit_out_of_range_is_a_usage_error(self, option: list[str]) -> None:
        result = CliRunner().invoke(main, ["serve", *option])
        assert result.exit_code == 2
        assert "Invalid value" in result.output


# Run the CLI (or an import) with one module made unimportable, as on a base install.
WITHOUT = """\
import sys
sys.modules[sys.argv[1]] = None  # import of it raises ImportError
if sys.argv[2] == "import":
    try:
        import tokenbroker.service.app
    except ImportError as exc:
        from tokenbroker import ConfigError
        print(type(exc).__name__, isinstance(exc, ConfigError), exc, sep="|")
        raise SystemExit(3)
    raise SystemExit(0)
from tokenbroker.cli import main
main(sys.argv[2:], prog_name="tokenbroker")
"""


def run_without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = worker_env(
        {
            "TOKENBROKER_APP_ID": APP_ID,
            "TOKENBROKER_APP_SECRET": APP_SECRET,
            "TOKENBROKER_STORE": "memory://",
            "TOKENBROKER_APP_PUBLIC_KEY": PUBLIC,
        }
    )
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, module, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestMissingServerExtra:
    def test_importing_the_service_without_starlette_names_the_extra(self) -> None:
        result = run_without("starlette", "import")
        assert result.returncode == 3, result.stderr
        kind, is_config_error, message = result.stdout.strip().split("|")
        assert kind == "MissingServerExtra"
        assert is_config_error == "True"
        assert "pip install 'tokenbroker[server]'" in message

    @pytest.mark.parametrize("module", ["starlette", "uvicorn"])
    def test_serve_without_the_extra_is_one_line_naming_it(self, module: str) -> None:
        result = run_without(module, "serve", "--port", str(free_port()))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1
        assert f"needs {module}" in result.stderr
        assert "pip install 'tokenbroker[server]'" in result.stderr
        assert "Traceback" not in result.stderr
