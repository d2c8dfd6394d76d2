"""Every Python example in README.md runs, against the Wix emulator.

Each fenced ``python`` block is one test, named by its index, its line in the README
and its first line. The placeholders a reader replaces with their own values are
replaced here with the emulator's (``PLACEHOLDERS``), and the ``TOKENBROKER_*``
variables point ``TokenBroker.from_env()`` at the emulator and a fresh SQLite file.
A block that only makes sense inside the reader's own app is marked with
``<!-- not run: reason -->`` just before its fence, and is reported as skipped with
that reason. Functions named ``test_*`` that a block defines are called, with the
``wix_emulator`` fixture when they ask for it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from tokenbroker import TokenBroker
from tokenbroker.testing.emulator import WixEmulator
from tokenbroker.testing.pytest_plugin import TEST_APP_ID, TEST_APP_SECRET, TEST_INSTANCE_ID
from tokenbroker.testing.webhooks import make_key_pair

README = Path(__file__).parents[1] / "README.md"

# At least this many blocks must run: a README whose examples all vanished, or were
# all marked "not run", must not pass by testing nothing.
MIN_BLOCKS_RUN = 6

FENCE = re.compile(
    r"(?:<!--\s*not run:(?P<reason>[^>]*?)-->[ \t]*\n(?:[ \t]*\n)*)?"
    r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)

# What the reader is told to replace, and what it is replaced with here. The README
# spells each placeholder exactly so (quotes included); see its Development section.
PLACEHOLDERS = {
    '"your-app-id"': "APP_ID",
    '"your-app-secret"': "APP_SECRET",
    '"https://www.wixapis.com"': "API_URL",
    '"e7a8c1b2-..."': "INSTANCE_ID",
    '"sqlite:////var/lib/myapp/tokens.db"': "STORE",
}

# None of these may survive the substitution: a block that would still talk to the
# real Wix or write outside the test's directory fails instead.
FORBIDDEN_AFTER_SUBSTITUTION = ("wixapis.com", "/var/lib/", "your-app-", "e7a8c1b2")


@attrs.frozen
class Block:
    index: int
    line: int
    code: str
    skip_reason: str | None

    @property
    def first_line(self) -> str:
        return next((ln.strip() for ln in self.code.splitlines() if ln.strip()), "")

    @property
    def test_id(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.]+", "-", self.first_line).strip("-")[:40]
        return f"block{self.index}-line{self.line}-{slug}"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for index, match in enumerate(FENCE.finditer(text), start=1):
        reason = match.group("reason")
        line = text.count("\n", 0, match.start("code"))  # the fence's own line, 1-based
        blocks.append(
            Block(
                index=index,
                line=line,
                code=match.group("code"),
                skip_reason=None if reason is None else reason.strip(),
            )
        )
    return blocks


BLOCKS = readme_blocks()


def substitute(code: str, values: dict[str, str]) -> str:
    for placeholder, name in PLACEHOLDERS.items():
        code = code.replace(placeholder, repr(values[name]))
    return code


@pytest.fixture
def readme_env(
    wix_emulator: WixEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The values the placeholders stand for, and an environment for ``from_env()``."""
    store = f"sqlite:///{tmp_path / 'tokens.db'}"
    _, public_pem = make_key_pair()
    for name in ("TOKENBROKER_APP_SECRET_FILE", "TOKENBROKER_ENCRYPTION_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOKENBROKER_APP_ID", TEST_APP_ID)
    monkeypatch.setenv("TOKENBROKER_APP_SECRET", TEST_APP_SECRET)
    monkeypatch.setenv("TOKENBROKER_STORE", store)
    monkeypatch.setenv("TOKENBROKER_API_URL", wix_emulator.url)
    monkeypatch.setenv("TOKENBROKER_APP_PUBLIC_KEY", public_pem)
    monkeypatch.setenv("TOKENBROKER_AUTO_FINISH_SETUP", "false")
    return {
        "APP_ID": TEST_APP_ID,
        "APP_SECRET": TEST_APP_SECRET,
        "API_URL": wix_emulator.url,
        "INSTANCE_ID": TEST_INSTANCE_ID,
        "STORE": store,
    }


def _brokers_in(namespace: dict[str, Any]) -> Iterator[TokenBroker]:
    return (value for value in namespace.values() if isinstance(value, TokenBroker))


@pytest.mark.parametrize("block", BLOCKS, ids=[block.test_id for block in BLOCKS])
def test_the_readme_example_runs(
    block: Block, readme_env: dict[str, str], wix_emulator: WixEmulator
) -> None:
    if block.skip_reason is not None:
        pytest.skip(f"README.md:{block.line} is marked not run: {block.skip_reason}")
    code = substitute(block.code, readme_env)
    for forbidden in FORBIDDEN_AFTER_SUBSTITUTION:
        assert forbidden not in code, (
            f"README.md:{block.line}: {forbidden!r} is left after substituting the "
            f"placeholders; spell it as one of {sorted(PLACEHOLDERS)}"
        )
    namespace: dict[str, Any] = {"__name__": f"readme_block_{block.index}"}
    try:
        # Padded so that a traceback's line numbers are the README's own.
        exec(compile("\n" * block.line + code, str(README), "exec"), namespace)
        fixtures = {"wix_emulator": wix_emulator}
        for name, value in list(namespace.items()):
            if name.startswith("test_") and inspect.isfunction(value):
                wanted = inspect.signature(value).parameters
                value(**{arg: fixtures[arg] for arg in wanted})
    finally:
        for broker in _brokers_in(namespace):  # closing twice is harmless
            broker.close()


def test_enough_readme_examples_run() -> None:
    run = [block for block in BLOCKS if block.skip_reason is None]
    assert len(run) >= MIN_BLOCKS_RUN, (
        f"only {len(run)} of {len(BLOCKS)} README python blocks run; expected at least "
        f"{MIN_BLOCKS_RUN}"
    )


def test_every_skipped_readme_example_says_why() -> None:
    for block in BLOCKS:
        if block.skip_reason is not None:
            assert block.skip_reason, f"README.md:{block.line}: 'not run:' needs a reason"


def test_the_fence_pattern_sees_every_python_block() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(BLOCKS) == len(re.findall(r"^```python[ \t]*$", text, re.MULTILINE))


def test_the_readme_links_resolve() -> None:
    """Relative links name files of the repository; ``#anchors`` name README headings."""
    text = README.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)
    }
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (README.parent / path).exists(), f"README links to missing {path}"
        elif anchor:
            assert anchor in anchors, f"README links to missing heading #{anchor}"
