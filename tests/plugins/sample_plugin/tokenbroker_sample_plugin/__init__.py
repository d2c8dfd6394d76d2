"""A plugin someone else wrote: a ``sample://`` store and an install hook.

Nothing in tokenbroker knows this module; it arrives through the ``tokenbroker``
entry-point group of its own distribution.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tokenbroker import hookimpl
from tokenbroker.backends.memory import MemoryStore

# What the hooks saw in this process (tests read it).
SEEN: list[tuple[str, str]] = []


class SampleStore(MemoryStore):
    """The memory store under another name: enough to prove the scheme is ours."""


@hookimpl
def tokenbroker_register_backends(register: Any) -> None:
    register("sample", lambda url: SampleStore(url=url), description="the sample plugin's store")


def _note(kind: str, instance_id: str) -> None:
    SEEN.append((kind, instance_id))
    path = os.environ.get("SAMPLE_PLUGIN_LOG")
    if path:  # a server process reports to the test through a file
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps([kind, instance_id]) + "\n")


@hookimpl
def tokenbroker_app_installed(event: Any, broker: Any) -> None:
    if os.environ.get("SAMPLE_PLUGIN_FAIL") == "1":
        raise RuntimeError("the sample plugin fails on purpose")
    _note("installed", event.instance_id)


@hookimpl
def tokenbroker_app_removed(event: Any, broker: Any) -> None:
    _note("removed", event.instance_id)
