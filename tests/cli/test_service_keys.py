"""``tokenbroker service-key add|list|revoke``: printed once, kept hashed, revoked for good."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbroker import store_from_url
from tokenbroker.service.keys import KEY, ServiceKeys

from .conftest import Invoke


@pytest.fixture
def keys(sqlite_url: str) -> Iterator[ServiceKeys]:
    """The keys in the store the CLI's environment names, read independently."""
    store = store_from_url(sqlite_url)
    yield ServiceKeys(store, cache_ttl=0)
    store.close()


def test_add_prints_the_key_alone_on_stdout_and_a_note_on_stderr(
    run: Invoke, keys: ServiceKeys
) -> None:
    result = run("service-key", "add", "billing", "--app", "default", "--scope", "token")
    assert result.exit_code == 0, result.stderr
    (key,) = result.stdout.splitlines()
    assert KEY.fullmatch(key)
    assert "shown this once" in result.stderr
    assert key not in result.stderr
    found = keys.authenticate(key)
    assert found is not None
    assert (found.name, found.apps, found.scopes) == ("billing", ("default",), ("token",))


def test_the_default_scope_is_proxy_and_json_carries_the_record(
    run: Invoke, keys: ServiceKeys
) -> None:
    result = run("service-key", "add", "caller", "--app", "default", "--json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["name"] == "caller"
    assert shown["apps"] == ["default"]
    assert shown["scopes"] == ["proxy"]
    assert shown["active"] is True
    assert keys.authenticate(shown["key"]) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app", "shop"], "unknown app 'shop' for --app (apps: default)"),
        (["--app", "default", "--scope", "admin"], "Invalid value for '--scope'"),
        ([], "Missing option '--app'"),
    ],
    ids=["unknown-app", "unknown-scope", "no-app"],
)
def test_bad_input_is_a_usage_error_and_makes_no_key(
    run: Invoke, keys: ServiceKeys, args: list[str], message: str
) -> None:
    result = run("service-key", "add", "billing", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert keys.list() == []


def test_a_name_that_is_no_slug_or_is_taken_is_refused(run: Invoke) -> None:
    bad = run("service-key", "add", "Billing!", "--app", "default")
    assert bad.exit_code == 2
    assert "not a slug" in bad.stderr
    assert run("service-key", "add", "billing", "--app", "default").exit_code == 0
    taken = run("service-key", "add", "billing", "--app", "default")
    assert taken.exit_code == 2
    assert "revoke it first" in taken.stderr
    assert taken.stdout == ""


def test_several_apps_from_a_config_file(tmp_path: Path, run: Invoke, sqlite_url: str) -> None:
    config = tmp_path / "tokenbroker.toml"
    config.write_text(
        f'store = "{sqlite_url}"\n'
        '[apps.shop]\napp_id = "shop-id"\napp_secret = "shop-secret"\n'
        '[apps.crm]\napp_id = "crm-id"\napp_secret = "crm-secret"\n',
        encoding="utf-8",
    )
    result = run(
        "--config", str(config), "service-key", "add", "both", "--app", "shop", "--app", "crm"
    )
    assert result.exit_code == 0, result.stderr
    listed = run("--config", str(config), "service-key", "list", "--json")
    assert [k["apps"] for k in json.loads(listed.stdout)] == [["shop", "crm"]]


def test_list_shows_names_and_never_a_key_or_hash(run: Invoke) -> None:
    key = run("service-key", "add", "billing", "--app", "default").stdout.strip()
    run("service-key", "add", "audit", "--app", "default", "--scope", "token")
    run("service-key", "revoke", "billing")
    table = run("service-key", "list")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "APPS", "SCOPES", "CREATED", "REVOKED"]
    assert [line.split()[0] for line in lines[1:]] == ["audit", "billing"]
    assert lines[1].split()[-1] == "-"  # audit is active
    assert lines[2].split()[-1] != "-"  # billing is revoked
    as_json = json.loads(run("service-key", "list", "--json").stdout)
    assert [(k["name"], k["active"]) for k in as_json] == [("audit", True), ("billing", False)]
    for output in (table.stdout, json.dumps(as_json)):
        assert key not in output
        assert "sha256" not in output


def test_revoke_refuses_the_key_and_an_unknown_name_is_an_error(
    run: Invoke, keys: ServiceKeys
) -> None:
    key = run("service-key", "add", "billing", "--app", "default").stdout.strip()
    assert keys.authenticate(key) is not None
    revoked = run("service-key", "revoke", "billing")
    assert revoked.exit_code == 0
    assert "revoked service key 'billing'" in revoked.stdout
    assert keys.authenticate(key) is None
    unknown = run("service-key", "revoke", "ghost")
    assert unknown.exit_code == 2
    assert unknown.stderr.splitlines() == [
        "tokenbroker: error: there is no service key named 'ghost'"
    ]
