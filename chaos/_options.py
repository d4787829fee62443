"""The run settings a user gives from outside a scenario, declared once: ``ichaos run``'s flags
and the pytest plugin's options and ini keys are all made from :data:`OPTIONS`, and every value,
whichever way it came, is read by its option's own ``parse``.

=========== ================= ====================== ==================
setting     ``ichaos run``    pytest                 pytest ini
=========== ================= ====================== ==================
backend     ``--backend``     ``--chaos-backend``    ``chaos_backend``
url         ``--url``         ``--chaos-url``        ``chaos_url``
seed        ``--seed``        ``--chaos-seed``       ``chaos_seed``
report dir  ``--report-dir``  ``--chaos-report``     ``chaos_report``
shards      ``--load-shards`` ``--chaos-load-shards`` ``chaos_load_shards``
Ray         ``--ray-address`` ``--chaos-ray-address`` ``chaos_ray_address``
=========== ================= ====================== ==================
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import OptionError
from ._scenario import Backend, check_url


def _backend(text: str) -> Backend:
    try:
        return Backend(text)
    except ValueError:
        raise ValueError(f"expected one of {', '.join(b.value for b in Backend)}") from None


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("expected an integer") from None


def _shards(text: str) -> int:
    try:
        shards = int(text)
    except ValueError:
        raise ValueError("expected a whole number of shards, 1 to 256") from None
    if not 1 <= shards <= 256:
        raise ValueError("expected a whole number of shards, 1 to 256")
    return shards


def _ray_address(text: str) -> str:
    text = text.strip()
    if not text or any(c.isspace() for c in text) or len(text) > 512:
        raise ValueError("expected a Ray cluster address: auto, HOST:PORT or ray://HOST:PORT")
    return text


@dataclass(frozen=True)
class RunOption:
    """One setting: its ``RunSettings`` field, its help, how text becomes its value."""

    field: str
    plugin_name: str  # --chaos-NAME, ini chaos_NAME
    cli_name: str  # --NAME for `ichaos run`
    help: str
    parse: Callable[[str], Any]
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def shown(self) -> str:
        """How help shows its value: the choices, or a metavar."""
        if self.choices:
            return "{" + ",".join(self.choices) + "}"
        return self.metavar or self.cli_name.upper()

    @property
    def ini(self) -> str:
        return f"chaos_{self.plugin_name.replace('-', '_')}"


OPTIONS: tuple[RunOption, ...] = (
    RunOption(
        "backend",
        "backend",
        "backend",
        "run on this backend instead of each scenario's",
        _backend,
        choices=tuple(b.value for b in Backend),
    ),
    RunOption(
        "url", "url", "url", "the service's URL, for the url backend", check_url, metavar="URL"
    ),
    RunOption("seed", "seed", "seed", "override every scenario's seed", _seed, metavar="N"),
    RunOption(
        "report_dir",
        "report",
        "report-dir",
        "where run directories and reports go (default: reports)",
        Path,
        metavar="DIR",
    ),
    RunOption(
        "load_shards",
        "load-shards",
        "load-shards",
        "send the load from N shards on a Ray cluster instead of each scenario's load.shards",
        _shards,
        metavar="N",
    ),
    RunOption(
        "ray_address",
        "ray-address",
        "ray-address",
        "the Ray cluster sharded load joins (default: the scenario's, RAY_ADDRESS, else a "
        "local one started for the run)",
        _ray_address,
        metavar="ADDRESS",
    ),
)


def parse_option(option: RunOption, text: str, where: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise OptionError(f"{where} = {text!r}: {exc}") from None


def add_cli_options(parser: argparse.ArgumentParser, *, without: tuple[str, ...] = ()) -> None:
    """The options on an ``ichaos`` subcommand (but the fields in ``without``); argparse
    reports a bad value (exit 2)."""

    def typed(option: RunOption) -> Callable[[str], Any]:
        def convert(text: str) -> Any:
            try:
                return option.parse(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        return convert

    for option in OPTIONS:
        if option.field in without:
            continue
        parser.add_argument(
            f"--{option.cli_name}", dest=option.field, type=typed(option), help=option.help,
            metavar=option.shown, default=None,
        )  # fmt: skip


def add_pytest_options(group: Any, parser: Any) -> None:
    """The same options on pytest's command line (``--chaos-NAME``) and in its ini file."""
    for option in OPTIONS:
        group.addoption(
            f"--chaos-{option.plugin_name}", default=None, help=option.help,
            metavar=option.shown,
        )  # fmt: skip
        parser.addini(option.ini, option.help, default="")


def settings_values(flags: Mapping[str, str | None], ini: Mapping[str, str]) -> dict[str, Any]:
    """The settings given to pytest, as text: a ``--chaos-*`` flag before its ini key.
    :class:`OptionError` names the first bad one and what it accepts."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        flag = flags.get(option.field)
        text = str(ini.get(option.ini) or "").strip()
        if flag is not None:
            values[option.field] = parse_option(option, flag, f"--chaos-{option.plugin_name}")
        elif text:
            values[option.field] = parse_option(option, text, option.ini)
    return values
