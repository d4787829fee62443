"""The main job until the harness exists: start a worker, ask it something, show the answer."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from ._process import WorkerProcess


def run_demo(registry: Path, model: str, prompt: str, max_new_tokens: int) -> int:
    print(f"starting a worker for {model} (registry {registry}) ...", flush=True)
    started = time.monotonic()
    with WorkerProcess(model, registry, stderr=subprocess.DEVNULL) as worker:
        ready = worker.wait_ready(timeout=180)
        print(
            f"worker ready on {worker.url} in {time.monotonic() - started:.1f}s "
            f"(device {ready['device']})\n",
            flush=True,
        )
        with httpx.Client(base_url=worker.url, timeout=60) as client:
            body = {"prompt": prompt, "max_new_tokens": max_new_tokens}
            answer = client.post("/v1/generate", json=body)
            answer.raise_for_status()
            data = answer.json()
            print(f"POST /v1/generate {json.dumps(body)}")
            print(f"  model    {data['model']}:{data['version']}")
            print(f"  prompt   {prompt!r}")
            print(f"  answer   {data['text']!r}")
            print(f"  tokens   {data['tokens']} ({data['finish_reason']})")
            print(
                f"  timings  queue {data['timings']['queue_ms']:.1f} ms, "
                f"inference {data['timings']['inference_ms']:.1f} ms\n"
            )
            print("streamed (one server-sent event per token):\n  ", end="", flush=True)
            with client.stream("POST", "/v1/generate", json={**body, "stream": True}) as stream:
                stream.raise_for_status()
                event = ""
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "token":
                        print(json.loads(line.removeprefix("data: "))["text"], end="", flush=True)
            print("\n")
            metrics = client.get("/metrics").text
            batches = [
                ln for ln in metrics.splitlines() if ln.startswith("ichaos_worker_batch_size_count")
            ]
            print(f"metrics: {batches[0] if batches else 'no batches recorded'}")
    print("worker stopped.")
    return 0
