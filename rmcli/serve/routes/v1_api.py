"""rmcli's own API: ``POST /v1/remove`` (every output option of ``rmcli remove``) and
``GET /v1/models`` (the models requests may name)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from rmcli.config.settings import Settings
from rmcli.contracts.output import ComposeOptions
from rmcli.serve.routes.answer import (
    IMAGE_RESPONSES,
    answer,
    check_matting,
    error_responses,
    label,
)
from rmcli.serve.routes.dependencies import ServeSettings, Service
from rmcli.serve.service import ImageRequest

router = APIRouter(tags=["rmcli"])


@router.get(
    "/v1/models",
    summary="Models requests may name, the default, those ready (weights on disk) and loaded",
    responses=error_responses(401),
)
async def models(service: Service, settings: ServeSettings) -> dict[str, Any]:
    from rmcli.engine.registry import models as catalogue

    known = catalogue()
    names = sorted(service.allowed_models or known)
    weights = {n: known[n].weights for n in names if n in known}
    weights[service.default_model.name] = service.default_model.weights
    ready = [n for n in names if n in weights and _on_disk(settings, weights[n])]
    return {
        "default": service.default_model.name,
        "models": names,
        "ready": ready,
        "loaded": service.loaded(),  # bytes counted against serve_memory_budget
        "memory_budget": service.memory_report()["bytes"],
    }


@router.post(
    "/v1/remove",
    summary="Remove the background of an uploaded image, with every rmcli output option",
    response_class=Response,
    responses=IMAGE_RESPONSES,
)
async def v1_remove(
    request: Request,
    service: Service,
    settings: ServeSettings,
    file: Annotated[UploadFile, File(description="The image")],
    model: Annotated[str | None, Form(description="Model (default: the server's)")] = None,
    format: Annotated[
        str, Form(pattern="^(png|webp|jpg)$", description="Output format: png, webp, jpg")
    ] = "png",
    only_mask: Annotated[bool, Form(description="The 8-bit mask instead")] = False,
    bgcolor: Annotated[
        str | None, Form(description="Background: a name, #rrggbb[aa] or r,g,b[,a]")
    ] = None,
    background: Annotated[
        UploadFile | None, File(description="Background image, scaled to cover")
    ] = None,
    premultiplied: Annotated[
        bool | None, Form(description="Colour scaled by alpha, as rembg")
    ] = None,
    crop: Annotated[bool, Form(description="Crop to the subject")] = False,
    margin: Annotated[int | None, Form(ge=0, le=10000, description="Crop margin")] = None,
    crop_threshold: Annotated[int | None, Form(ge=0, le=254)] = None,
    alpha_matting: Annotated[bool, Form(description="Refine edges (pymatting)")] = False,
    alpha_matting_foreground_threshold: Annotated[int | None, Form(ge=0, le=255)] = None,
    alpha_matting_background_threshold: Annotated[int | None, Form(ge=0, le=255)] = None,
    alpha_matting_erode_size: Annotated[int | None, Form(ge=0, le=255)] = None,
    post_process_mask: Annotated[bool | None, Form(description="Smooth the mask")] = None,
) -> Response:
    data = await file.read()
    back = await background.read() if background is not None else None
    options = ComposeOptions.from_settings(
        settings,
        only_mask=only_mask,
        bgcolor=bgcolor,
        premultiplied=premultiplied,
        crop=crop,
        crop_margin=margin,
        crop_threshold=crop_threshold,
        alpha_matting=alpha_matting,
        alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
        alpha_matting_background_threshold=alpha_matting_background_threshold,
        alpha_matting_erode_size=alpha_matting_erode_size,
        post_process_mask=post_process_mask,
    )
    check_matting(options, service)
    job = ImageRequest(data, model, options, fmt=format, background=back or None, label=label(file))
    return await answer(request, job, service, settings)


def _on_disk(settings: Settings, weights: Any) -> bool:
    """Whether ``weights`` are on this machine (cached, in place or in rembg's cache): the
    models the server can serve without fetching anything."""
    from rmcli.engine.session import store_for
    from rmcli.engine.weights import rembg_copies

    store = store_for(settings)
    if store.path_for(weights).is_file():
        return True
    return store.in_cache(weights) and any(c.is_file() for c in rembg_copies(weights.filename))
