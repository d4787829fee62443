"""The model registry: ``<root>/<model>/<version>/`` folders, each with a ``manifest.json``.

A version folder holds a Hugging Face ``save_pretrained`` folder plus a manifest listing the
sha256 and size of every other file. Nothing is loaded without first verifying every file against
the manifest. Versions are written into a staging folder and moved into place with a rename, so a
crash never leaves a half-written version under its real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import (
    FileProblem,
    IntegrityError,
    ManifestError,
    ModelNotFoundError,
    ProblemKind,
    RegistryError,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
DEFAULT_REGISTRY = Path(".ichaos") / "registry"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STAGING_PREFIX = ".staging-"
_CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class ModelRef:
    """A model name and, optionally, a version (``primary:v1``)."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str, *, require_version: bool = False) -> ModelRef:
        name, sep, version = text.partition(":")
        if not _NAME_RE.match(name):
            raise RegistryError(
                f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (max 64)"
            )
        if sep and not _NAME_RE.match(version):
            raise RegistryError(
                f"invalid version {version!r} in {text!r}: use letters, digits, '.', '_' or '-'"
            )
        if require_version and not sep:
            raise RegistryError(f"{text!r} names no version: write MODEL:VERSION, e.g. primary:v1")
        return cls(name, version if sep else None)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """What ``manifest.json`` holds. Deterministic: no timestamps, sorted keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = MANIFEST_SCHEMA
    model: str
    version: str
    created_by: str
    files: dict[str, FileEntry]

    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk_files(folder: Path) -> Iterator[str]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            rel = path.relative_to(folder).as_posix()
            if rel != MANIFEST_NAME:
                yield rel


def build_manifest(folder: Path, *, model: str, version: str, created_by: str) -> Manifest:
    files = {
        rel: FileEntry(sha256=sha256_file(folder / rel), size=(folder / rel).stat().st_size)
        for rel in _walk_files(folder)
    }
    if not files:
        raise RegistryError(f"{folder}: no files to register")
    return Manifest(model=model, version=version, created_by=created_by, files=files)


class Registry:
    """A registry rooted at one directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, ref: ModelRef) -> Path:
        if ref.version is None:
            raise RegistryError(f"{ref}: a version is required here")
        return self.root / ref.name / ref.version

    def versions(self, name: str | None = None) -> list[ModelRef]:
        """Every ``model:version`` present (with a manifest), sorted; optionally of one model."""
        if not self.root.is_dir():
            return []
        refs = [
            ModelRef(manifest.parent.parent.name, manifest.parent.name)
            for manifest in self.root.glob(f"*/*/{MANIFEST_NAME}")
            if not manifest.parent.name.startswith(".")
            and not manifest.parent.parent.name.startswith(".")
        ]
        return sorted(r for r in refs if name is None or r.name == name)

    def resolve(self, ref: ModelRef) -> list[ModelRef]:
        """The versions a possibly version-less reference stands for; raises when there are none."""
        if ref.version is not None:
            if not self.path(ref).is_dir():
                raise ModelNotFoundError(f"{ref}: not in the registry at {self.root}")
            return [ref]
        found = self.versions(ref.name)
        if not found:
            raise ModelNotFoundError(f"model {ref.name!r}: not in the registry at {self.root}")
        return found

    def manifest(self, ref: ModelRef) -> Manifest:
        path = self.path(ref) / MANIFEST_NAME
        if not path.parent.is_dir():
            raise ModelNotFoundError(f"{ref}: not in the registry at {self.root}")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ManifestError(f"{ref}: {path} is missing") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{ref}: cannot read {path}: {exc}") from exc
        try:
            manifest = Manifest.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(document)"
            raise ManifestError(f"{ref}: {path}: {where}: {first['msg']}") from exc
        if (manifest.model, manifest.version) != (ref.name, ref.version):
            raise ManifestError(
                f"{ref}: {path} describes {manifest.model}:{manifest.version}, not {ref}"
            )
        return manifest

    def problems(self, ref: ModelRef) -> list[FileProblem]:
        """Every difference between a version's files and its manifest (empty when intact)."""
        folder = self.path(ref)
        manifest = self.manifest(ref)
        found = set(_walk_files(folder))
        problems: list[FileProblem] = []
        for rel, entry in sorted(manifest.files.items()):
            path = folder / rel
            if rel not in found:
                problems.append(FileProblem(rel, ProblemKind.MISSING, expected=entry.sha256))
                continue
            size = path.stat().st_size
            # A size difference is reported as such, but the digest is still the authority.
            actual = sha256_file(path)
            if actual != entry.sha256:
                if size != entry.size:
                    problems.append(FileProblem(rel, ProblemKind.SIZE, str(entry.size), str(size)))
                problems.append(FileProblem(rel, ProblemKind.MISMATCH, entry.sha256, actual))
        problems.extend(
            FileProblem(rel, ProblemKind.UNEXPECTED) for rel in sorted(found - set(manifest.files))
        )
        return problems

    def verify(self, ref: ModelRef) -> Path:
        """Return the version folder, or raise :class:`IntegrityError` listing every problem."""
        problems = self.problems(ref)
        if problems:
            raise IntegrityError(str(ref), problems)
        return self.path(ref)

    def write_version(
        self, ref: ModelRef, populate: Callable[[Path], None], *, created_by: str
    ) -> Manifest:
        """Create or replace a version: ``populate`` fills a staging folder, then it is swapped in.

        The staging folder lives beside the target so the final rename stays on one filesystem;
        on any failure it is removed and the previous version, if any, is left as it was.
        """
        target = self.path(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{ref.version}-", dir=target.parent)
        )
        try:
            populate(staging)
            manifest = build_manifest(
                staging, model=ref.name, version=str(ref.version), created_by=created_by
            )
            (staging / MANIFEST_NAME).write_text(manifest.dumps(), encoding="utf-8")
            staging.chmod(0o755)  # mkdtemp makes it 0700
            _swap_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return manifest

    def register(self, source: Path, ref: ModelRef, *, created_by: str) -> Manifest:
        """Copy a local Hugging Face folder into the registry and write its manifest."""
        source = Path(source)
        if not source.is_dir():
            raise RegistryError(f"{source}: not a directory")
        if not (source / "config.json").is_file():
            raise RegistryError(
                f"{source}: no config.json; expected a Hugging Face save_pretrained folder"
            )

        def populate(staging: Path) -> None:
            shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=False)
            (staging / MANIFEST_NAME).unlink(missing_ok=True)

        return self.write_version(ref, populate, created_by=created_by)


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    trash = target.with_name(f"{_STAGING_PREFIX}old-{target.name}-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    target.rename(trash)
    try:
        staging.rename(target)
    except BaseException:
        trash.rename(target)
        raise
    shutil.rmtree(trash, ignore_errors=True)
