"""The ``ichaos`` command line.

Model commands run the reference service's own CLI in a child process: the harness talks to the
service over HTTP and processes, never by importing its internals (and never needs torch itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from collections.abc import Sequence

from . import __version__

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ichaos", description="Chaos and reliability experiments for LLM inference services."
    )
    parser.add_argument("--version", action="version", version=f"ichaos {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models = sub.add_parser(
        "models",
        help="build, verify, register or list models of the reference service's registry",
        add_help=False,
    )
    models.add_argument("rest", nargs=argparse.REMAINDER, help="see `ichaos models --help`")
    return parser


def _service_models(args: list[str]) -> int:
    if (
        importlib.util.find_spec("target_service") is None
        or importlib.util.find_spec("torch") is None
    ):
        print(
            "error: the reference service is not installed: "
            "pip install 'inference-chaos[service]' (or run ./dev setup)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    completed = subprocess.run(
        [sys.executable, "-m", "target_service", "models", *args], check=False
    )
    return completed.returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "models":
        return _service_models(list(args.rest))
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands first
