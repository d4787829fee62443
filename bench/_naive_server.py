"""The naive peer for bench/service_throughput.py: one synchronous ``generate`` per request.

This is the design the seed documents sketch: a sync FastAPI endpoint (run on Starlette's thread
pool) that tokenizes one prompt and calls ``model.generate`` for it alone, no batching. It loads the
same verified registry folder as the real worker, and announces itself on stdout with the same
JSON lines (``listening``, ``ready``), so the benchmark drives both the same way.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from target_service import ModelRef, Registry


class Body(BaseModel):
    prompt: str
    max_new_tokens: int = 32


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", type=Path, required=True)
    parser.add_argument("--model", default="primary:v1")
    args = parser.parse_args()

    folder = Registry(args.registry).verify(ModelRef.parse(args.model, require_version=True))
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    ref = ModelRef.parse(args.model)
    app = FastAPI()

    @app.post("/v1/generate")
    def generate(body: Body) -> dict[str, Any]:
        started = time.monotonic()
        encoded = tokenizer(body.prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                **encoded,
                max_new_tokens=body.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
        new = out[0, encoded["input_ids"].shape[1] :]
        return {
            "text": tokenizer.decode(new, skip_special_tokens=True),
            "model": ref.name,
            "version": ref.version,
            "tokens": int(new.shape[0]),
            "timings": {"queue_ms": 0.0, "inference_ms": (time.monotonic() - started) * 1000},
        }

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    print(json.dumps({"event": "listening", "port": sock.getsockname()[1]}), flush=True)
    print(json.dumps({"event": "ready", "model": args.model, "device": "cpu"}), flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
