"""Registry integrity: manifests, verification, refusal of damaged files (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from target_service import (
    IntegrityError,
    ManifestError,
    ModelNotFoundError,
    ModelRef,
    ProblemKind,
    Registry,
    RegistryError,
    sha256_file,
)

REF = ModelRef("toy", "v1")


def make_hf_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (path / "tokenizer.json").write_text('{"version": "1.0"}')
    return path


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry")
    registry.register(make_hf_folder(tmp_path / "src"), REF, created_by="test")
    return registry


def only_problem(registry: Registry, kind: ProblemKind) -> None:
    with pytest.raises(IntegrityError) as info:
        registry.verify(REF)
    assert kind in {p.kind for p in info.value.problems}


def test_intact_version_verifies_and_manifest_lists_every_file(reg: Registry) -> None:
    folder = reg.verify(REF)
    manifest = reg.manifest(REF)
    assert sorted(manifest.files) == ["config.json", "model.safetensors", "tokenizer.json"]
    entry = manifest.files["model.safetensors"]
    assert entry.sha256 == sha256_file(folder / "model.safetensors")
    assert entry.size == 256 * 64
    assert (manifest.model, manifest.version, manifest.created_by) == ("toy", "v1", "test")


def test_flipped_bit_is_a_mismatch_naming_both_digests(reg: Registry) -> None:
    path = reg.path(REF) / "model.safetensors"
    expected = sha256_file(path)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as info:
        reg.verify(REF)
    (problem,) = info.value.problems
    assert problem.kind is ProblemKind.MISMATCH
    assert problem.path == "model.safetensors"
    assert problem.expected == expected
    assert problem.actual == sha256_file(path)
    assert expected in str(info.value)


def test_truncated_file_reports_size_and_digest(reg: Registry) -> None:
    path = reg.path(REF) / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IntegrityError) as info:
        reg.verify(REF)
    kinds = [p.kind for p in info.value.problems]
    assert kinds == [ProblemKind.SIZE, ProblemKind.MISMATCH]
    assert "expected 16384 bytes, actual 100" in str(info.value)


def test_missing_and_unexpected_files(reg: Registry) -> None:
    (reg.path(REF) / "tokenizer.json").unlink()
    (reg.path(REF) / "extra.bin").write_bytes(b"x")
    with pytest.raises(IntegrityError) as info:
        reg.verify(REF)
    described = {p.path: p.kind for p in info.value.problems}
    assert described == {"tokenizer.json": ProblemKind.MISSING, "extra.bin": ProblemKind.UNEXPECTED}


def test_missing_or_malformed_manifest(reg: Registry) -> None:
    manifest = reg.path(REF) / "manifest.json"
    manifest.write_text('{"model": "toy"}')
    with pytest.raises(ManifestError, match="version"):
        reg.verify(REF)
    manifest.unlink()
    with pytest.raises(ManifestError, match="missing"):
        reg.verify(REF)


def test_manifest_for_another_model_is_refused(reg: Registry) -> None:
    manifest = reg.path(REF) / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"toy"', '"other"'))
    with pytest.raises(ManifestError, match="describes other:v1"):
        reg.verify(REF)


@pytest.mark.parametrize("text", ["../etc", "a/b", "", "x:", ":v1", "ok:../v"])
def test_model_refs_that_could_escape_the_registry_are_refused(text: str) -> None:
    with pytest.raises(RegistryError):
        ModelRef.parse(text)


def test_version_is_required_where_asked() -> None:
    assert ModelRef.parse("primary") == ModelRef("primary", None)
    with pytest.raises(RegistryError, match="MODEL:VERSION"):
        ModelRef.parse("primary", require_version=True)


def test_unknown_model_is_not_found(reg: Registry) -> None:
    with pytest.raises(ModelNotFoundError):
        reg.resolve(ModelRef("nope", "v1"))
    with pytest.raises(ModelNotFoundError):
        reg.resolve(ModelRef("nope"))
    assert reg.resolve(ModelRef("toy")) == [REF]


def test_register_needs_a_hugging_face_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match=r"no config\.json"):
        Registry(tmp_path / "r").register(tmp_path / "empty", REF, created_by="t")
    with pytest.raises(RegistryError, match="not a directory"):
        Registry(tmp_path / "r").register(tmp_path / "absent", REF, created_by="t")


def test_failed_write_keeps_the_previous_version_and_no_staging_left(reg: Registry) -> None:
    before = reg.manifest(REF)

    def explode(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        reg.write_version(REF, explode, created_by="t")
    assert reg.manifest(REF) == before
    reg.verify(REF)
    assert [p.name for p in reg.path(REF).parent.iterdir()] == ["v1"]


def test_rewrite_replaces_a_damaged_version(reg: Registry, tmp_path: Path) -> None:
    (reg.path(REF) / "config.json").write_text("damaged")
    reg.register(tmp_path / "src", REF, created_by="again")
    reg.verify(REF)
    assert reg.versions() == [REF]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "target_service", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_verify_exit_codes_and_messages(reg: Registry) -> None:
    ok = run_cli("models", "verify", "--registry", str(reg.root))
    assert ok.returncode == 0, ok.stderr
    assert "toy:v1: ok (3 files)" in ok.stdout

    path = reg.path(REF) / "config.json"
    expected = sha256_file(path)
    path.write_text('{"model_type": "evil"}')
    bad = run_cli("models", "verify", "--registry", str(reg.root), "toy:v1")
    assert bad.returncode == 1
    assert f"toy:v1: FAILED config.json: sha256 mismatch: expected {expected}, actual" in bad.stdout

    missing = run_cli("models", "verify", "--registry", str(reg.root), "ghost")
    assert missing.returncode == 2
    assert "model 'ghost': not in the registry" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_cli_register_then_list(tmp_path: Path) -> None:
    src = make_hf_folder(tmp_path / "hf")
    root = tmp_path / "reg"
    done = run_cli(
        "models",
        "register",
        str(src),
        "--model",
        "mine",
        "--version",
        "v7",
        "--registry",
        str(root),
    )
    assert done.returncode == 0, done.stderr
    assert "mine:v7: registered 3 files" in done.stdout
    listed = run_cli("models", "list", "--registry", str(root))
    assert listed.stdout.split() == ["mine:v7"]
    bad = run_cli(
        "models",
        "register",
        str(src),
        "--model",
        "../x",
        "--version",
        "v1",
        "--registry",
        str(root),
    )
    assert bad.returncode == 2
    assert "invalid model name '../x'" in bad.stderr
