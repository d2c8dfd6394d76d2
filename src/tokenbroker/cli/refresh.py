"""``tokenbroker refresh``: the bulk refresher, once or as a worker."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import click

from ..broker import RefreshReport, TokenBroker, TokenBrokers
from ..broker.refresh import RateBudget
from .app import app_broker, app_option, choose_app, cli_config, main, one_line, scrub, verbose

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1h30m`` → seconds."""
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 2h or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in parts)


if TYPE_CHECKING:
    _FloatParam = click.ParamType[float]
else:  # click < 8.2 has no generic ParamType
    _FloatParam = click.ParamType


class _Duration(_FloatParam):
    """A duration of at least ``minimum`` seconds."""

    name = "duration"

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float | int):
            seconds = float(value)
        elif str(value).strip().startswith("-"):
            self.fail(f"{value!r} is negative; a duration is 0 or more", param, ctx)
        else:
            try:
                seconds = parse_duration(str(value))
            except click.BadParameter as exc:
                self.fail(exc.message, param, ctx)
        if not seconds >= self.minimum:  # NaN included
            self.fail(f"{value!r} is less than the minimum of {self.minimum:g}s", param, ctx)
        return seconds


MIN_INTERVAL: Final = 1.0
"""The shortest --interval: a worker that never pauses would spin on Wix and the store."""


@main.command()
@click.option(
    "--within",
    type=_Duration(),
    default="30m",
    show_default=True,
    help="Refresh tokens that are missing or expire within this long.",
)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many token requests a second per app (default: no cap).",
)
@click.option("--watch", is_flag=True, help="Keep running, refreshing every --interval.")
@click.option(
    "--interval",
    type=_Duration(minimum=MIN_INTERVAL),
    default="5m",
    show_default=True,
    help="With --watch: time between runs (at least 1s).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: on when stderr is a terminal).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print each run's report as one JSON object a line (with --watch, a line a run).",
)
@app_option
@verbose
def refresh(
    within: float,
    concurrency: int,
    rate: float | None,
    watch: bool,
    interval: float,
    progress: bool | None,
    as_json: bool,
    app: str | None,
) -> None:
    """Refresh every installed instance whose token is missing or due.

    Without --app, every configured app is refreshed, one after another, each
    with its own --concurrency workers and rate guard. Exits 1 if any failed.
    """
    show = sys.stderr.isatty() if progress is None else progress
    config = cli_config()
    if app is None and len(config.apps) > 1:
        with TokenBrokers(config, degrade=watch) as brokers:
            for name in brokers.names:
                _cap(brokers[name], rate)
            while True:
                reports = _refresh_all(brokers, within, concurrency, show)
                failed = False
                for name, report in reports.items():
                    failed = failed or bool(report.failed) or report.error is not None
                    if as_json:
                        click.echo(_as_json(name, report))
                        continue
                    click.echo(f"{name}: {_clean(report.summary())}")
                    if report.error is not None:
                        click.echo(f"{name}: not run: {_clean(report.error)}", err=True)
                    for instance_id, reason in report.failed:
                        click.echo(f"{name}: failed {instance_id}: {_clean(reason)}", err=True)
                if not _again(watch, failed, interval):
                    return
    chosen = choose_app(config, app)
    with app_broker(config, chosen, degrade=watch) as current:
        _cap(current, rate)
        while True:
            report = _refresh_once(current, within, concurrency, show)
            if as_json:
                click.echo(_as_json(chosen.name, report))
            else:
                click.echo(report.summary())
                for instance_id, reason in report.failed:
                    click.echo(f"failed {instance_id}: {_clean(reason)}", err=True)
            if not _again(watch, bool(report.failed), interval):
                return


def _cap(broker: TokenBroker, rate: float | None) -> None:
    """Give the app's refresher its --rate (requests a second), one budget for every run."""
    if rate is not None:
        broker.refresher.budget = RateBudget(rate)


def _as_json(app: str, report: RefreshReport) -> str:
    """One run's report as a JSON line: counts of the refreshed and fresh (a fleet may
    be large), each skipped and failed one with its reason (one line, no secrets)."""

    def reasons(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
        return [{"instance_id": i, "reason": _clean(why)} for i, why in pairs]

    return json.dumps(
        {
            "app": app,
            "total": report.total,
            "refreshed": len(report.refreshed),
            "fresh": len(report.fresh),
            "skipped": reasons(report.skipped),
            "failed": reasons(report.failed),
            "seconds": round(report.seconds, 3),
            "error": None if report.error is None else _clean(report.error),
        }
    )


def _clean(reason: str) -> str:
    return one_line(scrub(reason))


def _again(watch: bool, failed: bool, interval: float) -> bool:
    """Whether to run again (after the interval); a single run that failed exits 1."""
    if not watch:
        if failed:
            sys.exit(1)
        return False
    time.sleep(interval)
    return True


def _refresh_once(broker: TokenBroker, within: float, concurrency: int, show: bool) -> Any:
    if not show:
        return broker.refresh_due(within=within, concurrency=concurrency)
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(transient=True) as bar:
        task = bar.add_task("refreshing", total=None)

        def start(total: int) -> None:  # after each page of the listing: the total so far
            bar.update(task, total=total)

        def step(result: Any) -> None:
            bar.advance(task)

        return broker.refresh_due(
            within=within, concurrency=concurrency, progress=step, on_start=start
        )


def _refresh_all(
    brokers: TokenBrokers, within: float, concurrency: int, show: bool
) -> dict[str, RefreshReport]:
    """Every app's refresh, with a progress bar per app when ``show``."""
    if not show:
        return brokers.refresh_due(within=within, concurrency=concurrency)
    from rich.progress import Progress, TaskID  # noqa: PLC0415

    with Progress(transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def start(name: str, total: int) -> None:
            # Told again after each page of the listing, with the total so far.
            if name in tasks:
                bar.update(tasks[name], total=total)
            else:
                tasks[name] = bar.add_task(f"refreshing {name}", total=total)

        def step(name: str, result: Any) -> None:
            bar.advance(tasks[name])

        return brokers.refresh_due(
            within=within, concurrency=concurrency, progress=step, on_start=start
        )
