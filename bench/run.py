"""Run tokenbroker's benchmarks: ``python bench/run.py [--quick] [--json PATH] [--only NAME]``.

Each benchmark is a module next to this file with ``NAME`` and
``run(config: harness.Config) -> list[harness.Table]``; it may raise ``harness.Skip``
when it cannot run here. Add a new one by importing it and listing it in BENCHMARKS.

Figures are ratios to a baseline timed in the same run, because the machines are
shared and noisy. Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import backends
import bulk_refresh
import cache_hit
import herd
import proxy
import scale
import token_api
import token_herd
import tokenbroker
import webhooks
from harness import Config, Skip
from served import BenchFailed

# In the order they run. Planned: per-backend misses.
BENCHMARKS: list[ModuleType] = [
    cache_hit,
    backends,
    herd,
    scale,
    webhooks,
    bulk_refresh,
    token_api,
    token_herd,
    proxy,
]

DEFAULT_JSON = Path(__file__).parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    names = [b.NAME for b in BENCHMARKS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--only", action="append", choices=names, metavar="NAME", help=f"one of {names}"
    )
    args = parser.parse_args(argv)
    config = Config.make(quick=args.quick)

    print(
        f"tokenbroker {tokenbroker.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; "
        f"{'quick' if config.quick else 'full'} run: best of {config.repeat}, "
        f"~{config.target_seconds}s per timed loop"
    )
    results: list[dict[str, Any]] = []
    failures = 0
    for bench in BENCHMARKS:
        if args.only and bench.NAME not in args.only:
            continue
        print(f"\n## {bench.NAME}", flush=True)
        try:
            tables = bench.run(config)
        except Skip as why:
            print(f"skipped: {why}")
            results.append({"name": bench.NAME, "skipped": str(why), "tables": []})
            continue
        except BenchFailed as why:  # a correctness check failed: say so, run the rest
            print(f"FAILED: {why}")
            results.append({"name": bench.NAME, "failed": str(why), "tables": []})
            failures += 1
            continue
        for table in tables:
            print()
            print(table.render())
        results.append({"name": bench.NAME, "tables": [t.to_json() for t in tables]})

    report = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tokenbroker": tokenbroker.__version__,
        "python": sys.version,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "quick": config.quick,
        "repeat": config.repeat,
        "target_seconds": config.target_seconds,
        "benchmarks": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
