"""Worker processes for the tests that race real processes against each other.

A worker is ``python -c SCRIPT ARGV...`` with ``src`` on its ``PYTHONPATH``. The
script prints ``ready`` once it is set up, waits for one line on stdin (the go
signal, so that every worker starts together) and prints its result as JSON on
its last stdout line.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import tokenbroker

SRC = str(Path(tokenbroker.__file__).resolve().parent.parent)

Worker = subprocess.Popen[str]


def worker_env(env_extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with ``src`` first on ``PYTHONPATH``, plus ``env_extra``."""
    path = [SRC, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **(env_extra or {})}


def start_all(
    script: str,
    argvs: Iterable[Sequence[str]],
    *,
    env_extra: Mapping[str, str] | None = None,
    ready: bool = True,
) -> list[Worker]:
    """Start one worker per argv, then (with ``ready``) wait until each prints ``ready``.

    A worker that prints anything else first (or dies) is an AssertionError
    showing its stderr; every worker started here is killed then.
    """
    env = worker_env(env_extra)
    workers: list[Worker] = []
    try:
        workers.extend(  # one by one: those started before a failure are killed too
            subprocess.Popen(
                [sys.executable, "-c", script, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for argv in argvs
        )
        if ready:
            for worker in workers:
                _await_ready(worker)
    except BaseException:
        kill(workers)
        raise
    return workers


def start(
    script: str,
    argv: Sequence[str],
    *,
    env_extra: Mapping[str, str] | None = None,
    ready: bool = True,
) -> Worker:
    """Start one worker; see :func:`start_all`."""
    return start_all(script, [argv], env_extra=env_extra, ready=ready)[0]


def _await_ready(worker: Worker) -> None:
    assert worker.stdout is not None
    line = worker.stdout.readline()
    if line.strip() != "ready":
        worker.kill()
        _, err = worker.communicate(timeout=30)
        raise AssertionError(
            f"worker {_argv(worker)} did not get ready "
            f"(exit code {worker.returncode}, first line {line!r}); stderr:\n{err}"
        )


def _argv(worker: Worker) -> list[str]:
    return cast("list[str]", worker.args)[3:]  # [python, -c, script, *argv]


def go(*workers: Worker) -> None:
    """Release workers waiting for the go signal."""
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()


def collect(workers: Sequence[Worker], timeout: float = 120) -> list[Any]:
    """Wait for each worker to exit 0 and parse its last stdout line as JSON.

    Workers still running afterwards (after a failure or a timeout) are killed.
    """
    try:
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, (
                f"worker {_argv(worker)} exited {worker.returncode}; stderr:\n{err}"
            )
            assert out.strip(), f"worker {_argv(worker)} printed nothing; stderr:\n{err}"
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        kill(workers)


def run(
    script: str,
    argvs: Iterable[Sequence[str]],
    *,
    env_extra: Mapping[str, str] | None = None,
    ready: bool = True,
    timeout: float = 120,
) -> list[Any]:
    """Start the workers, release them all at once and collect their results."""
    workers = start_all(script, argvs, env_extra=env_extra, ready=ready)
    try:
        go(*workers)
        return collect(workers, timeout=timeout)
    finally:
        kill(workers)


def kill(workers: Iterable[Worker], timeout: float = 15) -> None:
    """SIGKILL the workers still running, reap them and close their pipes."""
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=timeout)
        for stream in (worker.stdin, worker.stdout, worker.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):  # a "go" still buffered for a dead worker
                    stream.close()
