"""The offline commands that read logs rather than serve traffic: `replay` (what a log of
requests would have cost, decided by this config) and `shadow-report` (primary vs shadow
answers). Kept apart from cli.py so the serving commands stay readable; they return exit
codes and never exit themselves."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

from extproc_router.settings import Settings

__all__ = ["add_commands", "replay", "shadow_report"]


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    add_config: Callable[[argparse.ArgumentParser], None],
) -> None:
    """`add_config` is the CLI's own --config flag, so every command reads config alike."""
    replay = commands.add_parser(
        "replay", help="decide a log of requests (no forwarding) and total what it would cost"
    )
    add_config(replay)
    replay.add_argument("traffic", type=Path, help="JSONL: request bodies or audit log lines")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.add_argument("--plot", type=Path, help="also write a PNG: cost by pool, vs baseline")
    replay.add_argument(
        "--scale-to",
        type=float,
        help="the request volume the log stands for (e.g. a month's); costs scale with it",
    )
    replay.add_argument(
        "--input-tokens",
        type=int,
        default=500,
        help="input tokens of a line with neither usage nor text (default 500)",
    )
    replay.add_argument(
        "--output-tokens",
        type=int,
        default=256,
        help="output tokens of a line without usage (default 256)",
    )
    replay.add_argument(
        "--no-models",
        action="store_true",
        help="decide without the encoder: keyword and complexity signals only",
    )
    report = commands.add_parser(
        "shadow-report", help="compare the primary and shadow answers of mirrored requests"
    )
    add_config(report)
    report.add_argument("log", type=Path, help="the shadow log (shadow.log_path)")
    report.add_argument("--json", action="store_true", help="print the summary as JSON")


def replay(settings: Settings, args: argparse.Namespace) -> int:
    from extproc_router.live import LiveConfig
    from extproc_router.replay import TrafficError, format_table, load_traffic
    from extproc_router.replay import replay as decide_all

    try:
        records = load_traffic(args.traffic)
    except TrafficError as error:
        print(f"extproc-router replay: {error}", file=sys.stderr)
        return 2
    scale = args.scale_to / len(records) if args.scale_to else 1.0

    async def run() -> int:
        live = (
            LiveConfig(settings, None, None)
            if args.no_models
            else await LiveConfig.start(settings, None)
        )
        try:
            report = await decide_all(
                records,
                live.pipeline,
                source=str(args.traffic),
                scale=scale,
                input_tokens=args.input_tokens,
                output_tokens=args.output_tokens,
            )
        except TrafficError as error:
            print(f"extproc-router replay: {error}", file=sys.stderr)
            return 2
        sys.stdout.write(
            json.dumps(report.as_dict(), indent=2) + "\n" if args.json else format_table(report)
        )
        if args.plot is not None:
            from extproc_router.replay_plot import plot_report

            plot_report(report, args.plot)
            print(f"wrote {args.plot}", file=sys.stderr)
        return 0

    return asyncio.run(run())


def shadow_report(settings: Settings, args: argparse.Namespace) -> int:
    from extproc_router.shadow_report import format_report, load_report

    try:
        routes = load_report(args.log, settings)
    except (OSError, ValueError, KeyError) as error:
        print(f"extproc-router shadow-report: {args.log}: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([route.as_dict() for route in routes], indent=2))
    else:
        sys.stdout.write(format_report(routes, str(args.log)))
    return 0
