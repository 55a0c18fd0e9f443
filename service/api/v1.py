"""Native REST API: stateless predict and the sessions resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from service.api.responses import FastJSON
from service.api.wire import (
    CreateSessionRequest,
    ErrorBody,
    PredictRequest,
    PredictResponse,
    SessionInfo,
    Snapshot,
    StepRequest,
    StepResponse,
)
from service.core.dataplane import DataPlane
from service.sessions.record import SessionRecord

ERRORS: dict[int | str, dict] = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 422, 429, 503, 504)}


# async on purpose: FastAPI runs plain-def dependencies in a thread pool, a costly hop
async def dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


async def owner(request: Request) -> str | None:
    """The API key that identifies the caller (set by the auth middleware when auth is on)."""
    return getattr(request.state, "owner", None)


DP = Annotated[DataPlane, Depends(dataplane)]
Owner = Annotated[str | None, Depends(owner)]


def session_info(dp: DataPlane, rec: SessionRecord) -> dict:
    return {
        "session_id": rec.id,
        "model": rec.model,
        "version": rec.version,
        "step": rec.step,
        "created_at": rec.created,
        "last_used_at": rec.last_used,
        "expires_at": rec.last_used + dp.store.ttl_s,
    }


def build_router() -> APIRouter:
    r = APIRouter(prefix="/v1", responses=ERRORS)

    @r.get("/models", tags=["models"], summary="List served models")
    async def list_models(dp: DP) -> FastJSON:
        return FastJSON(
            {"models": [{"name": n, "versions": sorted(v, key=int)} for n, v in sorted(dp.workers.items())]}
        )

    @r.get("/models/{model}", tags=["models"], summary="A model's card (latest version unless ?version=)")
    async def model_card(dp: DP, model: str, version: Annotated[str | None, Query()] = None) -> FastJSON:
        w = dp.worker(model, version)
        return FastJSON({**w.card.raw, "provider": w.model.provider, "versions": sorted(dp.workers[model], key=int)})

    async def _predict(dp: DataPlane, model: str, version: str | None, body: PredictRequest) -> FastJSON:
        w, res = await dp.predict(model, version, body.inputs, body.h0, body.c0)
        return FastJSON(
            {
                "model": w.card.name,
                "version": w.card.version,
                "outputs": res.y,
                "hn": res.state[0],
                "cn": res.state[1],
            }
        )

    @r.post("/models/{model}/predict", tags=["predict"], response_model=PredictResponse, summary="Stateless predict")
    async def predict(
        dp: DP, model: str, body: PredictRequest, version: Annotated[str | None, Query()] = None
    ) -> FastJSON:
        """Run whole sequences from a given (or zero) state; returns every output and the final state."""
        return await _predict(dp, model, version, body)

    @r.post(
        "/models/{model}/versions/{version}/predict",
        tags=["predict"],
        response_model=PredictResponse,
        summary="Stateless predict on a version",
    )
    async def predict_version(dp: DP, model: str, version: str, body: PredictRequest) -> FastJSON:
        return await _predict(dp, model, version, body)

    @r.post("/sessions", tags=["sessions"], status_code=201, response_model=SessionInfo, summary="Create a session")
    async def create_session(dp: DP, who: Owner, body: CreateSessionRequest) -> FastJSON:
        """Open a stream: the server keeps its (h, C) between steps. 429 when at capacity."""
        rec = await dp.create_session(body.model, body.version, body.h0, body.c0, owner=who)
        return FastJSON(session_info(dp, rec), status_code=201)

    @r.post(
        "/sessions/import", tags=["sessions"], status_code=201, response_model=SessionInfo, summary="Import a snapshot"
    )
    async def import_session(dp: DP, who: Owner, body: Snapshot) -> FastJSON:
        """Create a new session from a snapshot; 409 if the served model's checksum differs."""
        rec = await dp.import_session(body.model_dump(), owner=who)
        return FastJSON(session_info(dp, rec), status_code=201)

    @r.get("/sessions/{session_id}", tags=["sessions"], response_model=SessionInfo, summary="Get a session")
    async def get_session(dp: DP, who: Owner, session_id: str) -> FastJSON:
        return FastJSON(session_info(dp, await dp.get_session(session_id, who)))

    @r.post("/sessions/{session_id}/step", tags=["sessions"], response_model=StepResponse, summary="Step a session")
    async def step(dp: DP, who: Owner, session_id: str, body: StepRequest) -> FastJSON:
        """Consume T time steps; returns T outputs and the new step. Ordered per session; a failed
        step leaves the session unchanged."""
        res = await dp.step(session_id, body.inputs, body.expected_step, who)
        return FastJSON(
            {"session_id": res.session_id, "step": res.step, "outputs": res.outputs, "replayed": res.replayed}
        )

    @r.get("/sessions/{session_id}/snapshot", tags=["sessions"], response_model=Snapshot, summary="Export a snapshot")
    async def export_session(dp: DP, who: Owner, session_id: str) -> FastJSON:
        return FastJSON(await dp.export_session(session_id, who))

    @r.delete("/sessions/{session_id}", tags=["sessions"], status_code=204, summary="Delete a session")
    async def delete_session(dp: DP, who: Owner, session_id: str) -> Response:
        await dp.delete_session(session_id, who)
        return Response(status_code=204)

    return r
