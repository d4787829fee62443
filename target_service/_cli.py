"""``python -m target_service``: models build|verify|register|list, worker, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ._engine import DevicePreference
from ._errors import IntegrityError, ModelNotFoundError, ServiceError
from ._registry import DEFAULT_REGISTRY, ModelRef, Registry

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEFAULT_TOKEN_ENV = "ICHAOS_ADMIN_TOKEN"
T = TypeVar("T", int, float)
DEFAULT_STATE = Path(".ichaos") / "stack" / "state.json"


def _bounded(
    convert: Callable[[str], T], what: str, low: T, high: T | None = None, note: str = ""
) -> Callable[[str], T]:
    """An argparse type: ``convert`` the text, then check it lies in ``low..high``."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"{value} must be {bounds}{note}")
        return value

    return parse


_positive_int = _bounded(int, "an integer", 1)
_port = _bounded(int, "a port number", 0, 65535, " (0 lets the OS choose)")
_non_negative_float = _bounded(float, "a number", 0.0)


def _add_registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        default=Path(os.environ.get("ICHAOS_REGISTRY", DEFAULT_REGISTRY)),
        help="registry directory (default: $ICHAOS_REGISTRY or .ichaos/registry)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m target_service", description="The ichaos reference inference service."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = sub.add_parser("models", help="build, verify, register and list registry models")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    build = msub.add_parser("build", help="build the built-in models (primary, canary, fallback)")
    _add_registry(build)
    build.add_argument("names", nargs="*", metavar="MODEL", help="only these built-in models")
    build.add_argument("--force", action="store_true", help="rebuild even if intact")
    verify = msub.add_parser("verify", help="check every file against its manifest")
    _add_registry(verify)
    verify.add_argument("refs", nargs="*", metavar="MODEL[:VERSION]", help="default: everything")
    register = msub.add_parser("register", help="copy a local Hugging Face folder in")
    _add_registry(register)
    register.add_argument("path", type=Path, help="a save_pretrained folder")
    register.add_argument("--model", required=True, help="model name")
    register.add_argument("--version", required=True, help="version name, e.g. v3")
    listing = msub.add_parser("list", help="list model versions in the registry")
    _add_registry(listing)

    worker = sub.add_parser("worker", help="serve one model over HTTP")
    worker.add_argument("--model", metavar="NAME:VERSION", help="required unless --standby")
    worker.add_argument(
        "--standby",
        action="store_true",
        help='import everything, announce \'standby\', then read {"model", "port"} as one '
        "JSON line on stdin and start serving (the supervisor's warm spare)",
    )
    _add_registry(worker)
    worker.add_argument("--host", default="127.0.0.1")
    worker.add_argument("--port", type=_port, default=0, help="0 (default): the OS chooses")
    worker.add_argument("--port-file", type=Path, help="write the bound port here")
    worker.add_argument(
        "--device", type=DevicePreference, choices=list(DevicePreference), default="auto"
    )
    worker.add_argument("--max-batch-size", type=_positive_int, default=16)
    worker.add_argument("--max-wait-ms", type=_non_negative_float, default=10.0)
    worker.add_argument("--max-prompt-chars", type=_positive_int, default=8000)
    worker.add_argument("--threads", type=_positive_int, help="torch intra-op threads")
    worker.add_argument(
        "--fault-hooks", action="store_true", help="enable /admin/faults (needs the admin token)"
    )
    worker.add_argument(
        "--admin-token-env",
        default=DEFAULT_TOKEN_ENV,
        metavar="VAR",
        help=f"environment variable holding the admin token (default {DEFAULT_TOKEN_ENV})",
    )

    gateway = sub.add_parser("gateway", help="the client-facing gateway (the supervisor starts it)")
    gateway.add_argument("--config", type=Path, required=True, help="stack file")
    gateway.add_argument("--replicas", type=Path, required=True, help="replicas file (JSON)")
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=_port, default=0, help="0 (default): the OS chooses")
    gateway.add_argument("--admin-token-env", default=DEFAULT_TOKEN_ENV, metavar="VAR")

    stack = sub.add_parser("stack", help="run the whole stack: workers, gateway, supervisor")
    ssub = stack.add_subparsers(dest="stack_command", required=True, metavar="ACTION")
    up = ssub.add_parser("up", help="start the stack in the foreground (Ctrl-C stops it)")
    up.add_argument("--config", type=Path, help="stack file (default: the shipped stack.yaml)")
    _add_registry(up)
    for action in (up, ssub.add_parser("status", help="show the running stack"),
                   ssub.add_parser("down", help="stop the running stack")):  # fmt: skip
        action.add_argument(
            "--state",
            type=Path,
            default=DEFAULT_STATE,
            help=f"state file (default {DEFAULT_STATE})",
        )

    demo = sub.add_parser("demo", help="start a worker, ask it something, show the answer")
    _add_registry(demo)
    demo.add_argument("--model", default="primary:v1", metavar="NAME:VERSION")
    demo.add_argument("--prompt", default="The service answers every request")
    demo.add_argument("--max-new-tokens", type=_positive_int, default=24)
    return parser


