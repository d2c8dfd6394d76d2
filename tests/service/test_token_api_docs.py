"""The OpenAPI document names what the service serves; the docs page shows the Node
example exactly as the repository ships it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Route

from tokenbroker import TokenBroker
from tokenbroker.service import openapi
from tokenbroker.service.app import create_app

from .service_api import Api, serving

DOCS = Path(__file__).parents[2] / "docs"


@pytest.fixture
def api(memory_broker: TokenBroker) -> Iterator[Api]:
    with serving(memory_broker) as running_api:
        yield running_api


def v1_routes(broker: TokenBroker) -> set[str]:
    app = create_app(broker, token_api=True)
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    return {p.replace("{path:path}", "{path}") for p in paths if p.startswith("/v1/")}


def test_the_document_is_served_without_a_key_and_parses(api: Api) -> None:
    response = api.client.get("/v1/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.text)
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {openapi.TOKEN_ROUTE, openapi.PROXY_ROUTE}


def test_it_names_every_v1_route_but_itself(memory_broker: TokenBroker) -> None:
    documented = set(openapi.document()["paths"])
    assert v1_routes(memory_broker) - {"/v1/openapi.json"} == documented


def test_both_endpoints_need_the_key_and_list_their_errors() -> None:
    document = openapi.document()
    scheme = document["components"]["securitySchemes"]["serviceKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    token = document["paths"][openapi.TOKEN_ROUTE]["get"]
    assert token["security"] == [{"serviceKey": []}]
    assert {"200", "400", "401", "403", "404", "409", "429", "502", "503"} <= set(
        token["responses"]
    )
    schema = token["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert set(document["components"]["schemas"][schema.rsplit("/", 1)[1]]["required"]) == {
        "access_token",
        "token_type",
        "expires_at",
        "refresh_at",
    }
    for method in openapi.PROXY_METHODS:
        proxy = document["paths"][openapi.PROXY_ROUTE][method]
        assert proxy["security"] == [{"serviceKey": []}]
        assert {"400", "401", "403", "413", "429", "503", "504"} <= set(proxy["responses"])
    # every $ref resolves
    refs = re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(document))
    assert refs
    for ref in refs:
        node = document
        for part in ref.split("/"):
            node = node[part]  # a KeyError: a dangling $ref
        assert isinstance(node, dict)


def test_the_page_shows_the_node_example_as_shipped() -> None:
    page = (DOCS / "token-service.md").read_text(encoding="utf-8")
    example = (DOCS / "examples" / "token-client.mjs").read_text(encoding="utf-8")
    blocks = re.findall(r"^```js\n(.*?)^```$", page, re.MULTILINE | re.DOTALL)
    assert example in blocks
    assert f"`GET {openapi.TOKEN_ROUTE}`" in page
    assert f"`ANY {openapi.PROXY_ROUTE}`" in page
    assert "```go" in page
    assert "curl" in page


def test_the_example_reads_its_settings_from_the_environment() -> None:
    example = (DOCS / "examples" / "token-client.mjs").read_text(encoding="utf-8")
    for name in ("TOKENBROKER_URL", "TOKENBROKER_KEY", "APP", "INSTANCE"):
        assert f'"{name}"' in example
    assert "access_token)" in example  # used for the fingerprint, never printed
    assert "console.log(JSON.stringify(token" not in example
