"""``tokenbroker serve --token-api`` as a real process: on a Unix socket made 0660, and its
options checked before anything starts."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner

from tokenbroker import ConfigError, store_from_url
from tokenbroker.cli import main
from tokenbroker.service.keys import ServiceKeys
from tokenbroker.service.server import unix_socket
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET
from ..polling import wait_until
from ..workers import worker_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix sockets")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # not tmp_path: a Unix socket's path must stay under about 100 bytes
    made = Path(tempfile.mkdtemp(prefix="tb-"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


def environment(wix_emulator: WixEmulator, sqlite_url: str) -> dict[str, str]:
    env = {k: v for k, v in worker_env().items() if not k.startswith("TOKENBROKER_")}
    env.update(
        TOKENBROKER_APP_ID=APP_ID,
        TOKENBROKER_APP_SECRET=APP_SECRET,
        TOKENBROKER_STORE=sqlite_url,
        TOKENBROKER_API_URL=wix_emulator.url,
    )
    return env


def answers(client: httpx2.Client) -> bool:
    with contextlib.suppress(httpx2.TransportError):
        return client.get("/healthz").status_code == 200
    return False


def test_serve_on_a_unix_socket_made_0660_serves_the_token_api(
    wix_emulator: WixEmulator, sqlite_url: str, socket_dir: Path
) -> None:
    path = socket_dir / "tokenbroker.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "tokenbroker.cli", "serve", "--token-api", "--uds", str(path)],
        env=environment(wix_emulator, sqlite_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    transport = httpx2.HTTPTransport(uds=str(path))
    try:
        with httpx2.Client(transport=transport, base_url="http://tokenbroker") as client:
            wait_until(
                lambda: server.poll() is not None or answers(client), "serve on the socket", 30
            )
            assert server.poll() is None, server.communicate()[1]
            assert stat.S_ISSOCK(path.stat().st_mode)
            assert stat.S_IMODE(path.stat().st_mode) == 0o660
            store = store_from_url(sqlite_url)
            try:
                key = ServiceKeys(store).add("sidecar", ["default"], ["token"])
            finally:
                store.close()
            response = client.get(
                "/v1/apps/default/instances/inst-1/token",
                headers={"Authorization": f"Bearer {key}"},
            )
        assert response.status_code == 200
        assert response.json()["access_token"] in wix_emulator.issued_tokens_for("inst-1")
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode in (0, -signal.SIGINT), err
    assert not path.exists()  # the socket is removed on the way out
    assert APP_SECRET not in err


def test_a_socket_file_in_use_or_not_a_socket_is_refused(socket_dir: Path) -> None:
    plain = socket_dir / "plain"
    plain.write_text("x")
    with pytest.raises(ConfigError, match="not a socket"), unix_socket(str(plain)):
        pass
    live = socket_dir / "live.sock"
    with unix_socket(str(live)):
        with (
            pytest.raises(ConfigError, match="another process is listening"),
            unix_socket(str(live)),
        ):
            pass
        assert stat.S_IMODE(os.stat(live).st_mode) == 0o660


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-api", "--uds", "x.sock", "--port", "9000"], "--uds and --port exclude"),
        (["--token-api", "--uds", "x.sock", "--host", "0.0.0.0"], "--uds and --host exclude"),
        (["--no-proxy"], "--no-proxy needs --token-api"),
        (["--token-api", "--proxy-max-body", "-1"], "Invalid value for '--proxy-max-body'"),
        (["--token-api", "--key-concurrency", "0"], "Invalid value for '--key-concurrency'"),
        (["--token-api", "--app", "shop"], "unknown app 'shop' for --app"),
    ],
    ids=["uds-port", "uds-host", "no-proxy", "max-body", "concurrency", "unknown-app"],
)
def test_bad_options_are_usage_errors(args: list[str], message: str, sqlite_url: str) -> None:
    env = {"TOKENBROKER_APP_ID": APP_ID, "TOKENBROKER_APP_SECRET": APP_SECRET}
    env["TOKENBROKER_STORE"] = sqlite_url
    result = CliRunner().invoke(main, ["serve", *args], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
