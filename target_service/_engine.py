"""A verified model on one device, and batched generation with per-row streaming.

The one place that touches torch and transformers at inference time. Everything is imported
inside functions so that importing the package stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ._errors import DeviceLostError, DeviceOutOfMemoryError, InferenceError, ModelLoadError
from ._registry import ModelRef, Registry

TokenCallback = Callable[[int, str], None]
FinishCallback = Callable[[int, int, str], None]
StepHook = Callable[[], None]


class DevicePreference(StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


def _offline() -> None:
    # Models only ever come from the local registry; never let a library reach for a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def preload() -> None:
    """Import what loading and serving a model needs, without running any torch operation
    (no thread pools yet): a standby worker pays this once, ahead of the failure it replaces."""
    _offline()
    import importlib

    for module in (
        "torch",
        "transformers",
        "transformers.modeling_utils",
        "transformers.generation.utils",
        "transformers.generation.streamers",
        "transformers.generation.stopping_criteria",
        "transformers.models.auto.modeling_auto",
        "transformers.models.auto.tokenization_auto",
        "transformers.models.gpt2.modeling_gpt2",
        "transformers.tokenization_utils_fast",
        "fastapi",
        "uvicorn",
        "prometheus_client",
    ):
        importlib.import_module(module)


def resolve_device(preference: DevicePreference) -> str:
    import torch

    if preference is DevicePreference.CPU:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if preference is DevicePreference.CUDA:
        raise ModelLoadError("--device cuda was requested but no CUDA device is available")
    return "cpu"


@dataclass
class _Row:
    limit: int
    ids: list[int]
    emitted: str = ""
    finished: bool = False


class Engine:
    """A loaded model and tokenizer. ``generate`` is not re-entrant: one batch at a time."""

    def __init__(self, ref: ModelRef, model: Any, tokenizer: Any, device: str) -> None:
        self.ref = ref
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_positions = int(getattr(model.config, "n_positions", 1024))

    @classmethod
    def load(cls, registry: Registry, ref: ModelRef, preference: DevicePreference) -> Engine:
        """Verify every file against the manifest, then load with transformers."""
        folder = registry.verify(ref)  # raises IntegrityError before a byte is deserialised
        _offline()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(preference)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{ref}: transformers could not load {folder}: {exc}") from exc
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.to(device)
        model.eval()
        torch.set_grad_enabled(False)
        return cls(ref, model, tokenizer, device)

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt))

    def warm_up(self) -> None:
        self.generate(["warm up"], [2], on_token=lambda _r, _t: None, on_finish=lambda *_: None)

    def generate(
        self,
        prompts: list[str],
        max_new_tokens: list[int],
        *,
        on_token: TokenCallback,
        on_finish: FinishCallback,
        on_step: StepHook | None = None,
    ) -> None:
        """Run one greedy ``generate`` call for all prompts.

        ``on_token(row, text)`` gets each row's new text as it is produced, ``on_finish(row,
        tokens, reason)`` fires as soon as a row is done (its own limit or end of text), so a short
        request in a batch with a long one is answered early. ``on_step`` runs before every
        decoding step; the fault hooks raise from it.
        """
        import torch
        from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        tokenizer = self.tokenizer
        eos = tokenizer.eos_token_id
        rows = [_Row(limit=n, ids=[]) for n in max_new_tokens]

        def emit(index: int, row: _Row, *, final: bool) -> None:
            text = tokenizer.decode(row.ids, skip_special_tokens=True)
            # A byte-level token can end inside a UTF-8 character: hold it back until complete.
            if not final and text.endswith("\ufffd"):
                return
            if len(text) > len(row.emitted) and text.startswith(row.emitted):
                on_token(index, text[len(row.emitted) :])
            row.emitted = text

        def finish(index: int, row: _Row, reason: str) -> None:
            emit(index, row, final=True)
            row.finished = True
            on_finish(index, len(row.ids), reason)

        class _Streamer(BaseStreamer):  # type: ignore[misc]
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # the first call carries the prompts
                    self.prompt_seen = True
                    return
                if on_step is not None:
                    on_step()
                for index, token in enumerate(value.reshape(-1).tolist()):
                    row = rows[index]
                    if row.finished:
                        continue
                    if token == eos:
                        finish(index, row, "stop")
                        continue
                    row.ids.append(int(token))
                    emit(index, row, final=False)
                    if len(row.ids) >= row.limit:
                        finish(index, row, "length")

            def end(self) -> None:
                for index, row in enumerate(rows):
                    if not row.finished:
                        finish(index, row, "length")

        class _RowsDone(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.tensor([r.finished for r in rows], device=input_ids.device)

        if on_step is not None:
            on_step()
        try:
            encoded = tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
            with torch.inference_mode():
                self.model.generate(
                    **encoded,
                    max_new_tokens=max(max_new_tokens),
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=eos,
                    streamer=_Streamer(),
                    stopping_criteria=StoppingCriteriaList([_RowsDone()]),
                )
        except InferenceError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise DeviceOutOfMemoryError(str(exc)) from exc
        except RuntimeError as exc:
            if "CUDA" in str(exc) or "cuda" in str(exc):
                raise DeviceLostError(str(exc)) from exc
            raise InferenceError(str(exc)) from exc
