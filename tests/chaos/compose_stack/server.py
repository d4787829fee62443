"""A small OpenAI-compatible stack on the Python standard library alone, for the compose
backend's tests (its image needs nothing but python3): `model` streams chat completions and
refuses to start when its weights do not match their checksum; `router` forwards to $UPSTREAM."""

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Model(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._send(200 if self.path == "/health" else 404, b'{"ok": true}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        tokens = int(body.get("max_tokens") or 8)
        if not body.get("stream"):
            choice = {"message": {"content": "x" * tokens}, "finish_reason": "length"}
            answer = {"choices": [choice], "usage": {"completion_tokens": tokens}, "model": "tiny"}
            self._send(200, json.dumps(answer).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(tokens):
            chunk = {"choices": [{"delta": {"content": "x"}, "index": 0}], "model": "tiny"}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _send(self, status: int, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class Router(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        data = b'{"ok": true}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = urllib.request.Request(
            os.environ["UPSTREAM"] + self.path,
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            upstream = urllib.request.urlopen(request, timeout=30)
        except (urllib.error.URLError, OSError) as exc:
            data = json.dumps({"error": str(exc)}).encode()
            self.send_response(502)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(upstream.status)
        self.send_header("Content-Type", upstream.headers.get("Content-Type", "application/json"))
        self.send_header("Connection", "close")
        self.end_headers()
        while chunk := upstream.read1(65536):
            self.wfile.write(chunk)
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    role, port = sys.argv[1], int(sys.argv[2])
    if role == "model":
        weights = Path("/model/weights.bin").read_bytes()
        expected = Path("/model/weights.sha256").read_text().split()[0]
        if hashlib.sha256(weights).hexdigest() != expected:
            # A real server loads for a while before it fails; failing at once, the engine
            # would restart it every 250 ms.
            time.sleep(1.0)
            print("weights.bin does not match weights.sha256: refusing to start", flush=True)
            sys.exit(1)
    handler = Model if role == "model" else Router
    print(f"{role} listening on {port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), handler).serve_forever()


if __name__ == "__main__":
    main()
