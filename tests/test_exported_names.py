"""Each package's public surface is exactly its ``__all__``, and everything in it exists."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("package", ["chaos", "target_service"])
def test_all_matches_public_names(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith(package)
    }
    assert set(module.__all__) >= public
    for name in module.__all__:
        assert hasattr(module, name), name
    assert len(module.__all__) == len(set(module.__all__))


def test_packages_import_without_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, chaos, chaos.cli, target_service; "
        "heavy = {'torch', 'transformers', 'fastapi'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
