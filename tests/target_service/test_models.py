"""The built-in models: deterministic builds, and loading that always verifies first."""

from __future__ import annotations

from pathlib import Path

import pytest

from target_service import (
    BUILTIN_MODELS,
    DevicePreference,
    IntegrityError,
    ModelRef,
    Registry,
    build_models,
)
from tests.conftest import needs_service

pytestmark = [pytest.mark.slow, needs_service]


def test_building_twice_gives_byte_identical_files(built_registry: Path, tmp_path: Path) -> None:
    again = Registry(tmp_path / "again")
    build_models(again)
    first = Registry(built_registry)
    assert first.versions() == again.versions() == sorted(s.ref for s in BUILTIN_MODELS)
    for ref in first.versions():
        assert first.manifest(ref) == again.manifest(ref)
        for name in first.manifest(ref).files:
            assert (first.path(ref) / name).read_bytes() == (again.path(ref) / name).read_bytes()


def test_built_models_are_gpt2_family_and_fallback_is_smaller(built_registry: Path) -> None:
    import json

    reg = Registry(built_registry)
    configs = {
        ref.name: json.loads((reg.path(ref) / "config.json").read_text()) for ref in reg.versions()
    }
    assert {c["model_type"] for c in configs.values()} == {"gpt2"}
    size = {name: (reg.path(reg.versions(name)[0]) / "model.safetensors").stat().st_size
            for name in configs}  # fmt: skip
    assert size["fallback"] < size["primary"]
    assert (reg.path(ModelRef("canary", "v2")) / "model.safetensors").read_bytes() != (
        reg.path(ModelRef("primary", "v1")) / "model.safetensors"
    ).read_bytes()


def test_build_keeps_intact_models_and_repairs_damaged_ones(registry: Path) -> None:
    reg = Registry(registry)
    ref = ModelRef("fallback", "v1")
    (reg.path(ref) / "config.json").write_text("{}")
    results = {str(r.ref): r.built for r in build_models(reg)}
    assert results == {"canary:v2": False, "fallback:v1": True, "primary:v1": False}
    reg.verify(ref)


def test_unknown_builtin_model_is_refused(tmp_path: Path) -> None:
    from target_service import RegistryError

    with pytest.raises(RegistryError, match="unknown built-in model"):
        build_models(Registry(tmp_path), ["gpt5"])


def test_load_refuses_damaged_files_before_deserialising(registry: Path) -> None:
    from target_service._engine import Engine

    reg = Registry(registry)
    ref = ModelRef("fallback", "v1")
    (reg.path(ref) / "tokenizer.json").unlink()
    with pytest.raises(IntegrityError, match=r"tokenizer\.json: missing"):
        Engine.load(reg, ref, DevicePreference.CPU)


def test_loaded_model_generates_in_batches_with_per_row_limits(built_registry: Path) -> None:
    from target_service._engine import Engine

    engine = Engine.load(Registry(built_registry), ModelRef("primary", "v1"), DevicePreference.CPU)
    texts: dict[int, str] = {0: "", 1: ""}
    finished: dict[int, tuple[int, str]] = {}

    def on_token(row: int, text: str) -> None:
        assert row not in finished, "no token after a row has finished"
        texts[row] += text

    def on_finish(row: int, tokens: int, reason: str) -> None:
        finished[row] = (tokens, reason)

    engine.generate(
        ["Once upon a time", "The service"], [3, 10], on_token=on_token, on_finish=on_finish
    )
    assert finished[0][0] <= 3
    assert finished[1][0] <= 10
    assert texts[0] and texts[1]
