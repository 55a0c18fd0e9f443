"""Open Inference Protocol v2 (KServe / Triton REST), with the sequence and binary tensor
extensions. Health routes live in :mod:`service.api.http.health`.

The transport-neutral part of inference (checks, sequences, the call into the data plane)
is :func:`service.api.protocol.inference.run_infer`, shared with the gRPC service; the metadata,
config and statistics documents below are shared with it too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.api.http.hot import HotReply, HotRequest, errors, hot
from service.api.http.responses import FastJSON
from service.api.http.wire import CARD_NOTE
from service.api.protocol.documents import SERVER, config, metadata, resolve, statistics
from service.api.protocol.inference import run_infer
from service.api.protocol.v2_codec import MAX_DIMS, decode, encode

V2_ERRORS = errors(400, 401, 404, 413, 503, 504)
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "maxItems": MAX_DIMS},
        "datatype": {"type": "string", "enum": ["FP32"]},
        "data": {
            "type": "array",
            "description": "row-major numbers, flat or nested (rectangular, as the shape says)",
            "items": {
                "oneOf": [
                    {"type": "number"},
                    {
                        "type": "array",
                        "items": {"oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
                    },
                ]
            },
        },
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
    },
}
INFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "sequence_id": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]},
                "sequence_start": {"type": "boolean"},
                "sequence_end": {"type": "boolean"},
                "binary_data_output": {"type": "boolean"},
            },
        },
        "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
            },
        },
    },
    "example": {
        "inputs": [{"name": "x", "shape": [1, 2, 3], "datatype": "FP32", "data": [30500, 8.0, 2, 31200, 8.5, 2]}]
    },
}


async def infer(req: HotRequest, model: str, version: str | None) -> HotReply:
    """Content-Type is not looked at, as in Triton: the Inference-Header-Content-Length header
    says whether binary tensors follow the JSON header."""
    request = decode(req.body, req.header(b"inference-header-content-length"))
    reply = await run_infer(req.dp, model, version, request, req.owner)
    body, header_len = encode(reply, request)
    if header_len is None:
        return HotReply(body)
    return HotReply(
        body,
        headers=(
            (b"content-type", b"application/octet-stream"),
            (b"inference-header-content-length", b"%d" % header_len),
        ),
    )


def build_router() -> APIRouter:
    r = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

    @r.get("", summary="Server metadata")
    async def server_metadata() -> FastJSON:
        return FastJSON(SERVER)

    # before /models/{model}: "stats" is not a model name here
    @r.get("/models/stats", summary="Statistics of every model version (statistics extension)", responses=errors(401))
    async def all_stats(request: Request) -> FastJSON:
        return FastJSON(statistics(request.app.state.dataplane, None, None))

    @r.get("/models/{model}", summary="Model metadata (latest version)", responses=errors(401, 404))
    async def model_metadata_route(request: Request, model: str) -> FastJSON:
        return FastJSON(metadata(request.app.state.dataplane, model, None))

    @r.get("/models/{model}/versions/{version}", summary="Model version metadata", responses=errors(401, 404))
    async def version_metadata(request: Request, model: str, version: str) -> FastJSON:
        return FastJSON(metadata(request.app.state.dataplane, model, version))

    @r.get(
        "/models/{model}/config",
        summary="Triton model configuration (model configuration extension)",
        responses=errors(401, 404),
    )
    async def model_config_route(request: Request, model: str) -> FastJSON:
        return FastJSON(config(request.app.state.dataplane, model, None))

    @r.get(
        "/models/{model}/versions/{version}/config",
        summary="Triton model configuration of a version",
        responses=errors(401, 404),
    )
    async def version_config(request: Request, model: str, version: str) -> FastJSON:
        return FastJSON(config(request.app.state.dataplane, model, version))

    @r.get("/models/{model}/stats", summary="Statistics of every version of a model", responses=errors(401, 404))
    async def model_stats(request: Request, model: str) -> FastJSON:
        return FastJSON(statistics(request.app.state.dataplane, model, None))

    @r.get(
        "/models/{model}/versions/{version}/stats", summary="Statistics of a model version", responses=errors(401, 404)
    )
    async def version_stats(request: Request, model: str, version: str) -> FastJSON:
        return FastJSON(statistics(request.app.state.dataplane, model, version))

    async def _ready(request: Request, model: str, version: str | None) -> FastJSON:
        dp = request.app.state.dataplane
        resolve(dp, model, version)  # 404 when unknown
        ok, reason = await dp.ready()
        return FastJSON({"name": model, "ready": ok, "reason": reason}, status_code=200 if ok else 503)

    @r.get("/models/{model}/ready", summary="Model readiness", responses=errors(401, 404, 503))
    async def model_ready(request: Request, model: str) -> FastJSON:
        return await _ready(request, model, None)

    @r.get(
        "/models/{model}/versions/{version}/ready", summary="Model version readiness", responses=errors(401, 404, 503)
    )
    async def version_ready(request: Request, model: str, version: str) -> FastJSON:
        return await _ready(request, model, version)

    infer_doc: dict[str, Any] = {
        "body": INFER_SCHEMA,
        "responses": {200: {"description": "Outputs (JSON, or a JSON header and binary tensors)"}, **V2_ERRORS},
    }

    @hot(
        r,
        "/models/{model}/infer",
        summary="Inference (JSON or binary tensors; sequences)",
        description="Open Inference Protocol v2 inference on the latest version; sequences via the parameters "
        "sequence_id, sequence_start, sequence_end. " + CARD_NOTE,
        **infer_doc,
    )
    async def infer_latest(req: HotRequest) -> HotReply:
        return await infer(req, req.path_params["model"], None)

    @hot(
        r,
        "/models/{model}/versions/{version}/infer",
        summary="Inference on a version",
        description="Open Inference Protocol v2 inference on a given version. " + CARD_NOTE,
        **infer_doc,
    )
    async def infer_version(req: HotRequest) -> HotReply:
        return await infer(req, req.path_params["model"], req.path_params["version"])

    return r
