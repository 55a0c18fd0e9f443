"""``ModelInferRequest`` -> :class:`InferRequest` and :class:`InferReply` -> ``ModelInferResponse``.
Pure functions, the gRPC twin of :mod:`service.api.protocol.v2_codec`.

Tensors come either as typed contents (``contents.fp32_contents`` …) or as
``raw_input_contents`` (little-endian bytes, one entry per input, in input order; then for
every input). The reply answers in kind: raw requests get ``raw_output_contents``
(tritonclient's form), typed requests get typed contents (what KServe's and hand-written
clients usually read).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.api.grpc.protos import service_pb2 as pb
from service.api.protocol.v2_codec import DTYPES, InferReply, InferRequest, check_shape
from service.errors import InvalidInput

CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents", "INT64": "int64_contents"}
RAW = {name: np.dtype(dtype).newbyteorder("<") for name, dtype in DTYPES.items()}  # raw contents' byte layout


def _param(p: pb.InferParameter) -> Any:
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def params(m: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as plain Python values."""
    return {k: _param(v) for k, v in m.items()}


def decode(msg: pb.ModelInferRequest) -> InferRequest:
    raw = len(msg.raw_input_contents) > 0
    if raw and len(msg.raw_input_contents) != len(msg.inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(msg.raw_input_contents)} entries for {len(msg.inputs)} inputs: "
            "give one per input, in input order (or typed contents for every input)"
        )
    inputs: dict[str, np.ndarray] = {}
    for i, t in enumerate(msg.inputs):
        name = t.name
        if name in inputs:
            raise InvalidInput(f"input {name!r} is given twice")
        dtype = DTYPES.get(t.datatype)
        if dtype is None:
            raise InvalidInput(f"input {name!r}: datatype {t.datatype!r} is not supported here")
        shape = check_shape(list(t.shape), name)
        count = math.prod(shape)
        if raw:
            if t.HasField("contents"):
                raise InvalidInput(f"input {name!r} has both typed contents and raw_input_contents")
            buf = msg.raw_input_contents[i]
            raw_dtype = RAW[t.datatype]
            want = count * raw_dtype.itemsize
            if len(buf) != want:
                raise InvalidInput(
                    f"input {name!r}: {len(buf)} bytes of raw_input_contents do not match shape {shape} of "
                    f"{t.datatype} ({want} bytes)"
                )
            arr = np.frombuffer(buf, dtype=raw_dtype)
        else:
            values = getattr(t.contents, CONTENTS[t.datatype])
            arr = np.array(values, dtype=dtype)
            if arr.size != count:
                raise InvalidInput(f"input {name!r}: {arr.size} values do not fill shape {shape} ({count} values)")
        inputs[name] = arr.reshape(shape)
    return InferRequest(
        id=msg.id or None,
        inputs=inputs,
        parameters=params(msg.parameters),
        outputs=[(o.name, raw) for o in msg.outputs] or None,
        binary_output=raw,
    )


def _set_param(p: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def encode(
    reply: InferReply, request: InferRequest, into: pb.ModelInferResponse | None = None
) -> pb.ModelInferResponse:
    """The reply, with the requested outputs (all when none were named), raw when the request was raw;
    written into ``into`` when given (a stream's response holds its reply: filled in place, not copied)."""
    resp = pb.ModelInferResponse() if into is None else into
    resp.model_name = reply.model_name
    resp.model_version = reply.model_version
    if reply.id:
        resp.id = reply.id
    names = [n for n, _ in request.outputs] if request.outputs is not None else list(reply.outputs)
    for name in names:
        arr = np.ascontiguousarray(reply.outputs[name], dtype=np.float32)
        out = resp.outputs.add(name=name, datatype="FP32", shape=arr.shape)
        if request.binary_output:
            resp.raw_output_contents.append(arr.astype("<f4", copy=False).tobytes())
        else:
            out.contents.fp32_contents.extend(arr.reshape(-1).tolist())
    for k, v in reply.parameters.items():
        _set_param(resp.parameters[k], v)
    return resp
