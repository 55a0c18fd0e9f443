"""Open Inference Protocol v2 (KServe / Triton REST), with the sequence and binary tensor
extensions. Health routes live in :mod:`service.api.health`.

The transport-neutral part (checks, sequences, the call into the data plane) is
:func:`service.api.inference.run_infer`, shared with the gRPC service.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from service.api.inference import INPUTS, run_infer
from service.api.v2_codec import decode, encode
from service.core.dataplane import DataPlane
from service.core.model_worker import ModelWorker

SERVER = {"name": "lstm-serving", "version": "0.1.0", "extensions": ["binary_tensor_data", "sequence", "parameters"]}


def metadata(dp: DataPlane, w: ModelWorker) -> dict[str, Any]:
    card = w.card.raw
    return {
        "name": w.card.name,
        "versions": sorted(dp.workers[w.card.name], key=int),
        "platform": "onnxruntime_onnx",
        "inputs": [{k: i[k] for k in ("name", "datatype", "shape")} for i in card["inputs"] if i["name"] in INPUTS],
        "outputs": [{k: o[k] for k in ("name", "datatype", "shape")} for o in card["outputs"]],
    }


async def infer(request: Request, model: str, version: str | None) -> Response:
    req = decode(await request.body(), request.headers.get("inference-header-content-length"))
    reply = await run_infer(request.app.state.dataplane, model, version, req, getattr(request.state, "owner", None))
    body, header_len = encode(reply, req)
    if header_len is None:
        return Response(body, media_type="application/json")
    return Response(
        body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_len)}
    )


def build_router() -> APIRouter:
    r = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

    @r.get("", summary="Server metadata")
    async def server_metadata() -> JSONResponse:
        return JSONResponse(SERVER)

    @r.get("/models/{model}", summary="Model metadata (latest version)")
    async def model_metadata(request: Request, model: str) -> JSONResponse:
        dp = request.app.state.dataplane
        return JSONResponse(metadata(dp, dp.worker(model)))

    @r.get("/models/{model}/versions/{version}", summary="Model version metadata")
    async def version_metadata(request: Request, model: str, version: str) -> JSONResponse:
        dp = request.app.state.dataplane
        return JSONResponse(metadata(dp, dp.worker(model, version)))

    async def _ready(request: Request, model: str, version: str | None) -> JSONResponse:
        dp = request.app.state.dataplane
        dp.worker(model, version)  # 404 when unknown
        ok, reason = await dp.ready()
        return JSONResponse({"name": model, "ready": ok, "reason": reason}, status_code=200 if ok else 503)

    @r.get("/models/{model}/ready", summary="Model readiness")
    async def model_ready(request: Request, model: str) -> JSONResponse:
        return await _ready(request, model, None)

    @r.get("/models/{model}/versions/{version}/ready", summary="Model version readiness")
    async def version_ready(request: Request, model: str, version: str) -> JSONResponse:
        return await _ready(request, model, version)

    @r.post("/models/{model}/infer", summary="Inference (JSON or binary tensors; sequences)")
    async def infer_latest(request: Request, model: str) -> Response:
        return await infer(request, model, None)

    @r.post("/models/{model}/versions/{version}/infer", summary="Inference on a version")
    async def infer_version(request: Request, model: str, version: str) -> Response:
        return await infer(request, model, version)

    return r
