"""The "Writing a provider" page's examples hold: its test runs, its TOML loads, and
the request it shows is the one the provider sends."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from tokenbroker import ProviderConfig, Secret, TokenKey
from tokenbroker.providers import OAuth2Provider

PAGE = Path(__file__).parents[2] / "docs" / "writing-a-provider.md"


def blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    fence = re.compile(
        r"(<!--\s*not run:[^>]*-->\s*\n)?^```" + language + r"[ \t]*\n(.*?)^```",
        re.MULTILINE | re.DOTALL,
    )
    return [m[2] for m in fence.finditer(text) if not m[1]]


def test_the_pages_python_examples_run() -> None:
    ran = 0
    for code in blocks("python"):
        namespace: dict[str, Any] = {}
        exec(compile(code, str(PAGE), "exec"), namespace)
        for name, function in namespace.items():
            if name.startswith("test_") and callable(function):
                function()
                ran += 1
    assert ran >= 1


def test_the_worked_example_sends_the_request_the_page_shows() -> None:
    [config] = [b for b in blocks("toml") if "[apps.crm.provider_options]" in b]
    app = tomllib.loads(config)["apps"]["crm"]
    provider = OAuth2Provider(
        ProviderConfig(
            app_id=app["app_id"],
            app_secret=Secret("s3cr3t"),
            api_url="https://unused.example",
            options=app["provider_options"],
        )
    )
    request = provider.token_request(TokenKey("oauth2", "crm", "acme-corp"))
    [shown] = blocks("http")
    head, _, body = shown.partition("\n\n")
    assert f"Authorization: {request.headers['Authorization']}" in head
    assert body.strip() == request.content.decode()
