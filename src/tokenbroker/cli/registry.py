"""``tokenbroker installations``: the registry, without the app secret."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from ..core.installation import Installation
from ..core.token import validate_id
from .app import main, registry


@main.group()
def installations() -> None:
    """The registry of installations (app instances)."""


def _row(inst: Installation) -> str:
    installed = inst.installed_at.isoformat(timespec="seconds") if inst.installed_at else "-"
    setup = "setup finished" if inst.setup_finished_at else "setup pending"
    return f"{inst.instance_id}\t{inst.status.value}\t{installed}\t{setup}"


@installations.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed installations.")
def installations_list(as_json: bool, include_removed: bool) -> None:
    """List recorded installations."""
    found = _listed(include_removed)
    if as_json:
        click.echo(json.dumps([inst.to_json() for inst in found], indent=2))
        return
    for inst in found:
        click.echo(_row(inst))
    if not found:
        click.echo("no installations recorded", err=True)


@installations.command("add")
@click.argument("instance_ids", nargs=-1, required=True)
def installations_add(instance_ids: Sequence[str]) -> None:
    """Record installations by instance id (idempotent)."""
    for instance_id in instance_ids:
        validate_id(instance_id)  # validate them all before writing any
    registry_ = registry()
    try:
        for instance_id in instance_ids:
            registry_.add(instance_id)
            click.echo(f"recorded {instance_id}")
    finally:
        registry_.store.close()


@installations.command("remove")
@click.argument("instance_ids", nargs=-1, required=True)
def installations_remove(instance_ids: Sequence[str]) -> None:
    """Mark installations removed and forget their tokens."""
    for instance_id in instance_ids:
        validate_id(instance_id)
    registry_ = registry()
    try:
        for instance_id in instance_ids:
            found = registry_.remove(instance_id)
            click.echo(f"removed {instance_id}" if found else f"{instance_id} was not recorded")
    finally:
        registry_.store.close()


def _listed(include_removed: bool) -> list[Installation]:
    registry_ = registry()
    try:
        return registry_.list(include_removed=include_removed)
    finally:
        registry_.store.close()
