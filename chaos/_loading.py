"""Reading a scenario file and the files it names (SLO files, a prompt file, a stack file),
each within the reading limits of ``slo``, every problem reported at its line."""

from __future__ import annotations

import importlib.util
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slo import (
    SLO,
    Issue,
    SLODocument,
    SLOFileError,
    load_slos,
    parse_yaml_document,
    read_document_text,
)

from ._checks import scenario_issues, services_stack_issues, slo_name_issues, stack_issues
from ._errors import ScenarioError
from ._scenario import Backend, Pool, PromptFile, PromptSet, Scenario, Service, SLOFile
from ._stackfile import MAX_STACK_BYTES, LoadedStack, is_services_stack, load_stack_file

MAX_PROMPT_BYTES = 8 << 20


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario with its file references resolved (SLO files read, paths absolute)."""

    scenario: Scenario
    path: Path | None
    text: str
    slos: list[SLO]
    prompts: list[str]
    services: LoadedStack | None = None
    """the services stack file the scenario runs on (None: the reference stack, or a URL)."""


_PROMPTS: dict[PromptSet, list[str]] = {
    PromptSet.CHAT: [
        "What is a good name for a cat?",
        "How do I boil an egg?",
        "Tell me a fact about the sea.",
        "Why is the sky blue?",
        "What should I cook tonight?",
        "How far away is the moon?",
        "Give me a word that rhymes with light.",
        "What is the capital of France?",
    ],
    PromptSet.SHORT: ["hi", "hello", "ok", "thanks", "why", "yes"],
    PromptSet.LONG: [
        "The station keeper wrote in the log that the wind had turned in the night, that the "
        "boats had stayed in the harbour and that the lamp had burned until morning. Continue:",
        "A service that answers questions must stay up when one of its machines fails. Explain "
        "in plain words how a fallback model keeps users answered while the main model is down:",
    ],
}


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read, validate and resolve one scenario file; raises :class:`ScenarioError` listing
    every problem with file, line and field."""
    source = Path(path)
    base = source.resolve().parent
    found: dict[str, Any] = {}

    def check(scenario: Scenario) -> list[Issue]:
        issues = scenario_issues(scenario)
        slos, slo_issues = read_slo_entries(scenario.slos, base)
        issues += slo_issues
        if not slo_issues:
            issues += slo_name_issues(scenario, [s.name for s in slos])
        prompts, prompt_issues = _prompts(scenario.load.prompts, base)
        stack, services, stack_problems = _stack(scenario, base)
        ca_file, ca_problems = _ca_file(scenario, base)
        found.update(slos=slos, prompts=prompts, stack=stack, ca_file=ca_file, services=services)
        return [*issues, *prompt_issues, *stack_problems, *ca_problems]

    try:
        text = read_document_text(source)
        scenario = parse_yaml_document(text, Scenario, source=str(source), check=check)
    except SLOFileError as exc:
        raise ScenarioError(f"invalid scenario:\n{exc}") from exc
    if found["stack"] != scenario.stack:
        scenario = scenario.model_copy(update={"stack": found["stack"]})
    if found["ca_file"] != scenario.service.ca_file:
        service = scenario.service.model_copy(update={"ca_file": found["ca_file"]})
        scenario = scenario.model_copy(update={"service": service})
    services: LoadedStack | None = found["services"]
    if services is not None:
        scenario = scenario.model_copy(update={"service": entry_service(scenario, services)})
    return LoadedScenario(scenario=scenario, path=source, text=text, slos=found["slos"],
                          prompts=found["prompts"], services=services)  # fmt: skip


def entry_service(scenario: Scenario, services: LoadedStack) -> Service:
    """The scenario's ``service`` block, with the API and model the stack file's entry service
    declares where the scenario leaves them out."""
    entry = services.stack.services[services.stack.entry_service]
    update: dict[str, Any] = {}
    if "api" not in scenario.service.model_fields_set and entry.api is not None:
        update["api"] = entry.api
    if scenario.service.model is None and entry.model is not None:
        update["model"] = services.model_name(services.stack.entry_service)
    return scenario.service.model_copy(update=update) if update else scenario.service


