"""Malformed and hostile scenario files: each is refused before anything starts, with the file,
the line and the field of the offending value, in bounded time, never with a traceback.

The cases are those a generated corpus of about 1,000 malformed files found answered wrongly
(hangs, tracebacks, invalid files accepted, errors at the wrong place); the property-based test
in test_hostile_properties.py looks for more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chaos import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
AVAILABILITY = ROOT / "slo" / "examples" / "availability.yaml"

HEAD = "name: t\nload:\n  rate: 2/s\n  duration: 10s\n"  # 4 lines: what a case adds is line 5+


METRICS = "metrics:\n  series:\n    - {name: queue, metric: model_queue_depth}\n"  # lines 5-7


def _bomb(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _fault(body: str) -> str:
    return HEAD + "faults:\n  - " + body + "\n"


def _model(file: str) -> str:
    return _fault(f"{{kind: model, model: 'primary:v1', at: 1s, reload: none, file: '{file}'}}")


# name: (text after HEAD or a whole document, the line and field it must name, a fragment)
CASES: dict[str, tuple[str, str, str]] = {
    # hangs
    "alias bomb in the description": (
        HEAD + _bomb(9) + "description: *a8\n",
        ":9: ",
        "expands to more than 20000 values",
    ),
    "100,000 aliases of one fault": (
        HEAD
        + "faults:\n  - &f {kind: burst, rate: 1/s, at: 1s, duration: 1s}\n"
        + "  - *f\n" * 100_000,
        ":1007: ",
        "more than 1000 aliases",
    ),
    # tracebacks
    "an alias inside itself": (HEAD + "description: &a [*a]\n", ":5: ", "refers to a value"),
    "lists 1,000 deep": (
        HEAD + "description: " + "[" * 1000 + "]" * 1000 + "\n",
        ":5: ",
        "nested more than 64 deep",
    ),
    "mappings 1,000 deep": (
        HEAD + "description: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
        ":5: ",
        "nested more",
    ),
    "an inline SLO with target and targetPercent": (
        HEAD + "slos:\n  - {name: s, sli: {kind: availability}, target: 0.9, targetPercent: 90, "
        "period: 1h}\n",
        ":6: slos[0].targetPercent: ",
        "give target or targetPercent, not both",
    ),
    "an inline SLO with neither": (
        HEAD + "slos:\n  - {name: s, sli: {kind: availability}, period: 1h}\n",
        ":6: slos[0].target: ",
        "required field is missing",
    ),
    # files outside the model
    "a model file ../../../../etc/passwd": (
        _model("../../../../etc/passwd"),
        ":6: faults[0].file: ",
        "not a path inside the model's directory",
    ),
    "a model file /etc/passwd": (
        _model("/etc/passwd"),
        ":6: faults[0].file: ",
        "not a path inside",
    ),
    "a model file ..": (_model(".."), ":6: faults[0].file: ", "not a path inside"),
    "another model's file": (
        _model("../../primary/v1/model.safetensors"),
        ":6: faults[0].file: ",
        "not a path inside",
    ),
    "swap_with outside the registry": (
        _fault(
            "{kind: model, model: 'primary:v1', at: 1s, reload: none, corruption: swap, "
            "swap_with: '../../etc:v1'}"
        ),
        ":6: faults[0].swap_with: ",
        "should match pattern",
    ),
    # overlaps
    "two model faults on one model at once": (
        _fault(
            "{kind: model, model: 'primary:v1', at: 1s, duration: 5s, reload: none}\n"
            "  - {kind: model, model: 'primary:v1', at: 2s, reload: none, corruption: truncate}"
        ),
        ":7: faults[1]: ",
        "overlaps fault 'model-0' on the same model (primary:v1) from 2s",
    ),
    "two partitions of one hop at once": (
        _fault(
            "{kind: partition, hop: 'primary[0]', at: 1s, duration: 5s}\n"
            "  - {kind: partition, hop: 'primary[0]', at: 2s}"
        ),
        ":7: faults[1]: ",
        "overlaps fault 'partition-0' on the same hop",
    ),
    "two latency toxics of one hop at once": (
        _fault(
            "{kind: toxic, toxic: latency, hop: client, at: 1s, duration: 5s}\n"
            "  - {kind: toxic, toxic: latency, hop: client, at: 2s}"
        ),
        ":7: faults[1]: ",
        "overlaps fault 'toxic-0' on the same hop (client)",
    ),
    "a partition of primary and of primary[0] at once": (
        _fault(
            "{kind: partition, hop: primary, at: 1s, duration: 5s}\n"
            "  - {kind: partition, hop: 'primary[0]', at: 2s, duration: 1s}"
        ),
        ":7: faults[1]: ",
        "overlaps fault 'partition-0'",
    ),
    # hops and targets the stack does not have
    "primary[99] of two replicas": (
        _fault("{kind: partition, hop: 'primary[99]', at: 1s}"),
        ":6: faults[0].hop: ",
        "primary[99] does not exist: the stack runs 2 primary replicas",
    ),
    "fallback[7] of one replica": (
        _fault("{kind: process, signal: kill, target: {pool: fallback, index: 7}, at: 1s}"),
        ":6: faults[0].target: ",
        "fallback[7] does not exist: the stack runs 1 fallback replica",
    ),
    "index -1": (
        _fault("{kind: process, signal: kill, target: {pool: primary, index: -1}, at: 1s}"),
        ":6: faults[0].target.index: ",
        "greater than or equal to 0",
    ),
    "index []": (
        _fault("{kind: process, signal: kill, target: {pool: primary, index: []}, at: 1s}"),
        ":6: faults[0].target.index: ",
        "at least 1 item",
    ),
    "{} as a target": (
        _fault("{kind: process, signal: kill, target: {}, at: 1s}"),
        ":6: faults[0].target.pool: ",
        "required field is missing",
    ),
    "a hop with a trailing space": (
        _fault("{kind: partition, hop: 'primary[0] ', at: 1s}"),
        ":6: faults[0].hop: ",
        "invalid hop",
    ),
    "a hop with full-width digits": (
        _fault("{kind: partition, hop: 'primary[\uff10]', at: 1s}"),
        ":6: faults[0].hop: ",
        "invalid hop",
    ),
    # numbers out of range or of the wrong type
    "a negative latency": (
        _fault("{kind: toxic, toxic: latency, hop: client, at: 1s, attributes: {latency: -5}}"),
        ":6: faults[0].attributes.latency: ",
        "greater than or equal to 0",
    ),
    "a negative jitter": (
        _fault("{kind: toxic, toxic: latency, hop: client, at: 1s, attributes: {jitter: -1}}"),
        ":6: faults[0].attributes.jitter: ",
        "greater than or equal to 0",
    ),
    "a latency of 10^21 ms": (
        _fault(
            "{kind: toxic, toxic: latency, hop: client, at: 1s, "
            "attributes: {latency: 1000000000000000000000}}"
        ),
        ":6: faults[0].attributes.latency: ",
        "less than or equal to 2147483647",
    ),
    "a latency of two hours": (
        _fault(
            "{kind: toxic, toxic: latency, hop: client, at: 1s, attributes: {latency: 7200000}}"
        ),
        ":6: faults[0].attributes: ",
        "latency of 7200000 ms is longer than an hour",
    ),
    "a latency written as text": (
        _fault("{kind: toxic, toxic: latency, hop: client, at: 1s, attributes: {latency: '300'}}"),
        ":6: faults[0].attributes.latency: ",
        "valid integer (got '300')",
    ),
    "a negative ms_per_token": (
        _fault(
            "{kind: gpu, fault: slow, target: {pool: primary}, at: 1s, params: {ms_per_token: -1}}"
        ),
        ":6: faults[0].params: ",
        "ms_per_token must be within 1-60000 (got -1)",
    ),
    "a probe status of -1": (
        HEAD
        + "steady_state:\n  probes:\n    - {kind: http, name: p, path: /healthz, status: -1}\n",
        ":7: steady_state.probes[0].status: ",
        "greater than or equal to 100",
    ),
    "max_new_tokens: true": (
        HEAD + "  max_new_tokens: true\n",
        ":5: load.max_new_tokens: ",
        "valid integer (got True)",
    ),
    "max_new_tokens: '8'": (
        HEAD + "  max_new_tokens: '8'\n",
        ":5: load.max_new_tokens: ",
        "valid integer (got '8')",
    ),
    "index: '0'": (
        _fault("{kind: partition, hop: {pool: primary, index: '0'}, at: 1s}"),
        ":6: faults[0].hop.index: ",
        "valid integer (got '0')",
    ),
    "a burst of 1000d": (
        _fault("{kind: burst, rate: 1/s, at: 1s, duration: 1000d}"),
        ":6: faults[0].duration: ",
        "would last until 1000d1s, past the load's end at 10s",
    ),
    "period: Run": (
        HEAD + "slos:\n  - {name: s, sli: {kind: availability}, target: 0.9, period: Run}\n",
        ":6: slos[0].period: ",
        "invalid duration 'Run'",
    ),
    "an empty probe name": (
        HEAD + "steady_state:\n  probes:\n    - {kind: http, name: '', path: /healthz}\n",
        ":7: steady_state.probes[0].name: ",
        "invalid name ''",
    ),
    "an empty JSON field": (
        HEAD
        + "steady_state:\n  probes:\n    - {kind: http, name: p, path: /, json: [{field: ''}]}\n",
        ":7: steady_state.probes[0].json[0].field: ",
        "should match pattern",
    ),
    # names that end up in paths
    "a name of 300 characters": (
        HEAD.replace("name: t", "name: " + "a" * 300),
        ":1: name: ",
        "1 to 64 letters",
    ),
    ".. as a fault name": (
        _fault("{name: '..', kind: burst, rate: 1/s, at: 1s, duration: 1s}"),
        ":6: faults[0].name: ",
        "invalid name '..'",
    ),
    # URLs
    "url: not a url": (HEAD + "backend: url\nurl: not a url\n", ":6: url: ", "not an http(s) URL"),
    "url: file:///etc/passwd": (
        HEAD + "backend: url\nurl: file:///etc/passwd\n",
        ":6: url: ",
        "not an http(s) URL",
    ),
    # files named twice, broken or hostile
    "the same SLO file twice": (
        HEAD + f"slos:\n  - file: {AVAILABILITY}\n  - file: {AVAILABILITY}\n",
        ":7: slos[1].file: ",
        "is already listed as slos[0]",
    ),
    "one SLO defined twice": (
        HEAD + f"slos:\n  - file: {AVAILABILITY}\n  - {{name: chat-availability, "
        "sli: {kind: availability}, target: 0.9, period: 1h}\n",
        ":7: slos[1].name: ",
        "SLO 'chat-availability' is already defined by slos[0]",
    ),
    "a stack file that is /etc/passwd": (
        HEAD + "stack: /etc/passwd\n",
        ":5: stack: ",
        "/etc/passwd:1: Input should be",
    ),
    "an SLO file that is /dev/zero": (
        HEAD + "slos:\n  - file: /dev/zero\n",
        ":6: slos[0].file: ",
        "/dev/zero: cannot read: not a regular file (a device)",
    ),
    "a prompt file that is /dev/zero": (
        HEAD + "  prompts: {file: /dev/zero}\n",
        ":5: load.prompts.file: ",
        "not a regular file",
    ),
    "a prompt file that does not exist": (
        HEAD + "  prompts: {file: nope.txt}\n",
        ":5: load.prompts.file: ",
        "nope.txt: cannot read: No such file or directory",
    ),
    # the right place
    "a toxic's hop": (
        _fault("\n    kind: toxic\n    toxic: latency\n    hop: nowhere\n    at: 1s"),
        ":9: faults[0].hop: ",
        "invalid hop 'nowhere'",
    ),
    "a toxic's attribute": (
        _fault(
            "\n    kind: toxic\n    toxic: latency\n    hop: client\n    at: 1s\n"
            "    attributes:\n      latency: x"
        ),
        ":12: faults[0].attributes.latency: ",
        "valid integer",
    ),
    "a toxic with an unknown toxic": (
        _fault("\n    kind: toxic\n    toxic: meteor\n    hop: client\n    at: 1s"),
        ":8: faults[0].toxic: ",
        "Input should be",
    ),
    "a reference to a fault": (
        HEAD + "expect:\n  - {kind: fallback, during: nope, min_share: 0.5}\n",
        ":6: expect[0].during: ",
        "no fault named 'nope'",
    ),
    "a reference to a probe": (
        HEAD + "abort:\n  - {kind: probe, probe: nope}\n",
        ":6: abort[0].probe: ",
        "no probe named 'nope'",
    ),
    "a reference to an SLO": (
        HEAD + "expect:\n  - {kind: slo_met, slo: nope}\n",
        ":6: expect[0].slo: ",
        "no SLO named 'nope'",
    ),
    "an undefined alias": (HEAD + "description: *nope\n", ":5: ", "undefined alias 'nope'"),
    # the service's metrics
    "a reference to a series without metrics": (
        HEAD + "abort:\n  - {kind: metric, series: queue, above: 3}\n",
        ":6: abort[0].series: ",
        "no series named 'queue' (the scenario has no `metrics`)",
    ),
    "a reference to a series": (
        HEAD + METRICS + "expect:\n  - {kind: metric, series: qeue, at_most: 3}\n",
        ":9: expect[0].series: ",
        "no series named 'qeue' (series: ['queue'])",
    ),
    "a probe of a series with no bound": (
        HEAD + METRICS + "steady_state:\n  probes:\n    - {kind: metric, name: q, series: queue}\n",
        ":10: steady_state.probes[0]: ",
        "give `at_most`, `at_least` or both",
    ),
    "a series of an unknown source": (
        HEAD + "metrics:\n  series:\n    - {name: q, metric: q, source: workers}\n",
        ":7: metrics.series[0].source: ",
        "no source named 'workers' (sources: ['service'])",
    ),
    "a metric name Prometheus cannot have": (
        HEAD + "metrics:\n  series:\n    - {name: q, metric: 'queue depth'}\n",
        ":7: metrics.series[0].metric: ",
        "String should match pattern",
    ),
    "a pooled mean with an aggregate": (
        HEAD + "metrics:\n  series:\n    - {name: b, metric: batch, read: mean, aggregate: max}\n",
        ":7: metrics.series[0]: ",
        "leave `aggregate` out",
    ),
    "a source at a url and a path": (
        HEAD + "metrics:\n  sources:\n    - {name: s, url: 'http://127.0.0.1:9/m', path: /m}\n"
        "  series: [{name: q, metric: q}]\n",
        ":7: metrics.sources[0]: ",
        "give `url`, or `path` and/or `replicas`, not both",
    ),
    "replicas to scrape on the url backend": (
        HEAD + "backend: url\nurl: http://127.0.0.1:9\nmetrics:\n  sources:\n"
        "    - {name: w, replicas: primary}\n  series: [{name: q, metric: q}]\n",
        ":9: metrics.sources[0].replicas: ",
        "the url backend has no replicas to scrape",
    ),
    "a metric expectation during a fault without a window": (
        HEAD + METRICS + "faults:\n  - {name: kill, kind: process, signal: kill, at: 1s, "
        "target: {gateway: true}}\nexpect:\n  - {kind: metric, series: queue, at_most: 1, "
        "during: kill}\n",
        ":11: expect[0].during: ",
        "fault 'kill' has no duration: give `after`, or a duration",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_malformed_scenario_is_refused_at_the_offending_line(tmp_path: Path, name: str) -> None:
    text, where, fragment = CASES[name]
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid scenario:"
    assert lines[1].startswith(f"{path}{where}"), lines
    assert fragment in str(caught.value)


def test_undecodable_bytes_are_named_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(HEAD.encode() + b"description: \xff\xfe\n")
    with pytest.raises(ScenarioError, match=r"s\.yaml:5: not UTF-8 text: byte 0xff at column 14"):
        load_scenario(path)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "description: " + "x" * (1 << 20) + "\n")
    with pytest.raises(ScenarioError, match=r"s\.yaml: larger than the limit of 1 MiB"):
        load_scenario(path)


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "s.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a plain open() would wait forever
        reason = "a named pipe"
    elif kind == "device":
        path.symlink_to("/dev/zero")  # would never end
        reason = "a device"
    else:
        path.mkdir()
        reason = "a directory"
    with pytest.raises(ScenarioError, match=f"cannot read: not a regular file \\({reason}\\)"):
        load_scenario(path)


def test_a_model_file_that_leads_outside_its_model_by_a_symlink_is_not_touched(
    tmp_path: Path,
) -> None:
    from chaos._errors import ApplyError
    from chaos._faults import _model_file

    home = tmp_path / "registry" / "primary" / "v1"
    home.mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("keep me")
    (home / "tokenizer.json").symlink_to(secret)
    (home / "model.safetensors").write_text("weights")
    assert _model_file("f", tmp_path / "registry", "primary:v1", "model.safetensors").is_file()
    with pytest.raises(ApplyError, match="leads outside the model's directory"):
        _model_file("f", tmp_path / "registry", "primary:v1", "tokenizer.json")
    assert secret.read_text() == "keep me"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bomb", HEAD + _bomb(9) + "description: *a8\n"),
        ("deep", HEAD + "description: " + "[" * 5000 + "]" * 5000 + "\n"),
        ("inline-slo", CASES["an inline SLO with target and targetPercent"][0]),
    ],
)
def test_ichaos_validate_exits_2_without_a_traceback(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "validate", str(path), str(fifo)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{path}:" in done.stderr and f"{fifo}: cannot read: not a regular file" in done.stderr


def test_the_url_option_is_checked_like_the_field(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(HEAD))
    done = subprocess.run(
        [sys.executable, "-m", "chaos", "run", "--url", "file:///etc/passwd", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "argument --url: 'file:///etc/passwd' is not an http(s) URL" in done.stderr
    assert not (tmp_path / "reports").exists()


def test_a_control_character_is_named_with_its_line_and_column(tmp_path: Path) -> None:
    # Found by the property test: PyYAML's reader refuses it before parsing starts.
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "description: a\x1fb\n")
    with pytest.raises(
        ScenarioError, match=r"s\.yaml:5: invalid YAML: character #x001f at column 15"
    ):
        load_scenario(path)


@pytest.mark.parametrize(
    "body", ["description: [" + "1," * 400_000 + "1]\n", "description:\n" + "- 1\n" * 250_000]
)
def test_a_megabyte_of_values_stops_at_the_value_limit(tmp_path: Path, body: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(ScenarioError, match="more than 20000 values"):
        load_scenario(path)
