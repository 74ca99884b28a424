"""What the image routes share: answering an :class:`ImageRequest` (deadline, client gone:
499), the matting check, an upload's label, and the responses the
OpenAPI schema lists for them."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel

from rmcli.config.settings import Settings
from rmcli.contracts.output import ComposeOptions
from rmcli.serve.service import ImageRequest, InferenceService


class ErrorBody(BaseModel):
    """Every error: one line saying what went wrong."""

    error: str


ERRORS = {
    400: "Bad input (not an image, bad option, unknown model)",
    401: "Missing or wrong bearer token",
    403: "Refused (URL fetching off, or a non-public address)",
    408: "The body did not arrive in time (serve_body_timeout, serve_min_rate)",
    413: "Body or fetched image too large",
    422: "Invalid field, image over the pixel limit, or output too large for its format",
    502: "The URL could not be fetched",
    503: "Busy (queue full), deadline passed, draining, or model unavailable; see Retry-After",
    504: "The URL was not fetched within serve_url_timeout",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of these error statuses (an :class:`ErrorBody` each)."""
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in codes}


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
        "description": "The cut-out (or mask, or composite)",
    },
    **error_responses(400, 401, 403, 408, 413, 422, 502, 503, 504),
}


async def answer(
    request: Request, job: ImageRequest, service: InferenceService, settings: Settings
) -> Response:
    """The image ``job`` makes, within ``serve_deadline`` of the request's arrival; 499 (and
    the work cancelled) when the client goes away first."""
    request.state.model = service.label(job.model)
    deadline = request.state.arrived + settings["serve_deadline"]
    work = asyncio.ensure_future(service.run(job, deadline))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server stops: the work goes with this request
        work.cancel()
        gone.cancel()
        raise
    if not work.done():
        work.cancel()
        with contextlib.suppress(BaseException):
            await work
        request.state.client_gone = True
        return Response(status_code=499)
    gone.cancel()
    output = work.result()
    request.state.model = output.model
    return Response(output.body, media_type=output.media_type)


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read by then)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def label(file: UploadFile) -> str:
    """An upload's name for the logs: one line, at most 200 characters."""
    name = (file.filename or "upload").replace("\n", " ").replace("\r", " ")
    return name[:200]


def check_matting(options: ComposeOptions, service: InferenceService) -> None:
    """Matting needs pymatting, and its kernels compiled (503 + Retry-After until then)."""
    if options.alpha_matting and not options.only_mask:
        from rmcli.images.matting import require_pymatting

        require_pymatting()
        service.require_matting()