def read_slo_entries(
    entries: list[SLOFile | SLODocument], base: Path
) -> tuple[list[SLO], list[Issue]]:
    """The SLOs a file lists (inline documents, and SLO files read relative to ``base``), and
    the problems of the files, located at their ``slos[i].file`` entries."""
    slos: list[SLO] = []
    issues: list[Issue] = []
    read: dict[Path, int] = {}
    defined: dict[str, int] = {}  # SLO name -> the entry that defines it
    for index, entry in enumerate(entries):
        found: list[SLO] = []
        if isinstance(entry, SLODocument):
            # Its own problems (both targets, say) are reported with the scenario's.
            found = [] if entry.issues() else [entry.to_slo()]
            where: tuple[str | int, ...] = ("slos", index, "name")
        else:
            file = entry.file if entry.file.is_absolute() else base / entry.file
            where = ("slos", index, "file")
            key = file.resolve()
            if key in read:
                issues.append(Issue(where, f"{entry.file} is already listed as slos[{read[key]}]"))
                continue
            read[key] = index
            try:
                found = load_slos(file)
            except SLOFileError as exc:
                issues.append(Issue(where, f"invalid SLO file:\n  {_indent(str(exc))}"))
        for slo in found:
            if slo.name in defined:
                message = f"SLO {slo.name!r} is already defined by slos[{defined[slo.name]}]"
                issues.append(Issue(where, message))
            defined.setdefault(slo.name, index)
        slos.extend(found)
    return slos, issues


def _prompts(spec: PromptSet | PromptFile, base: Path) -> tuple[list[str], list[Issue]]:
    if isinstance(spec, PromptSet):
        return list(_PROMPTS[spec]), []
    file = spec.file if spec.file.is_absolute() else base / spec.file
    where = ("load", "prompts", "file")
    try:
        lines = read_document_text(file, max_bytes=MAX_PROMPT_BYTES).splitlines()
    except SLOFileError as exc:
        return [], [Issue(where, str(exc))]
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        return [], [Issue(where, f"{file} has no prompt")]
    return prompts, []


def _stack(scenario: Scenario, base: Path) -> tuple[Path | None, LoadedStack | None, list[Issue]]:
    """The stack file made absolute, the services stack file it is (None: the reference
    stack's), and the problems of running this scenario on it: a file that is not a valid stack
    file, hops, replicas, services or links it does not have."""
    stack = scenario.stack
    if stack is not None and not stack.is_absolute():
        stack = base / stack
    if scenario.backend is Backend.URL:
        if stack is not None:
            return stack, None, [Issue(("stack",), "`stack` is not for `backend: url`")]
        return stack, None, []
    if stack is not None and not stack.is_file():
        return stack, None, [Issue(("stack",), f"no such file {stack}")]
    if stack is not None:
        try:
            services_file = is_services_stack(read_document_text(stack, max_bytes=MAX_STACK_BYTES))
        except SLOFileError as exc:
            return stack, None, [Issue(("stack",), str(exc))]
        if services_file:
            try:
                services = load_stack_file(stack)
            except ScenarioError as exc:
                return stack, None, [Issue(("stack",), _indent(str(exc)))]
            return stack, services, services_stack_issues(scenario, services.stack)
    replicas = _replicas(stack)
    if isinstance(replicas, str):
        return stack, None, [Issue(("stack",), replicas)]
    return stack, None, [] if replicas is None else stack_issues(scenario, replicas)


def _ca_file(scenario: Scenario, base: Path) -> tuple[Path | None, list[Issue]]:
    file = scenario.service.ca_file
    if file is None:
        return None, []
    file = file if file.is_absolute() else base / file
    try:
        ssl.create_default_context(cafile=file)
    except (OSError, ssl.SSLError) as exc:
        return file, [Issue(("service", "ca_file"), f"{file}: not PEM certificates: {exc}")]
    return file, []


def _replicas(stack: Path | None) -> dict[Pool, int] | str | None:
    """The replicas per pool of the stack, a reason it cannot be read, or None when the
    reference service is not installed (the run itself then says so)."""
    if importlib.util.find_spec("target_service") is None:
        return None
    from target_service import ServiceError, default_stack_file, load_stack_config

    try:
        config = load_stack_config(stack or default_stack_file())
    except ServiceError as exc:
        return _indent(str(exc))
    return {Pool(name.value): pool.replicas for name, pool in config.pools.items()}


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")