def _models(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    if args.models_command == "build":
        from ._build import build_models

        for result in build_models(registry, args.names, force=args.force):
            state = "built" if result.built else "intact, kept"
            print(f"{result.ref}: {state} ({registry.path(result.ref)})")
        return EXIT_OK
    if args.models_command == "register":
        ref = ModelRef.parse(f"{args.model}:{args.version}", require_version=True)
        manifest = registry.register(
            args.path, ref, created_by=f"target_service models register {args.path.resolve()}"
        )
        print(f"{ref}: registered {len(manifest.files)} files at {registry.path(ref)}")
        return EXIT_OK
    if args.models_command == "list":
        refs = registry.versions()
        if not refs:
            print(f"no models in {registry.root}")
        for ref in refs:
            print(ref)
        return EXIT_OK
    return _verify(registry, args.refs)


def _verify(registry: Registry, texts: list[str]) -> int:
    refs: list[ModelRef] = []
    for text in texts or [r.name for r in registry.versions()]:
        refs.extend(registry.resolve(ModelRef.parse(text)))
    if not refs:
        raise ModelNotFoundError(f"no models in the registry at {registry.root}")
    failed = False
    for ref in sorted(set(refs)):
        try:
            registry.verify(ref)
        except IntegrityError as exc:
            failed = True
            for problem in exc.problems:
                print(f"{ref}: FAILED {problem.describe()}")
            continue
        print(f"{ref}: ok ({len(registry.manifest(ref).files)} files)")
    return EXIT_FAILED if failed else EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    from ._worker_app import WorkerSettings
    from ._worker_main import serve_worker

    token = os.environ.get(args.admin_token_env) or None
    if args.fault_hooks and token is None:
        raise ServiceError(f"--fault-hooks needs an admin token in ${args.admin_token_env}")
    if args.standby:
        args.model, args.port = _await_assignment()
    elif args.model is None:
        raise ServiceError("worker needs --model NAME:VERSION (or --standby)")
    settings = WorkerSettings(
        ref=ModelRef.parse(args.model, require_version=True),
        registry=args.registry,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_prompt_chars=args.max_prompt_chars,
        fault_hooks=args.fault_hooks,
        admin_token=token,
    )
    Registry(args.registry).resolve(settings.ref)  # a typo fails here, not after binding a port
    return serve_worker(
        settings, host=args.host, port=args.port, port_file=args.port_file, threads=args.threads
    )


def _await_assignment() -> tuple[str, int]:
    """Standby: pay every import now, then wait for the supervisor to say what to serve."""
    import json

    from ._engine import preload
    from ._serve import announcer

    preload()
    announce = announcer()
    announce({"event": "standby", "pid": os.getpid()})
    line = sys.stdin.readline()
    try:
        order = json.loads(line)
        return str(order["model"]), _port(str(order["port"]))
    except (ValueError, KeyError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ServiceError(f"standby: expected {{'model', 'port'}} on stdin, got {line!r}") from exc


def _gateway(args: argparse.Namespace) -> int:
    from ._gateway_main import read_replicas, serve_gateway
    from ._stack_config import load_stack_config

    config = load_stack_config(args.config)
    return serve_gateway(
        config,
        read_replicas(args.replicas),
        host=args.host,
        port=args.port,
        token_env=args.admin_token_env,
    )


def _stack(args: argparse.Namespace) -> int:
    from ._stack_config import default_stack_file, load_stack_config
    from ._supervisor import pid_alive, read_state, run_supervisor, stop_stack

    if args.stack_command == "up":
        path = (args.config or default_stack_file()).resolve()
        config = load_stack_config(path)
        registry = (config.registry or args.registry).resolve()
        Registry(registry).resolve(config.pools.primary.ref)  # fail before starting anything
        return run_supervisor(config, path, args.state.resolve(), registry)
    if args.stack_command == "down":
        stopped = stop_stack(args.state)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return EXIT_OK
    state = read_state(args.state)
    running = pid_alive(state.get("supervisor", {}).get("pid"))
    print(f"supervisor pid {state['supervisor']['pid']}: {'running' if running else 'NOT RUNNING'}")
    for child in filter(
        None, [state.get("gateway"), *state.get("workers", []), state.get("standby")]
    ):
        alive = "alive" if pid_alive(child.get("pid")) else "dead"
        print(
            f"  {child['name']:<12} {child.get('model') or '':<12} pid {child['pid']} ({alive}) "
            f"{child['url']} status={child['status']} restarts={child['restarts']}"
        )
    return EXIT_OK if running else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "models":
            return _models(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "gateway":
            return _gateway(args)
        if args.command == "stack":
            return _stack(args)
        from ._demo import run_demo

        return run_demo(args.registry, args.model, args.prompt, args.max_new_tokens)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if not isinstance(exc, IntegrityError) else EXIT_FAILED
    except KeyboardInterrupt:
        return 130
