"""Native REST API: stateless predict and the sessions resource."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from service.api.auth import caller
from service.api.http.hot import HotReply, HotRequest, errors, hot
from service.api.http.responses import FastJSON
from service.api.http.wire import (
    CARD_NOTE,
    CreateSessionRequest,
    PredictRequest,
    PredictResponse,
    SessionInfo,
    Snapshot,
    StepRequest,
    StepResponse,
)
from service.api.protocol.decode import json_object, kind, only_fields, optional_step, to_array
from service.api.protocol.json import json_bytes
from service.core.dataplane import DataPlane
from service.core.work import StepResult
from service.errors import InvalidInput
from service.sessions.record import SessionRecord


# async on purpose: FastAPI runs plain-def dependencies in a thread pool, a costly hop
async def dataplane(request: Request) -> DataPlane:
    return request.app.state.dataplane


async def owner(request: Request) -> str | None:
    """The API key that identifies the caller (set by the auth middleware when auth is on)."""
    return caller(request.scope)


DP = Annotated[DataPlane, Depends(dataplane)]
Owner = Annotated[str | None, Depends(owner)]


PREDICT_FIELDS = frozenset({"inputs", "h0", "c0"})
CREATE_FIELDS = frozenset(CreateSessionRequest.model_fields)
SNAPSHOT_FIELDS = frozenset(Snapshot.model_fields)
STEP_FIELDS = frozenset({"inputs", "expected_step"})


def step_reply(res: StepResult) -> dict[str, Any]:
    return {"session_id": res.session_id, "step": res.step, "outputs": res.outputs, "replayed": res.replayed}


def optional_state(value: Any, field: str, ndim: int) -> np.ndarray | None:
    return None if value is None else to_array(value, field, ndim)


def text(body: dict[str, Any], name: str, wanted: str) -> str:
    """Field ``name`` of ``body``, a string; else 400: ``wanted``, and what came."""
    value = body.get(name)
    if not isinstance(value, str):
        raise InvalidInput(f"{wanted}; got {'none' if name not in body else kind(value)}")
    return value


def optional_text(body: dict[str, Any], name: str, wanted: str) -> str | None:
    """As :func:`text`, None when the field is absent or null."""
    return None if body.get(name) is None else text(body, name, wanted)


def session_info(dp: DataPlane, rec: SessionRecord) -> dict:
    return {
        "session_id": rec.id,
        "model": rec.model,
        "version": rec.version,
        "step": rec.step,
        "created_at": rec.created,
        "last_used_at": rec.last_used,
        "expires_at": rec.last_used + dp.sessions.ttl_s,
    }


def build_router() -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.get("/models", tags=["models"], summary="List served models", responses=errors(401))
    async def list_models(dp: DP) -> FastJSON:
        return FastJSON({"models": [{"name": n, "versions": v} for n, v in dp.models().items()]})

    @r.get(
        "/models/{model}",
        tags=["models"],
        summary="A model's card (latest version unless ?version=)",
        responses=errors(401, 404),
    )
    async def model_card(dp: DP, model: str, version: Annotated[str | None, Query()] = None) -> FastJSON:
        w = dp.worker(model, version)
        c = w.card
        return FastJSON(
            {
                **c.raw,
                # what the service serves, whatever the file says or leaves out
                "name": c.name,
                "version": c.version,
                "cell": c.cell,
                "features": c.raw["features"]
                if len(c.raw.get("features") or ()) == c.n_features
                else [{"name": n} for n in c.feature_names],
                "provider": w.model.provider,
                "versions": dp.models()[model],
                "heldout": (c.path / "heldout.json").is_file(),  # the console's demo streams it
                "forecast_plot": (c.path / "forecast.png").is_file(),
            }
        )

    predict_doc = {
        "body": PredictRequest,
        "response_model": PredictResponse,
        "responses": errors(400, 401, 404, 413, 415, 503, 504),
        "tags": ["predict"],
        "description": "Run whole sequences from a given (or zero) state; returns every output and the final state. "
        + CARD_NOTE,
    }

    async def _predict(req: HotRequest, version: str | None) -> HotReply:
        body = json_object(req.body, req.header(b"content-type"))
        only_fields(body, PREDICT_FIELDS)
        if "inputs" not in body:
            raise InvalidInput("inputs is required: [batch, seq, n_features] numbers")
        w, res = await req.dp.predict(
            req.path_params["model"],
            version,
            to_array(body["inputs"], "inputs", 3),
            optional_state(body.get("h0"), "h0", 3),
            optional_state(body.get("c0"), "c0", 3),
        )
        return HotReply(
            json_bytes(
                {
                    "model": w.card.name,
                    "version": w.card.version,
                    "outputs": res.y,
                    **dict(zip(w.card.state_outputs, res.state, strict=True)),
                }
            )
        )

    @hot(
        r,
        "/models/{model}/predict",
        summary="Stateless predict",
        query={"version": "model version; the latest when absent"},
        **predict_doc,  # type: ignore[arg-type]
    )
    async def predict(req: HotRequest) -> HotReply:
        """Run whole sequences from a given (or zero) state (the latest version unless ``?version=``)."""
        return await _predict(req, req.query_param("version"))

    @hot(r, "/models/{model}/versions/{version}/predict", summary="Stateless predict on a version", **predict_doc)  # type: ignore[arg-type]
    async def predict_version(req: HotRequest) -> HotReply:
        return await _predict(req, req.path_params["version"])

    @hot(
        r,
        "/sessions",
        body=CreateSessionRequest,
        status_code=201,
        response_model=SessionInfo,
        summary="Create a session",
        responses=errors(400, 401, 404, 413, 415, 429, 503),
        tags=["sessions"],
        description="Open a stream: the server keeps its state between steps. 429 when at capacity. " + CARD_NOTE,
    )
    async def create_session(req: HotRequest) -> HotReply:
        body = json_object(req.body, req.header(b"content-type"))
        only_fields(body, CREATE_FIELDS)
        rec = await req.dp.sessions.create(
            text(body, "model", "model is required: a served model's name, a string"),
            optional_text(body, "version", "version must be a string"),
            optional_state(body.get("h0"), "h0", 2),
            optional_state(body.get("c0"), "c0", 2),
            owner=req.owner,
        )
        return HotReply(json_bytes(session_info(req.dp, rec)), 201)

    @hot(
        r,
        "/sessions/import",
        body=Snapshot,
        status_code=201,
        response_model=SessionInfo,
        summary="Import a snapshot",
        responses=errors(400, 401, 404, 409, 413, 415, 429, 503),
        tags=["sessions"],
        description="Create a new session from a snapshot; 409 if the served model's checksum differs. " + CARD_NOTE,
    )
    async def import_session(req: HotRequest) -> HotReply:
        body = json_object(req.body, req.header(b"content-type"))
        only_fields(body, SNAPSHOT_FIELDS)
        for name in ("model", "version", "sha256"):
            text(body, name, f"snapshot {name} must be a string")
        snap = {**body, "h": optional_state(body.get("h"), "h", 2), "c": optional_state(body.get("c"), "c", 2)}
        rec = await req.dp.sessions.import_snapshot(snap, owner=req.owner)
        return HotReply(json_bytes(session_info(req.dp, rec)), 201)

    @r.get(
        "/sessions/{session_id}",
        tags=["sessions"],
        response_model=SessionInfo,
        summary="Get a session",
        responses=errors(401, 404, 503),
    )
    async def get_session(dp: DP, who: Owner, session_id: str) -> FastJSON:
        return FastJSON(session_info(dp, await dp.sessions.get(session_id, who)))

    @hot(
        r,
        "/sessions/{session_id}/step",
        body=StepRequest,
        summary="Step a session",
        response_model=StepResponse,
        responses=errors(400, 401, 404, 409, 413, 415, 503, 504),
        tags=["sessions"],
        description="Consume T time steps; returns T outputs and the new step. Ordered per session; a failed step "
        "leaves the session unchanged. " + CARD_NOTE,
    )
    async def step(req: HotRequest) -> HotReply:
        body = json_object(req.body, req.header(b"content-type"))
        only_fields(body, STEP_FIELDS)
        if "inputs" not in body:
            raise InvalidInput("inputs is required: a list of time steps, each a list of n_features numbers")
        res = await req.dp.sessions.step(
            req.path_params["session_id"],
            to_array(body["inputs"], "inputs", 2),
            optional_step(body.get("expected_step")),
            req.owner,
        )
        return HotReply(json_bytes(step_reply(res)))

    @r.get(
        "/sessions/{session_id}/snapshot",
        tags=["sessions"],
        response_model=Snapshot,
        summary="Export a snapshot",
        responses=errors(401, 404, 503),
    )
    async def export_session(dp: DP, who: Owner, session_id: str) -> FastJSON:
        return FastJSON(await dp.sessions.export(session_id, who))

    @r.delete(
        "/sessions/{session_id}",
        tags=["sessions"],
        status_code=204,
        summary="Delete a session",
        responses=errors(401, 404, 503),
    )
    async def delete_session(dp: DP, who: Owner, session_id: str) -> Response:
        await dp.sessions.delete(session_id, who)
        return Response(status_code=204)

    return r
