"""The ``ichaos`` command line.

Model commands run the reference service's own CLI in a child process: the harness talks to the
service over HTTP and processes, never by importing its internals (and never needs torch itself).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from slo import SLOFileError, read_document_text

from ._checks import wrong_backend
from ._errors import ReportError, ScenarioError
from ._events import Observer
from ._gameday import load_gameday, run_gameday
from ._loading import LoadedScenario, load_scenario
from ._options import add_cli_options
from ._progress import Progress
from ._recording import recorders
from ._reference import scenario_reference, stack_reference
from ._report import render_index, render_run
from ._runner import Runner, RunSettings
from ._scenario import Backend
from ._schema import SchemaKind
from ._schema import schema as render_schema
from ._stackfile import MAX_STACK_BYTES, is_services_stack, load_stack_file
from ._version import __version__
from .shards import sharding_problem

EXIT_USAGE = 2
REPORTS = Path("reports")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ichaos", description="Chaos and reliability experiments for LLM inference services."
    )
    parser.add_argument("--version", action="version", version=f"ichaos {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gameday = sub.add_parser(
        "gameday",
        help="run a game day: scenarios and operator steps in order, with global aborts",
        description="Exit 0: every scenario passed and every operator step was confirmed; 1: "
        "something failed, was not confirmed, or the exercise stopped on an abort; 2: invalid "
        "file; 3: harness error.",
    )
    gameday.add_argument("file", type=Path, metavar="FILE")
    gameday.add_argument("--yes", action="store_true", help="confirm operator steps unattended")
    add_cli_options(gameday, without=("backend",))  # a game day's scenarios say theirs
    gameday.add_argument("--quiet", action="store_true", help="no per-request progress")
    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of scenario, SLO or services stack files, for editors",
        description="For yaml-language-server (VS Code's YAML extension and others), put "
        "`# yaml-language-server: $schema=PATH` at the top of a file, or map the schema to a "
        "glob in the editor's settings.",
    )
    schema.add_argument(
        "kind", nargs="?", choices=[k.value for k in SchemaKind], default="scenario",
        help="default: scenario",
    )  # fmt: skip
    schema.add_argument("-o", "--output", type=Path, help="write it to this file")
    schema.add_argument(
        "--markdown", action="store_true",
        help="the file reference in Markdown instead (scenario: docs/reference.md's, stack: "
        "docs/own-stack.md's; generated)",
    )  # fmt: skip
    # `target` and `models` are listed here for the help; main() hands them to the service.
    sub.add_parser("target", help="start, inspect or stop the reference stack (up | status | down)")
    listing = sub.add_parser(
        "list", help="list scenario files: name, duration, faults, description"
    )
    listing.add_argument(
        "dir", nargs="?", type=Path, default=Path("scenarios"), metavar="DIR",
        help="default: scenarios",
    )  # fmt: skip
    sub.add_parser(
        "models", help="build, verify, register or list models of the reference service's registry"
    )

    run = sub.add_parser(
        "run",
        help="run scenario files against the target",
        description="Run each scenario and write reports/<run-id>/ (journal.jsonl, verdict.json). "
        "Exit 0: all passed; 1: an expectation or SLO failed (or a run aborted); 2: invalid "
        "input; 3: harness error (e.g. a fault could not be reverted).",
    )
    run.add_argument("files", nargs="+", type=Path, metavar="FILE", help="scenario YAML files")
    add_cli_options(run)
    run.add_argument("--quiet", action="store_true", help="print only the verdict lines")

    report = sub.add_parser(
        "report",
        help="render a run directory's HTML report (and the index of runs beside it)",
        description="Render RUN_DIR/index.html from RUN_DIR/journal.jsonl (a crashed run's too, "
        "marked incomplete) and refresh the index of runs in RUN_DIR's parent.",
    )
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.add_argument("-o", "--output", type=Path, help="write the page here instead")

    validate = sub.add_parser(
        "validate", help="check scenario files (schema and references) without running them"
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    return parser


def _list(directory: Path) -> int:
    if not directory.is_dir():
        return _usage(f"{directory}: no such directory")
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        return _usage(f"{directory}: no scenario file (*.yaml) there")
    invalid = 0
    for file in files:
        try:
            scenario = load_scenario(file).scenario
        except ScenarioError as exc:
            invalid += 1
            first = str(exc).splitlines()[1:2] or [str(exc)]
            print(f"{file.name:28} INVALID  {first[0]}")
            continue
        names = scenario.fault_names()
        faults = ", ".join(
            f"{f.kind} {n} @{f.at:g}s" for n, f in zip(names, scenario.faults, strict=True)
        )
        print(
            f"{file.name:28} {scenario.load.duration:>4g}s  {faults or 'no fault'}\n"
            f"{'':28} {scenario.description}"
        )
    return EXIT_USAGE if invalid else 0


def _service(args: list[str]) -> int:
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
    completed = subprocess.run([sys.executable, "-m", "target_service", *args], check=False)
    return completed.returncode


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _validate(files: list[Path]) -> int:
    """Check scenario files and services stack files (told apart by their `services:`);
    the ok lines only when every file is valid."""
    lines, failed = [], False
    for file in files:
        try:
            if _is_stack_file(file):
                stack = load_stack_file(file).stack
                links = ", ".join(link.hop for link in stack.links) or "no link"
                compose = f"; compose file {stack.compose}" if stack.compose else ""
                lines.append(f"ok  {file}: stack file, services {', '.join(stack.services)}; "
                             f"entry {stack.entry_service}; {links}{compose}")  # fmt: skip
            else:
                lines.append(f"ok  {file}: {load_scenario(file).scenario.name}")
        except ScenarioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    if failed:
        return EXIT_USAGE
    print("\n".join(lines))
    return 0


def _is_stack_file(file: Path) -> bool:
    try:
        return is_services_stack(read_document_text(file, max_bytes=MAX_STACK_BYTES))
    except SLOFileError:
        return False  # the scenario loader says what is wrong with it


def _load_all(files: list[Path]) -> list[LoadedScenario] | None:
    loaded: list[LoadedScenario] = []
    failed = False
    for file in files:
        try:
            loaded.append(load_scenario(file))
        except ScenarioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed = True
    return None if failed else loaded


def _run(args: argparse.Namespace) -> int:
    scenarios = _load_all(args.files)  # every file is checked before anything starts
    if scenarios is None:
        return EXIT_USAGE
    backend = args.backend or (Backend.URL if args.url else None)
    if args.url and backend is not Backend.URL:
        return _usage("--url goes with --backend url")
    problems = []
    for loaded in scenarios:
        chosen = backend or loaded.scenario.backend
        if chosen is Backend.URL and not (args.url or loaded.scenario.url):
            problems.append(f"{loaded.path}: the url backend needs --url http://HOST:PORT")
        problem = loaded.scenario.unsupported_by(chosen)
        if loaded.services is not None:
            problem = wrong_backend(loaded.services.stack, chosen) or problem
        if problem:
            problems.append(f"{loaded.path}: {problem}")
        try:
            loaded.scenario.service.api_key()
        except ValueError as exc:  # read before anything starts, so a missing one starts nothing
            problems.append(f"{loaded.path}: {exc}")
        if problem := sharding_problem(args.load_shards or loaded.scenario.load.shards):
            problems.append(f"{loaded.path}: {problem}")
    if problems:
        return _usage("\n".join(problems))
    settings = RunSettings(
        report_dir=args.report_dir or REPORTS, backend=backend, url=args.url, seed=args.seed,
        load_shards=args.load_shards, ray_address=args.ray_address,
    )  # fmt: skip
    worst = 0
    lines: list[str] = []
    for loaded in scenarios:
        observers: list[Observer] = [*recorders(), *([] if args.quiet else [Progress()])]
        result = Runner(loaded, settings, observers=observers).run()
        verdict = result.verdict
        where = result.report or result.run_dir
        lines.append(f"{verdict.status.upper():8} {verdict.scenario:24} {where}")
        if args.quiet:
            print(lines[-1], flush=True)
        worst = max(worst, result.exit_code)
    if not args.quiet and len(lines) > 1:
        passed = sum(1 for line in lines if line.startswith("PASSED"))
        print(f"\n{passed} of {len(lines)} scenarios passed:")
        print("\n".join(f"  {line}" for line in lines))
        print(f"every run: {settings.report_dir / 'index.html'}")
    return worst


# Commands handed whole to the reference service's own CLI (their --help is its help).
_FORWARDED = {"models": "models", "target": "stack"}


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] in _FORWARDED:
        return _service([_FORWARDED[words[0]], *words[1:]])
    args = build_parser().parse_args(words)
    if args.command == "gameday":
        try:
            loaded_day = load_gameday(args.file, url=args.url)
        except ScenarioError as exc:
            return _usage(str(exc))
        settings = RunSettings(
            report_dir=args.report_dir or REPORTS, url=args.url, seed=args.seed,
            load_shards=args.load_shards, ray_address=args.ray_address,
        )  # fmt: skip
        day = run_gameday(
            loaded_day, settings, yes=args.yes,
            observers=lambda: [] if args.quiet else [Progress()],
        )  # fmt: skip
        return day.exit_code
    if args.command == "schema":
        kind = SchemaKind(args.kind)
        if args.markdown and kind is SchemaKind.SLO:
            return _usage("--markdown is the scenario or stack file reference, not `slo`'s")
        if args.markdown:
            text = stack_reference() if kind is SchemaKind.STACK else scenario_reference()
        else:
            text = json.dumps(render_schema(kind), indent=2) + "\n"
        if args.output is None:
            sys.stdout.write(text)
            return 0
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            return _usage(f"cannot write {args.output}: {exc}")
        print(args.output)
        return 0
    if args.command == "list":
        return _list(args.dir)
    if args.command == "run":
        return _run(args)
    if args.command == "report":
        try:
            page = render_run(args.run_dir, args.output)
            if args.output is None:
                render_index(args.run_dir.parent)
        except ReportError as exc:
            return _usage(str(exc))
        print(page)
        return 0
    if args.command == "validate":
        return _validate(args.files)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown commands first
