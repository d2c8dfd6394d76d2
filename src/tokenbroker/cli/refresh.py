"""``tokenbroker refresh``: the bulk refresher, once or as a worker."""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import click

from ..broker import TokenBroker
from .app import configured_broker, main, one_line, scrub, verbose

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
@verbose
def refresh(
    within: float, concurrency: int, watch: bool, interval: float, progress: bool | None
) -> None:
    """Refresh every installed instance whose token is missing or due."""
    show = sys.stderr.isatty() if progress is None else progress
    with configured_broker(degrade=watch) as current:
        while True:
            report = _refresh_once(current, within, concurrency, show)
            click.echo(report.summary())
            for instance_id, reason in report.failed:
                click.echo(f"failed {instance_id}: {one_line(scrub(reason))}", err=True)
            if not watch:
                if report.failed:
                    sys.exit(1)
                return
            time.sleep(interval)


def _refresh_once(broker: TokenBroker, within: float, concurrency: int, show: bool) -> Any:
    if not show:
        return broker.refresh_due(within=within, concurrency=concurrency)
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(transient=True) as bar:
        task = bar.add_task("refreshing", total=None)

        def start(total: int) -> None:
            bar.update(task, total=total)

        def step(result: Any) -> None:
            bar.advance(task)

        return broker.refresh_due(
            within=within, concurrency=concurrency, progress=step, on_start=start
        )
