"""What the worker and the gateway share over HTTP: JSON errors, body limits, the admin token."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ._protocol import ADMIN_TOKEN_HEADER

MAX_BODY_BYTES = 256 * 1024

# Module level: FastAPI resolves these string annotations in the module's namespace.
Token = Annotated[str | None, Header(alias=ADMIN_TOKEN_HEADER)]


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return JSONResponse(
        {"error": {"type": kind, "message": message, **extra}}, status_code=status, headers=headers
    )


def check_token(expected: str | None, given: str | None) -> JSONResponse | None:
    """``None`` when ``given`` is the admin token; otherwise the response to send.

    Without a configured token the admin surface does not exist: 404, as for any unknown path.
    """
    if expected is None:
        return error_response(404, "not_found", "Not Found")
    if given is None:
        return error_response(401, "unauthorized", f"missing {ADMIN_TOKEN_HEADER} header")
    if not secrets.compare_digest(given.encode(), expected.encode()):
        return error_response(403, "forbidden", f"wrong {ADMIN_TOKEN_HEADER}")
    return None


def install_error_handling(app: FastAPI) -> None:
    """Client mistakes become 4xx JSON errors, never a 500: bad JSON 400, bad fields 422, a body
    over the limit 413."""

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Any]) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return error_response(
                413, "payload_too_large", f"request body over {MAX_BODY_BYTES} bytes"
            )
        response: Response = await call_next(request)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        fields = [{"field": _field(e["loc"]), "msg": e["msg"]} for e in errors]
        summary = "; ".join(f"{f['field']}: {f['msg']}" for f in fields)
        return error_response(422, "invalid_request", summary, fields=fields)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "(body)"
