"""Open Inference Protocol inference, transport-neutral: a decoded request in, a reply out.

The REST route (:mod:`service.api.http.v2`) and the gRPC servicer (:mod:`service.api.grpc`) both
decode their wire format into an :class:`~service.api.protocol.v2_codec.InferRequest`, call
:func:`run_infer`, and encode the :class:`~service.api.protocol.v2_codec.InferReply` it returns, so
checks, sequence handling and messages are the same on every transport.

Sequences (Triton's sequence extension): request parameters ``sequence_id`` (uint64 or
string; 0 or "" means none), ``sequence_start``, ``sequence_end``. A sequence is a session
underneath: same store, ordering, expiry, batching and metrics.
"""

from __future__ import annotations

from typing import Any

from service.api.protocol.decode import optional_step
from service.api.protocol.model_config import split_view, view_name
from service.api.protocol.v2_codec import InferReply, InferRequest, short
from service.core.dataplane import DataPlane
from service.errors import InvalidInput
from service.runtime.repository import ModelCard


def sequence_id(params: dict[str, Any], max_chars: int) -> int | str | None:
    """The request's sequence id, or None for a stateless request; InvalidInput if malformed
    (a string id longer than ``max_chars`` included)."""
    sid = params.get("sequence_id", 0)
    kind = type(sid)  # exactly int or str: a bool is neither
    if (kind is not int and kind is not str) or (kind is int and not 0 <= sid < 2**64):
        raise InvalidInput(f"parameter sequence_id must be a uint64 or a string, got {short(sid)}")
    if kind is str and len(sid) > max_chars:
        raise InvalidInput(
            f"parameter sequence_id is a string of {len(sid)} characters; at most {max_chars} are accepted "
            "(LSTM_MAX_SEQUENCE_ID_CHARS)"
        )
    start, end = params.get("sequence_start", False), params.get("sequence_end", False)
    for flag, value in (("sequence_start", start), ("sequence_end", end)):
        if type(value) is not bool:
            raise InvalidInput(f"parameter {flag} must be a boolean")
    if not sid:  # 0 or ""
        if start or end:
            raise InvalidInput("sequence_start/sequence_end need a non-zero sequence_id")
        return None
    return sid


def check(req: InferRequest, card: ModelCard) -> None:
    """Inputs and requested outputs name tensors the model has, with the right datatype."""
    states = card.state_inputs
    if not card.input_names.issuperset(req.inputs):
        unknown = sorted(set(req.inputs) - card.input_names)
        raise InvalidInput(f"unknown input(s) {unknown}; the model takes x (and optionally {', '.join(states)})")
    if "x" not in req.inputs:
        raise InvalidInput("input 'x' ([batch, seq, features], FP32) is required")
    for name, arr in req.inputs.items():
        if arr.dtype.kind != "f" or arr.dtype.itemsize != 4:
            raise InvalidInput(f"input {name!r} must have datatype FP32")
    for name, _ in req.outputs or []:
        if name != "y" and name not in card.state_outputs:
            raise InvalidInput(f"unknown output {name!r}; outputs are {['y', *card.state_outputs]}")


async def run_infer(dp: DataPlane, model: str, version: str | None, req: InferRequest, owner: str | None) -> InferReply:
    """Run one inference request: stateless (optional ``h0``/``c0`` from the client) or one
    request of a sequence (the state stays on the server). Raises domain errors."""
    seq = sequence_id(req.parameters, dp.settings.max_sequence_id_chars)
    name, stateless = split_view(model)
    check(req, dp.worker(name, version).card)
    x = req.inputs["x"]
    if seq is None and "expected_step" in req.parameters:
        raise InvalidInput("parameter expected_step applies to sequence requests only (give a sequence_id)")
    if seq is not None and stateless:
        raise InvalidInput(f"{model!r} is the stateless view of {name!r}: send sequences to {name!r}")
    if seq is not None:
        if x.ndim != 3 or x.shape[0] != 1:
            raise InvalidInput(
                f"a sequence request carries one sequence: x must be [1, seq, features], got {list(x.shape)}"
            )
        if len(req.inputs) > 1:
            raise InvalidInput("a sequence keeps its state on the server: h0/c0 cannot be sent with sequence_id")
        w, res = await dp.sessions.sequence_step(
            name,
            version,
            seq,
            x[0],
            start=bool(req.parameters.get("sequence_start")),
            end=bool(req.parameters.get("sequence_end")),
            owner=owner,
            expected_step=optional_step(req.parameters.get("expected_step"), "parameter expected_step"),
        )
        # the sequence's step after this request, for the next request's expected_step
        params: dict[str, Any] = {"step": res.step, "replayed": True} if res.replayed else {"step": res.step}
        # the state stays on the server (Triton's implicit state): y only unless asked for
        outputs = {"y": res.outputs[None]}
        if req.outputs and any(n != "y" for n, _ in req.outputs):  # a state output asked for
            outputs |= {n: part[:, None] for n, part in zip(w.card.state_outputs, res.state, strict=True)}
    else:
        w, pres = await dp.predict(name, version, x, req.inputs.get("h0"), req.inputs.get("c0"), field="input x")
        outputs = {"y": pres.y, **dict(zip(w.card.state_outputs, pres.state, strict=True))}
        params = {}
    return InferReply(view_name(w.card, stateless), w.card.version, outputs, id=req.id, parameters=params)
