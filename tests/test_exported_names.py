"""Each package's public surface is exactly its ``__all__``, and everything in it exists."""

from __future__ import annotations

import importlib
import pkgutil
import re
import types

import pytest

PACKAGES = ["chaos", "slo", "target_service"]
SUB_PACKAGES = [
    "chaos.backends",
    "chaos.injectors",
    "chaos.shards",
]  # plugin families, with their own __all__


@pytest.mark.parametrize("package", [*PACKAGES, *SUB_PACKAGES])
def test_all_is_exactly_what_the_package_exports(package: str) -> None:
    module = importlib.import_module(package)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
        and name != "annotations"  # `from __future__ import annotations`
    } | ({"__version__"} if hasattr(module, "__version__") else set())  # fmt: skip
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))


def _errors(package: str) -> dict[str, type[BaseException]]:
    """Every exception class the package's modules define, by name."""
    root = importlib.import_module(package)
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.endswith("__main__"):  # running it is the command line
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type) and issubclass(value, BaseException)
                and value.__module__ == module.__name__ and not name.startswith("_")
            ):  # fmt: skip
                found[name] = value
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_error_class_is_in_its_packages_drawn_tree(package: str) -> None:
    tree = importlib.import_module(f"{package}._errors").__doc__ or ""
    drawn = set(re.findall(r"\b([A-Z][A-Za-z]+)\b", tree))
    errors = _errors(package)
    assert sorted(set(errors) - drawn) == []
    # And each is drawn under its real base.
    for name, error in errors.items():
        assert any(base.__name__ in drawn or base in (Exception, BaseException, TimeoutError)
                   for base in error.__bases__), name  # fmt: skip


def test_packages_import_without_heavy_dependencies() -> None:
    import subprocess
    import sys

    code = (
        "import sys, chaos, chaos.cli, target_service; "
        "heavy = {'torch', 'transformers', 'fastapi', 'ray'} & set(sys.modules); "
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
