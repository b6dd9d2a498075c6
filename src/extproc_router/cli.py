"""Command line: argv -> Settings -> the chosen command. The only module that exits."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from extproc_router import __version__, cli_offline
from extproc_router.exceptions import ConfigError, ModelError
from extproc_router.logs import configure_logging
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
    pools.add_argument(
        "--pool", action="append", default=[], help="serve only this pool (repeatable)"
    )

    up = commands.add_parser("up", help="run Envoy, the router and the demo pools together")
    _add_config(up, ports=tuple(_PORT_FLAGS))

    classify = commands.add_parser(
        "classify", help="show how prompts would be routed (no forwarding)"
    )
    _add_config(classify)
    classify.add_argument("prompt", nargs="?", help="a prompt; without it, read JSONL from stdin")
    classify.add_argument("--model", default="", help="the requested model (default: auto)")
    classify.add_argument("--json", action="store_true", help="print the full explanation")

    cli_offline.add_commands(commands, _add_config)

    health = commands.add_parser(
        "health", help="ask a router's gRPC health service (exit 0 when SERVING)"
    )
    health.add_argument("--address", default="127.0.0.1:50051", help="the router's HOST:PORT")
    health.add_argument(
        "--service",
        default="envoy.service.ext_proc.v3.ExternalProcessor",
        help="the service to ask about ('' for the whole server)",
    )
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")

    manifests = commands.add_parser(
        "render-manifests",
        help="write the deploy/ files rendered from router configs (Envoy, Istio, Helm)",
    )
    manifests.add_argument(
        "--root", type=Path, default=Path("."), help="the repository (default: .)"
    )
    manifests.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file is out of date"
    )

    export = commands.add_parser("export-model", help="export the ONNX encoder (build time)")
    export.add_argument("--output", "-o", type=Path, default=Path("models/all-MiniLM-L6-v2"))

    for name, text in (
        ("train", "fit the classifier heads on data/"),
        ("train-jailbreak", "fine-tune the jailbreak transformer on data/ (build time, torch)"),
        ("eval", "measure signals and routing on held-out data/"),
    ):
        command = commands.add_parser(name, help=text)
        _add_config(command)
        command.add_argument("--data", type=Path, default=Path("data"))
        if name == "eval":
            command.add_argument("--output", "-o", type=Path, default=Path("docs/EVALUATION.md"))
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    values = {
        key: getattr(args, name)
        for name, (key, _) in _PORT_FLAGS.items()
        if getattr(args, name, None) is not None
    }
    return override(settings, values, source="command-line port overrides") if values else settings


def _serve(settings: Settings, source: Path | None) -> int:
    from extproc_router.server import Server

    try:
        asyncio.run(Server(settings, source=source).serve())
    except ModelError as error:
        print(f"extproc-router: {error}", file=sys.stderr)
        return 3
    return 0


def _demo_pools(settings: Settings, only: tuple[str, ...] = ()) -> int:
    from extproc_router.demo import run_demo_pools

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await run_demo_pools(settings, stop, only)

    asyncio.run(run())
    return 0


def _classify(settings: Settings, args: argparse.Namespace) -> int:
    """One prompt from the command line, or JSONL lines from stdin: each a bare string, a
    `{"prompt": ...}` or a whole OpenAI request body."""
    from extproc_router.api import classify, request_body
    from extproc_router.exceptions import RequestError
    from extproc_router.live import LiveConfig

    if args.prompt is not None:
        bodies = [request_body(args.prompt, args.model)]
    else:
        bodies = []
        for line in sys.stdin:
            if not line.strip():
                continue
            item = json.loads(line)
            if isinstance(item, str):
                bodies.append(request_body(item, args.model))
            elif "prompt" in item and "messages" not in item:
                bodies.append(request_body(item["prompt"], item.get("model", args.model)))
            else:
                bodies.append(json.dumps(item))

    async def run() -> int:
        live = await LiveConfig.start(settings, args.config)
        failed = 0
        for body in bodies:
            try:
                outcome = await classify(live, body)
            except RequestError as error:
                failed += 1
                print(
                    json.dumps(
                        {
                            "error": {
                                "status": error.status,
                                "code": error.code,
                                "message": error.message,
                            }
                        }
                    )
                )
                continue
            decision = outcome.decision
            if args.json:
                print(json.dumps(outcome.explanation()))
            else:
                print(
                    f"{decision.pool.name}\t{decision.model}\t{decision.reason}\t"
                    f"{decision.header()}"
                )
        return 1 if failed else 0

    return asyncio.run(run())


def _train(settings: Settings, args: argparse.Namespace) -> int:
    from extproc_router.train import train

    for head, accuracy in train(settings.model, args.data).items():
        print(f"{head} head: {accuracy:.1%} top-1 on the held-out split")
    return 0


def _train_jailbreak(settings: Settings, args: argparse.Namespace) -> int:
    from extproc_router.train import train_jailbreak_model

    manifest = train_jailbreak_model(settings.model, args.data)
    print(
        f"jailbreak transformer: {manifest['examples']} examples in "
        f"{manifest['train_seconds']} s, written to {settings.model.jailbreak}"
    )
    return 0


def _eval(settings: Settings, args: argparse.Namespace) -> int:
    from extproc_router.evaluation import evaluate

    report = evaluate(settings, args.data)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
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
        '"content": "Prove that the square root of 2 is irrational, then generalise the proof '
        'to every prime."}]}'
    )
    return (
        f"extproc-router is up: Envoy {url} (admin :{settings.envoy.admin.port}), "
        f"router gRPC {settings.server.grpc.host}:{settings.server.grpc.port}, "
        f"metrics http://{admin.host}:{admin.port}/metrics, pools {pools}\n"
        f"Try:  curl -si {url}/v1/chat/completions -H 'content-type: application/json' "
        f"-d '{body}'\n"
        "Press Ctrl-C to stop."
    )


def _health(args: argparse.Namespace) -> int:
    from extproc_router.probe import check_health

    status = asyncio.run(check_health(args.address, service=args.service, deadline=args.timeout))
    print(f"{args.address} {args.service or '(server)'}: {status}")
    return 0 if status == "SERVING" else 1


def _render_manifests(args: argparse.Namespace) -> int:
    from extproc_router.manifests import render_manifests

    rendered = render_manifests(args.root)
    stale = [path for path, text in rendered.items() if _read(args.root / path) != text]
    if args.check:
        for path in stale:
            print(f"{path}: out of date; run `extproc-router render-manifests`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        (args.root / path).parent.mkdir(parents=True, exist_ok=True)
        (args.root / path).write_text(rendered[path])
        print(f"wrote {path}")
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "health":
        return _health(args)
    if args.command == "export-model":
        from extproc_router.export import export_model

        print(json.dumps(export_model(args.output), indent=2))
        return 0
    try:
        if args.command == "render-manifests":
            return _render_manifests(args)
        if args.command == "check-config":
            settings = load_settings(args.file)
            print(f"{args.file}: OK ({len(settings.pools)} pools)")
            return 0
        settings = _settings(args)
    except ConfigError as error:
        print(f"extproc-router: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.telemetry.log_format)
    if args.command == "serve":
        return _serve(settings, args.config)
    if args.command == "demo-pools":
        unknown = sorted(set(args.pool) - {pool.name for pool in settings.pools})
        if unknown:
            print(f"extproc-router: no pool named {', '.join(unknown)}", file=sys.stderr)
            return 2
        return _demo_pools(settings, tuple(args.pool))
    if args.command == "render-envoy":
        return _render(settings, args)
    if args.command == "up":
        return _up(settings)
    handlers = {
        "classify": _classify,
        "train": _train,
        "train-jailbreak": _train_jailbreak,
        "eval": _eval,
        "replay": cli_offline.replay,
        "shadow-report": cli_offline.shadow_report,
    }
    try:
        return handlers[args.command](settings, args)
    except ModelError as error:
        print(f"extproc-router: {error}", file=sys.stderr)
        return 3


def main() -> None:
    sys.exit(run())
