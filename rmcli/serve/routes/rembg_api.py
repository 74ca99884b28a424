"""rembg 2.0.86's API: ``POST /api/remove`` (an upload) and ``GET /api/remove?url=`` (an image
fetched from a URL, off unless ``serve_url_fetch``), with rembg's fields and defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from rmcli.compat import rembg_options
from rmcli.serve.http_errors import ServeError
from rmcli.serve.routes.answer import IMAGE_RESPONSES, answer, check_matting, label
from rmcli.serve.routes.dependencies import Admitting, Policy, ServeSettings, Service
from rmcli.serve.service import ImageRequest

if TYPE_CHECKING:
    from rmcli.config.settings import Settings
    from rmcli.contracts.output import ComposeOptions

router = APIRouter(tags=["rembg-compatible"])


@router.post(
    "/api/remove",
    summary="Remove the background of an uploaded image (rembg 2.0.86's form)",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def rembg_post(
    request: Request,
    service: Service,
    settings: ServeSettings,
    file: Annotated[UploadFile, File(description="The image")],
    model: Annotated[str | None, Form(description="Model (default: the server's)")] = None,
    a: Annotated[bool, Form(description="Alpha matting")] = False,
    af: Annotated[int, Form(ge=0, le=255, description="Matting: foreground above")] = 240,
    ab: Annotated[int, Form(ge=0, le=255, description="Matting: background below")] = 10,
    ae: Annotated[int, Form(ge=0, le=255, description="Matting: erosion size")] = 10,
    om: Annotated[bool, Form(description="Only the mask")] = False,
    ppm: Annotated[bool, Form(description="Post-process the mask")] = False,
    bgc: Annotated[str | None, Form(description="Background colour r,g,b,a")] = None,
    bgc_query: Annotated[
        str | None, Query(alias="bgc", description="Background colour (rembg reads it here)")
    ] = None,
) -> Response:
    data = await file.read()
    options = _options(settings, a, af, ab, ae, om, ppm, bgc or bgc_query)
    check_matting(options, service)
    job = ImageRequest(data, model, options, label=label(file))
    return await answer(request, job, service, settings)


@router.get(
    "/api/remove",
    summary="Remove the background of an image at a URL (off unless serve_url_fetch)",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def rembg_get(
    request: Request,
    service: Service,
    settings: ServeSettings,
    admission: Admitting,
    policy: Policy,
    url: Annotated[str, Query(description="http(s) URL of the image")],
    model: Annotated[str | None, Query(description="Model (default: the server's)")] = None,
    a: Annotated[bool, Query(description="Alpha matting")] = False,
    af: Annotated[int, Query(ge=0, le=255)] = 240,
    ab: Annotated[int, Query(ge=0, le=255)] = 10,
    ae: Annotated[int, Query(ge=0, le=255)] = 10,
    om: Annotated[bool, Query(description="Only the mask")] = False,
    ppm: Annotated[bool, Query(description="Post-process the mask")] = False,
    bgc: Annotated[str | None, Query(description="Background colour r,g,b,a")] = None,
) -> Response:
    if policy is None:
        raise ServeError(
            403,
            "fetching images from URLs is off; start the server with --url-fetch "
            "(or RMCLI_SERVE_URL_FETCH=true) to allow public http(s) URLs",
        )
    from rmcli.serve.url_fetch import fetch

    options = _options(settings, a, af, ab, ae, om, ppm, bgc)
    check_matting(options, service)
    service.remover(model)  # an unknown model is refused before any fetch
    deadline = request.state.arrived + settings["serve_deadline"]
    data = await fetch(url, policy, deadline=deadline)  # no admission place meanwhile
    reason = admission.refusal()
    if reason is not None:
        raise ServeError(503, reason, admission.retry_after)
    with admission.held():
        job = ImageRequest(data, model, options, label=url[:200])
        return await answer(request, job, service, settings)


def _options(
    settings: Settings, a: bool, af: int, ab: int, ae: int, om: bool, ppm: bool, bgc: str | None
) -> ComposeOptions:
    """rembg's form fields as rembg composes them (:func:`rmcli.compat.rembg_options`)."""
    return rembg_options(
        alpha_matting=a,
        alpha_matting_foreground_threshold=af,
        alpha_matting_background_threshold=ab,
        alpha_matting_erode_size=ae,
        only_mask=om,
        post_process_mask=ppm,
        bgcolor=bgc,
        settings=settings,
    )
