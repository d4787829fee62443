"""Scenario files: typed values, every problem with file, line and field, references checked
before anything runs; and every shipped scenario validates."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chaos import (
    Backoff,
    Corruption,
    ModelFault,
    PartitionFault,
    ProcessFault,
    Replicas,
    ScenarioError,
    SignalKind,
    Stream,
    ToxicFault,
    ToxicType,
    load_scenario,
)
from chaos._scenario import Pool

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

SLO = """\
slos:
  - name: avail
    sli: {kind: availability}
    target: 0.99
    period: run
"""


def write(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def error_of(tmp_path: Path, body: str) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, body))
    return str(info.value)


def test_a_full_scenario_parses_into_typed_values(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("one\n\n two \n", encoding="utf-8")
    loaded = load_scenario(
        write(
            tmp_path,
            textwrap.dedent("""\
            name: full
            seed: 7
            load:
              rate: 600/m
              shape: {kind: ramp, to: 20/s, over: 5s}
              arrivals: poisson
              duration: 1m
              prompts: {file: prompts.txt}
              stream: true
              user_share: 0.5
            faults:
              - {name: slow, kind: toxic, hop: "primary[1]", toxic: latency, at: 500ms,
                 duration: 2s, attributes: {latency: 300, jitter: 50}, stream: upstream,
                 toxicity: 0.5}
              - {kind: partition, hop: client, at: 10s, duration: 1s}
              - {kind: process, signal: pause, target: {gateway: true}, at: 20s, duration: 3s}
              - {kind: model, model: "primary:v1", corruption: truncate, at: 30s, duration: 5s,
                 target: {pool: primary, random: 1}}
            """)
            + SLO,
        )
    )
    scenario = loaded.scenario
    assert scenario.load.rate == 10.0 and scenario.load.duration == 60.0
    assert loaded.prompts == ["one", "two"]
    assert scenario.fault_names() == ["slow", "partition-1", "process-2", "model-3"]
    slow, partition, pause, model = scenario.faults
    assert isinstance(slow, ToxicFault)
    assert (slow.at, slow.end, slow.toxic, slow.stream) == (
        0.5, 2.5, ToxicType.LATENCY, Stream.UPSTREAM
    )  # fmt: skip
    assert slow.hop == Replicas(pool=Pool.PRIMARY, index=1)
    assert isinstance(partition, PartitionFault) and partition.hop == "client"
    assert isinstance(pause, ProcessFault) and pause.signal is SignalKind.PAUSE
    assert isinstance(model, ModelFault) and model.corruption is Corruption.TRUNCATE
    assert [s.name for s in loaded.slos] == ["avail"]


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ("rate: 20 per second", "invalid rate '20 per second'"),
        ("rate: true", "not true/false"),
        ("rate: -3", "greater than or equal to 0"),
    ],
)
def test_bad_rates_are_rejected_with_the_line(tmp_path: Path, fragment: str, message: str) -> None:
    text = error_of(tmp_path, f"name: x\nload:\n  {fragment}\n  duration: 10s\n")
    assert f"{tmp_path / 's.yaml'}:3" in text
    assert "load.rate" in text and message in text


def test_a_bad_duration_names_file_line_and_field(tmp_path: Path) -> None:
    text = error_of(
        tmp_path,
        """\
        name: x
        load: {rate: 5/s, duration: 10s}
        faults:
          - kind: partition
            hop: client
            at: soon
        """,
    )
    assert f"{tmp_path / 's.yaml'}:6" in text
    assert "faults[0].at: invalid duration 'soon'" in text


def test_unknown_fault_kind_and_unknown_field(tmp_path: Path) -> None:
    text = error_of(
        tmp_path,
        """\
        name: x
        load: {rate: 5/s, duration: 10s}
        faults:
          - {kind: meteor, at: 1s}
          - {kind: partition, hop: client, at: 1s, colour: red}
        """,
    )
    path = tmp_path / "s.yaml"
    assert f"{path}:4: faults[0].kind: unknown kind 'meteor'" in text
    assert "partition, process, container, gpu, model, burst" in text
    assert f"{path}:5: faults[1].colour: unknown field" in text


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        ("- {kind: partition, hop: 'primary[x]', at: 1s}", "invalid hop 'primary[x]'"),
        (
            "- {kind: toxic, hop: client, toxic: latency, at: 1s, attributes: {rate: 5}}",
            "latency has no attribute rate; it takes jitter, latency",
        ),
        ("- {kind: process, signal: pause, target: {pool: primary}, at: 1s}", "needs a `duration`"),
        (
            "- {kind: model, model: 'primary:v1', at: 1s, corruption: swap}",
            "`swap_with` goes with `corruption: swap`",
        ),
        ("- {kind: model, model: 'primary:v1', at: 1s}", "name the replicas to reload"),
        (
            "- {kind: process, signal: kill, target: {pool: primary, index: 0, random: 1}, at: 1s}",
            "give `index` or `random`, not both",
        ),
        ("- {kind: partition, hop: client, at: 30s}", "starts at 30s, after the load ends"),
        ("- {kind: stream, hop: client, effect: cut, at: 1s}", "a stream cut needs after"),
        (
            "- {kind: stream, hop: client, effect: cut, after: 2, delay_ms: 5, at: 1s}",
            "a stream cut takes no delay_ms (it takes after, reset)",
        ),
        (
            "- {kind: stream, hop: client, effect: stall, after: 0, delay_ms: 5, at: 1s}",
            "a stall after 0 events is a delay before the answer: use a latency toxic",
        ),
        (
            "- {kind: stream, hop: client, effect: status, status: 200, at: 1s}",
            "faults[0].status: Input should be greater than or equal to 400 (got 200)",
        ),
        (
            "- {kind: stream, hop: client, effect: drop_done, share: 1.5, at: 1s}",
            "faults[0].share: Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            "- {kind: stream, hop: client, effect: corrupt, event: 1, corrupt: base64, at: 1s}",
            "faults[0].corrupt: Input should be 'json' or 'utf8' (got 'base64')",
        ),
        (
            "- {kind: stream, hop: client, effect: slow, delay_ms: 5, reset: true, at: 1s}",
            "a stream slow takes no reset (it takes delay_ms)",
        ),
        (
            "- {kind: stream, hop: client, effect: cut, after: 1, at: 1s, duration: 5s}\n"
            "  - {kind: stream, hop: client, effect: cut, after: 2, at: 3s}",
            "overlaps fault 'stream-0' on the same hop (client) from 3s",
        ),
        (
            "- {name: a, kind: partition, hop: client, at: 1s, duration: 1s}\n"
            "  - {name: a, kind: partition, hop: client, at: 2s}",
            "faults[1].name: a fault named 'a' comes before this",
        ),
    ],
)
def test_fault_mistakes_are_explained(tmp_path: Path, faults: str, message: str) -> None:
    text = error_of(tmp_path, f"name: x\nload: {{rate: 5/s, duration: 10s}}\nfaults:\n  {faults}\n")
    assert message in text


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (
            "expect:\n  - {kind: fallback, during: nosuch, min_share: 0.5}\n",
            "no fault named 'nosuch'",
        ),
        (
            "expect:\n  - {kind: slo_met, slo: latency}\n",
            "no SLO named 'latency' (SLOs: ['avail'])",
        ),
        ("abort:\n  - {kind: probe, probe: ghost}\n", "no probe named 'ghost'"),
        (
            "faults:\n  - {name: k, kind: process, signal: kill, target: {pool: primary}, at: 1s}\n"
            "expect:\n  - {kind: fallback, during: k, min_share: 0.5}\n",
            "fault 'k' has no duration",
        ),
    ],
)
def test_references_are_checked(tmp_path: Path, tail: str, message: str) -> None:
    assert message in error_of(
        tmp_path, f"name: x\nload: {{rate: 5/s, duration: 10s}}\n{SLO}{tail}"
    )


def test_the_url_backend_takes_only_load_and_client_faults(tmp_path: Path) -> None:
    base = "name: x\nbackend: url\nurl: http://127.0.0.1:9\nload: {rate: 5/s, duration: 10s}\n"
    text = error_of(
        tmp_path,
        base + "faults:\n  - {kind: process, signal: kill, target: {pool: primary}, at: 1s}",
    )
    assert "the url backend takes only load and network faults" in text
    text = error_of(tmp_path, base + "faults:\n  - {kind: partition, hop: 'primary[0]', at: 1s}")
    assert "the url backend has only the `client` hop" in text
    assert "s.yaml:2: backend: `backend: url` needs the service's `url`" in error_of(
        tmp_path, "name: x\nbackend: url\nload: {rate: 5/s, duration: 10s}\n"
    )
    assert "s.yaml:3: url: `url` goes with `backend: url`, and only with it" in error_of(
        tmp_path, "name: x\nload: {rate: 5/s, duration: 10s}\nurl: http://127.0.0.1:1\n"
    )


def test_missing_referenced_files_are_reported(tmp_path: Path) -> None:
    base = "name: x\nload: {rate: 5/s, duration: 10s"
    assert "s.yaml:3: stack: no such file" in error_of(tmp_path, f"{base}}}\nstack: nope.yaml\n")
    assert "none.txt: cannot read: No such file or directory" in error_of(
        tmp_path, f"{base}, prompts: {{file: none.txt}}}}\n"
    )
    text = error_of(tmp_path, f"{base}}}\nslos:\n  - file: missing.yaml\n")
    assert "s.yaml:4: slos[0].file: invalid SLO file:" in text
    assert "missing.yaml: cannot read: No such file or directory" in text


def test_not_yaml_and_not_a_file(tmp_path: Path) -> None:
    assert "s.yaml" in error_of(tmp_path, "name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"nosuch\.yaml"):
        load_scenario(tmp_path / "nosuch.yaml")


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    loaded = load_scenario(path)
    scenario = loaded.scenario
    assert scenario.description, "a shipped scenario says what it shows"
    assert scenario.expect, "a shipped scenario asserts something"
    assert scenario.load.duration <= 60, "the suite stays runnable in CI"


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        (
            "[{name: a, share: 0.7}, {name: b, share: 0.5}]",
            "client groups share more than all the requests: 0.7 + 0.5 > 1",
        ),
        ("[{name: a, share: 0.2}, {name: a, share: 0.2}]", "client groups need names of their own"),
        ("[{name: a, share: 0.2, cancel: {after_tokens: 3}}]", "counts streamed tokens"),
        ("[{name: a, share: 0.2, cancel: {}}]", "give `after_tokens` or `after`, one of them"),
        ("[{name: a, share: 0.2, retry: {on: [503]}}]", "load.clients[0].retry[1]"),
        ("[{name: a, share: 0.2, retry: {when: [302]}}]", "retry.when[0]: String should match"),
        ("[{name: a, share: 0.2, retry: {max_attempts: 1}}]", "greater than or equal to 2"),
    ],
)
def test_client_group_mistakes_are_explained(tmp_path: Path, clients: str, message: str) -> None:
    text = error_of(tmp_path, f"name: x\nload: {{rate: 5/s, duration: 10s, clients: {clients}}}\n")
    assert message in text


def test_an_amplification_expectation_names_a_client_group(tmp_path: Path) -> None:
    body = """\
        name: x
        load: {rate: 5/s, duration: 10s, clients: [{name: naive, share: 0.5, retry: {}}]}
        expect:
          - {kind: amplification, client: EXPECTED, max: 2}
        """
    text = error_of(tmp_path, body.replace("EXPECTED", "naïve"))
    assert "expect[0].client: no client group named 'naïve' (groups: ['naive'])" in text
    text = error_of(tmp_path, body.replace("EXPECTED, max: 2", "naive"))
    assert "expect[0]: give `max`, `min` or both" in text
    scenario = load_scenario(write(tmp_path, body.replace("EXPECTED", "naive")))
    policy = scenario.scenario.load.clients[0].retry
    assert policy is not None and policy.when == ["429", "503", "connect", "reset"]
    assert policy.retries(503, None) and policy.retries(None, "reset")
    assert not policy.retries(500, None) and not policy.retries(None, "timeout")
    assert Backoff(initial=0.5, multiplier=2, max=3).wait(3, 0.5) == 2.0
    assert Backoff(initial=0.5, multiplier=2, max=3, jitter=True).wait(4, 0.5) == 1.5
