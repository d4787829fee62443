"""Deterministic builds of the built-in models: ``primary`` v1, ``canary`` v2, ``fallback`` v1.

No model can be downloaded here, so the service makes its own: a byte-level BPE tokenizer trained
on the corpus shipped in the package, and small GPT-2-family models with fixed seeds, briefly
trained on the same corpus so that their answers are words rather than noise. Training runs on one
CPU thread with deterministic algorithms, which makes two builds byte-identical.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __name__ as _package
from ._errors import RegistryError
from ._registry import ModelRef, Registry

EOS_TOKEN = "<|endoftext|>"
CREATED_BY = "target_service models build"


@dataclass(frozen=True)
class ModelSpec:
    """One built-in model: its architecture and training recipe."""

    name: str
    version: str
    seed: int
    n_embd: int
    n_layer: int
    n_head: int
    steps: int
    # A canary is the primary trained further: a new version of the same model, as in real life.
    base: str | None = None

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version)


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("primary", "v1", seed=1, n_embd=64, n_layer=2, n_head=2, steps=300),
    ModelSpec("canary", "v2", seed=2, n_embd=64, n_layer=2, n_head=2, steps=80, base="primary"),
    ModelSpec("fallback", "v1", seed=3, n_embd=32, n_layer=1, n_head=2, steps=200),
)

_N_POSITIONS = 512
_VOCAB_SIZE = 2048
_SEQ_LEN = 32
_BATCH = 8
_LR = 5e-3


@dataclass(frozen=True)
class BuildResult:
    ref: ModelRef
    built: bool  # False when an intact copy was already there


def corpus_text() -> str:
    return importlib.resources.files(_package).joinpath("data/corpus.txt").read_text("utf-8")


@contextlib.contextmanager
def _deterministic_torch() -> Iterator[Any]:
    import torch

    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield torch
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _train_tokenizer(corpus: str) -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus.splitlines(),
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        show_progress=False,
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=_N_POSITIONS,
        # Decoder-only batching needs left padding so every row ends at the generation point.
        padding_side="left",
    )
    return tokenizer


def _train(model: Any, token_ids: list[int], *, steps: int, seed: int) -> None:
    import torch

    data = torch.tensor(token_ids, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=_LR)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(token_ids) - _SEQ_LEN - 1, (_BATCH,), generator=generator)
        batch = torch.stack([data[int(s) : int(s) + _SEQ_LEN] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _make_model(
    spec: ModelSpec, tokenizer: Any, token_ids: list[int], trained: dict[str, Any]
) -> Any:
    import copy

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(spec.seed)
    if spec.base is not None:
        model = copy.deepcopy(trained[spec.base])
    else:
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=_N_POSITIONS,
            n_embd=spec.n_embd,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config)
    _train(model, token_ids, steps=spec.steps, seed=spec.seed)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.generation_config.do_sample = False
    return model


def build_models(
    registry: Registry,
    names: list[str] | None = None,
    *,
    force: bool = False,
) -> list[BuildResult]:
    """Build built-in models into ``registry``; intact versions are kept unless ``force``."""
    known = {spec.name: spec for spec in BUILTIN_MODELS}
    wanted = names or list(known)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise RegistryError(f"unknown built-in model(s) {unknown}: choose from {sorted(known)}")

    todo = [known[n] for n in wanted if force or not _is_intact(registry, known[n].ref)]
    results = [BuildResult(known[n].ref, built=False) for n in wanted if known[n] not in todo]
    if not todo:
        return sorted(results, key=lambda r: r.ref)

    # A canary needs its base model trained first, even when the base itself is not rebuilt.
    order = [
        spec for spec in BUILTIN_MODELS if spec in todo or any(t.base == spec.name for t in todo)
    ]
    with _deterministic_torch(), _quiet_transformers():
        corpus = corpus_text()
        tokenizer = _train_tokenizer(corpus)
        token_ids: list[int] = []
        for line in corpus.splitlines():
            token_ids.extend(tokenizer.encode(line + "\n"))
        trained: dict[str, Any] = {}
        for spec in order:
            model = _make_model(spec, tokenizer, token_ids, trained)
            trained[spec.name] = model
            if spec not in todo:
                continue

            def populate(folder: Path, model: Any = model) -> None:
                model.save_pretrained(folder, safe_serialization=True)
                tokenizer.save_pretrained(folder)
                for path in folder.iterdir():
                    path.chmod(0o644)  # safetensors writes 0600; registry files are shared

            registry.write_version(spec.ref, populate, created_by=CREATED_BY)
            results.append(BuildResult(spec.ref, built=True))
    return sorted(results, key=lambda r: r.ref)


def _is_intact(registry: Registry, ref: ModelRef) -> bool:
    try:
        return not registry.problems(ref)
    except RegistryError:
        return False
