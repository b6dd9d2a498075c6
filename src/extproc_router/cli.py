"""Command line: argv -> Settings -> the chosen command. The only module that exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from extproc_router import __version__
from extproc_router.exceptions import ConfigError
from extproc_router.settings import Settings, load_settings, override

__all__ = ["main"]

# Flag -> (dotted config key, environment variable): ports a user may move without a file.
_PORT_FLAGS = {
    "listen_port": ("envoy.listen.port", "EXTPROC_ROUTER_LISTEN_PORT"),
    "envoy_admin_port": ("envoy.admin.port", "EXTPROC_ROUTER_ENVOY_ADMIN_PORT"),
    "grpc_port": ("server.grpc.port", "EXTPROC_ROUTER_GRPC_PORT"),
    "admin_port": ("server.admin.port", "EXTPROC_ROUTER_ADMIN_PORT"),
}


def _add_config(parser: argparse.ArgumentParser, *, ports: Sequence[str] = ()) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=os.environ.get("EXTPROC_ROUTER_CONFIG"),
        help="router config YAML (default: the embedded example config)",
    )
    for name in ports:
        key, env = _PORT_FLAGS[name]
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            default=os.environ.get(env),
            help=f"override {key} (env {env})",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extproc-router",
        description="Envoy ext_proc router for OpenAI-style LLM traffic.",
    )
    parser.add_argument("--version", action="version", version=f"extproc-router {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the router's gRPC and admin servers")
    _add_config(serve, ports=("grpc_port", "admin_port"))

    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", type=Path)

    render = commands.add_parser("render-envoy", help="write the Envoy config for a router config")
    _add_config(render, ports=tuple(_PORT_FLAGS))
    render.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")

    pools = commands.add_parser("demo-pools", help="serve the demo OpenAI-compatible pools")
    _add_config(pools)

    up = commands.add_parser("up", help="run Envoy, the router and the demo pools together")
    _add_config(up, ports=tuple(_PORT_FLAGS))
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    values = {
        key: getattr(args, name)
        for name, (key, _) in _PORT_FLAGS.items()
        if getattr(args, name, None) is not None
    }
    return override(settings, values, source="command-line port overrides") if values else settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _serve(settings: Settings) -> int:
    from extproc_router.server import Server

    asyncio.run(Server(settings).serve())
    return 0


def _demo_pools(settings: Settings) -> int:
    from extproc_router.demo import run_demo_pools

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_demo_pools(settings, stop)

    asyncio.run(run())
    return 0


def _render(settings: Settings, args: argparse.Namespace) -> int:
    from extproc_router.envoy_config import render_envoy_yaml

    source = str(args.config) if args.config else "the embedded example config"
    text = render_envoy_yaml(settings, source=source)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


def _up(settings: Settings) -> int:
    from extproc_router.stack import StackError, start_stack

    with tempfile.TemporaryDirectory(prefix="extproc-router-") as workdir:
        try:
            stack = start_stack(settings, Path(workdir))
        except StackError as error:
            print(f"extproc-router up: {error}", file=sys.stderr)
            return 1
        print(_ready_banner(settings), flush=True)
        try:
            while not (dead := stack.dead()):
                time.sleep(0.5)
            print(
                f"extproc-router up: {', '.join(dead)} stopped; stopping the rest", file=sys.stderr
            )
            return 1
        except KeyboardInterrupt:
            return 0
        finally:
            stack.stop_all()


def _ready_banner(settings: Settings) -> str:
    listen, admin = settings.envoy.listen, settings.server.admin
    url = f"http://{listen.host}:{listen.port}"
    pools = ", ".join(f"{p.name}={p.model}@{','.join(p.endpoints)}" for p in settings.pools)
    body = (
        '{"model": "auto", "messages": [{"role": "user", '
        '"content": "Prove that the square root of 2 is irrational."}]}'
    )
    return (
        f"extproc-router is up: Envoy {url} (admin :{settings.envoy.admin.port}), "
        f"router gRPC {settings.server.grpc.host}:{settings.server.grpc.port}, "
        f"metrics http://{admin.host}:{admin.port}/metrics, pools {pools}\n"
        f"Try:  curl -si {url}/v1/chat/completions -H 'content-type: application/json' "
        f"-d '{body}'\n"
        "Press Ctrl-C to stop."
    )


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            settings = load_settings(args.file)
            print(f"{args.file}: OK ({len(settings.pools)} pools)")
            return 0
        settings = _settings(args)
    except ConfigError as error:
        print(f"extproc-router: {error}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    if args.command == "serve":
        return _serve(settings)
    if args.command == "demo-pools":
        return _demo_pools(settings)
    if args.command == "render-envoy":
        return _render(settings, args)
    return _up(settings)


def main() -> None:
    sys.exit(run())
