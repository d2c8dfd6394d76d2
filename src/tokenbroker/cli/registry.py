"""``tokenbroker installations``: the registry, without the app secret."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import click

from ..core.health import REMOVED, HealthState, InstallationHealth
from ..core.installation import Installation
from ..core.token import validate_id
from .app import app_option, main, registry


@main.group()
def installations() -> None:
    """The registry of installations (app instances)."""


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


def _health(health: InstallationHealth) -> str:
    """The health columns: the state, then what it means."""
    if health.failing:
        error = health.error
        last = f"{error.kind}: {error.message}" if error else "-"
        detail = (
            f"since {_when(health.since)}, {health.failures} failure(s), "
            f"next attempt {_when(health.next_attempt)}, last error {last}"
        )
    elif health.dead:
        why = "removed" if health.dead_reason == REMOVED else "not installed"
        detail = f"{why}, since {_when(health.since)}"
    else:
        detail = (
            f"last token {_when(health.last_token_at)}, "
            f"next refresh {_when(health.next_refresh_at)}"
        )
    return f"{health.state.value}\t{detail}"


def _row(inst: Installation, health: InstallationHealth) -> str:
    installed = inst.installed_at.isoformat(timespec="seconds") if inst.installed_at else "-"
    setup = "setup finished" if inst.setup_finished_at else "setup pending"
    return f"{inst.instance_id}\t{inst.status.value}\t{installed}\t{setup}\t{_health(health)}"


@installations.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--all", "include_removed", is_flag=True, help="Include removed installations.")
@click.option(
    "--health",
    "state",
    type=click.Choice([s.value for s in HealthState]),
    help="Only installations in this state (dead includes removed ones).",
)
@app_option
def installations_list(
    as_json: bool, include_removed: bool, state: str | None, app: str | None
) -> None:
    """List recorded installations and their health.

    Health is what fetching tokens has seen: healthy; failing (Wix refused the
    last fetch: since when, how many failures, the last error and its request id,
    when Wix is asked again); or dead (Wix says the app is not installed, or the
    installation was removed). Also the last token's time and its next refresh.
    """
    found = _listed(app, include_removed or state == HealthState.DEAD.value, state)
    if as_json:
        click.echo(
            json.dumps(
                [{**inst.to_json(), "health": health.to_json()} for inst, health in found],
                indent=2,
            )
        )
        return
    for inst, health in found:
        click.echo(_row(inst, health))
    if not found:
        click.echo(f"no {state} installations" if state else "no installations recorded", err=True)


@installations.command("add")
@click.argument("instance_ids", nargs=-1, required=True)
@app_option
def installations_add(instance_ids: Sequence[str], app: str | None) -> None:
    """Record installations by instance id (idempotent)."""
    for instance_id in instance_ids:
        validate_id(instance_id)  # validate them all before writing any
    registry_ = registry(app=app)
    try:
        for instance_id in instance_ids:
            registry_.add(instance_id)
            click.echo(f"recorded {instance_id}")
    finally:
        registry_.store.close()


@installations.command("remove")
@click.argument("instance_ids", nargs=-1, required=True)
@app_option
def installations_remove(instance_ids: Sequence[str], app: str | None) -> None:
    """Mark installations removed and forget their tokens."""
    for instance_id in instance_ids:
        validate_id(instance_id)
    registry_ = registry(app=app)
    try:
        for instance_id in instance_ids:
            found = registry_.remove(instance_id)
            click.echo(f"removed {instance_id}" if found else f"{instance_id} was not recorded")
    finally:
        registry_.store.close()


@installations.command("reset-health")
@click.argument("instance_ids", nargs=-1, required=True)
@app_option
def installations_reset_health(instance_ids: Sequence[str], app: str | None) -> None:
    """Forget that installations are failing or dead: the next fetch asks Wix at once.

    For after fixing what made Wix refuse them. A removed installation stays
    refused until it is added again.
    """
    for instance_id in instance_ids:
        validate_id(instance_id)
    registry_ = registry(app=app)
    try:
        for instance_id in instance_ids:
            before = registry_.health(instance_id)
            if before.dead and before.dead_reason == REMOVED:
                click.echo(f"{instance_id} is removed; add it again to fetch its tokens")
            elif before.healthy:
                click.echo(f"{instance_id} was healthy")
            else:
                registry_.reset_health(instance_id)
                click.echo(f"reset {instance_id} (was {before.state.value})")
    finally:
        registry_.store.close()


def _listed(
    app: str | None, include_removed: bool, state: str | None
) -> list[tuple[Installation, InstallationHealth]]:
    registry_ = registry(app=app)
    try:
        return registry_.list_with_health(include_removed=include_removed, state=state)
    finally:
        registry_.store.close()
