"""Triton's model repository extension over REST: ``POST /v2/repository/index``,
``/v2/repository/models/{m}/load`` and ``/unload``. Thin: the registry does the work (the
data plane's ``repository_index``, ``load_model``, ``unload_model``), so gRPC can share it.

Request bodies are optional (tritonclient sends an empty index request). Parameters:

* load: ``version`` (string) loads only that version; otherwise every version of the model
  in the repository that is not served yet. Triton's ``config`` (a model configuration to
  load with) is refused: a version's settings come from its ``model.json``.
* unload: ``version`` unloads only that version; otherwise every version of the model.
  ``unload_dependents`` (boolean): a model version's dependents here are its sessions;
  ``true`` unloads it even while sessions live on it, ending them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.api.http.hot import errors
from service.api.http.responses import FastJSON
from service.api.protocol.decode import json_object, only_fields
from service.api.protocol.repository import flag_param, only_parameters, version_param
from service.core.dataplane import DataPlane
from service.errors import InvalidInput


def _body(raw: bytes, fields: frozenset[str]) -> dict[str, Any]:
    body = json_object(raw) if raw.strip() else {}
    only_fields(body, fields)
    return body


def _parameters(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    params = _body(raw, frozenset({"parameters"})).get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidInput("parameters must be a JSON object")
    return only_parameters(params, allowed)


def build_router() -> APIRouter:
    r = APIRouter(prefix="/v2/repository", tags=["model repository"])

    @r.post("/index", summary="Model versions in the repository and their state", responses=errors(400, 401))
    async def index(request: Request) -> FastJSON:
        """Every model version in the repository or served: ``name``, ``version``, ``state``
        (``READY``, ``UNLOADING``, ``UNAVAILABLE``) and ``reason``. ``{"ready": true}`` lists
        only the ready ones."""
        body = _body(await request.body(), frozenset({"ready"}))
        ready = flag_param(body, "ready")
        dp: DataPlane = request.app.state.dataplane
        return FastJSON(dp.repository_index(ready))

    @r.post(
        "/models/{model}/load",
        summary="Load a model's new versions (explicit mode)",
        responses=errors(400, 401, 404, 409),
    )
    async def load(request: Request, model: str) -> FastJSON:
        """Check, warm up and serve the versions of the model in the repository that are not
        served yet (or ``parameters.version`` only). A version that fails its checks is refused
        with 400 saying why, and the served versions keep serving; 404 for a model (or version)
        the repository does not hold; 409 unless the server runs in explicit model control mode."""
        params = _parameters(await request.body(), frozenset({"version"}))
        dp: DataPlane = request.app.state.dataplane
        loaded = await dp.load_model(model, version_param(params))
        return FastJSON({"name": model, "loaded": loaded, "versions": dp.models().get(model, [])})

    @r.post(
        "/models/{model}/unload",
        summary="Unload a model's versions (explicit mode)",
        responses=errors(400, 401, 404, 409),
    )
    async def unload(request: Request, model: str) -> FastJSON:
        """Stop new work on the model's versions (or ``parameters.version`` only), finish the
        work in flight, and unload them. 409 while sessions live on one, unless
        ``parameters.unload_dependents`` is true: then those sessions end; 409 too unless the
        server runs in explicit model control mode."""
        params = _parameters(await request.body(), frozenset({"version", "unload_dependents"}))
        dp: DataPlane = request.app.state.dataplane
        ended = await dp.unload_model(model, version_param(params), force=flag_param(params, "unload_dependents"))
        return FastJSON(
            {
                "name": model,
                "unloaded": list(ended),
                "sessions_ended": sum(ended.values()),
                "versions": dp.models().get(model, []),
            }
        )

    return r
