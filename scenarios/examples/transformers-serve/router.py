"""A small router in front of one OpenAI-compatible model server, as many deployments have one
(an API gateway, LiteLLM, an ingress): every request but ``GET /health`` is passed to the
upstream and its answer streamed back chunk by chunk as it comes.

    python router.py --port 8080 --upstream http://127.0.0.1:8000 [--host 0.0.0.0]

``GET /health`` is the router's own (it answers while the model server is down); when the
upstream cannot be reached the client gets a 502 with an OpenAI-style error object, and a
stream the upstream breaks off is broken off to the client too, never ended as if complete.
"""

from __future__ import annotations

import argparse

from aiohttp import ClientError, ClientSession, ClientTimeout, web

# Headers of one connection, not of the request: never passed on.
_HOP_BY_HOP = {
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
    "content-length", "proxy-authorization", "proxy-authenticate",
}  # fmt: skip
_SESSION = web.AppKey("session", ClientSession)
_UPSTREAM = web.AppKey("upstream", str)


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _forward(request: web.Request) -> web.StreamResponse:
    url = request.app[_UPSTREAM] + request.path_qs
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    body = await request.read()
    try:
        upstream = await request.app[_SESSION].request(
            request.method, url, data=body, headers=headers
        )
    except (ClientError, TimeoutError) as exc:
        error = {"message": f"upstream unavailable: {exc}", "type": "upstream_unavailable"}
        return web.json_response({"error": error}, status=502)
    async with upstream:
        answer = web.StreamResponse(
            status=upstream.status,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP},
        )
        await answer.prepare(request)
        # A read error here propagates: aiohttp then drops the client's connection, so a
        # broken upstream stream reaches the client as a broken stream.
        async for chunk in upstream.content.iter_any():
            await answer.write(chunk)
        await answer.write_eof()
        return answer


async def _app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    timeout = ClientTimeout(total=None, sock_connect=5, sock_read=120)
    app[_SESSION] = ClientSession(timeout=timeout, auto_decompress=False)
    app[_UPSTREAM] = upstream.rstrip("/")

    async def close(app: web.Application) -> None:
        await app[_SESSION].close()

    app.on_cleanup.append(close)
    app.router.add_get("/health", _health)
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the model server, http://HOST:PORT")
    args = parser.parse_args()
    web.run_app(_app(args.upstream), host=args.host, port=args.port, print=None,
                access_log=None)  # fmt: skip


if __name__ == "__main__":
    main()
