"""What the CLI tests share: the environment, an in-process runner, a real process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

import pytest
from click.testing import CliRunner, Result

from tokenbroker.cli import main
from tokenbroker.testing.emulator import WixEmulator

from ..conftest import APP_ID, APP_SECRET
from ..workers import worker_env

Invoke = Callable[..., Result]


@pytest.fixture
def env(wix_emulator: WixEmulator, sqlite_url: str) -> dict[str, str]:
    return {
        "TOKENBROKER_APP_ID": APP_ID,
        "TOKENBROKER_APP_SECRET": APP_SECRET,
        "TOKENBROKER_STORE": sqlite_url,
        "TOKENBROKER_API_URL": wix_emulator.url,
    }


@pytest.fixture
def run(env: dict[str, str]) -> Invoke:
    """``tokenbroker ARGS...`` in this process; ``name=value`` keywords override the env."""
    runner = CliRunner()

    def invoke(*args: str, **extra_env: str) -> Result:
        return runner.invoke(
            main,
            list(args),
            env={**env, **extra_env},
            catch_exceptions=False,
            prog_name="tokenbroker",
        )

    return invoke


# Runs the CLI with some modules made unimportable, as on an install without their extra.
_BLOCKING = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError
from tokenbroker.cli import main
main(sys.argv[2:], prog_name="tokenbroker")
"""


def run_process(
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    without: Sequence[str] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``tokenbroker ARGS...`` as a real process; ``without`` names modules it cannot import."""
    command = (
        [sys.executable, "-c", _BLOCKING, ",".join(without), *args]
        if without
        else [sys.executable, "-m", "tokenbroker.cli", *args]
    )
    inherited = {k: v for k, v in worker_env().items() if not k.startswith("TOKENBROKER_")}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**inherited, **env},
        timeout=timeout,
        check=False,
    )
