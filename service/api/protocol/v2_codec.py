"""Open Inference Protocol v2 bodies: JSON and the binary tensor extension. Pure functions.

A request body is a JSON header, optionally followed by raw little-endian tensors; the
``Inference-Header-Content-Length`` HTTP header then gives the JSON part's size, and each
binary input carries ``parameters.binary_data_size``, in input order. A reply carries
outputs as JSON ``data`` or, when asked (``binary_data_output`` on the request or
``binary_data`` on a requested output), as raw bytes after the JSON header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.api.protocol.decode import flat_numbers, plain_f32, rectangular
from service.api.protocol.json import json_bytes
from service.errors import InvalidInput

DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    parameters: dict[str, Any]
    outputs: list[tuple[str, bool]] | None  # requested (name, binary) or None for all
    binary_output: bool


@dataclass
class InferReply:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


MAX_DIMS = 8  # a tensor's most dimensions (the served models take 3)
MAX_DIM = 2**31 - 1  # a dimension's largest size, and the most elements of one tensor


def check_shape(value: Any, name: str) -> list[int]:
    """A tensor's declared shape, checked before anything is allocated for it: a list of at most
    MAX_DIMS non-negative integers holding at most MAX_DIM elements. Both wire formats use it."""
    ok, elements = type(value) is list, 1
    if ok:
        for d in value:
            if type(d) is not int or d < 0:
                ok = False
                break
            if d:
                elements = min(elements * d, MAX_DIM + 1)  # a long shape never makes a huge integer
    if not ok:
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative integers, got {short(value)}")
    if len(value) > MAX_DIMS:
        raise InvalidInput(f"input {name!r}: shape has {len(value)} dimensions; at most {MAX_DIMS} are accepted")
    if elements > MAX_DIM:
        raise InvalidInput(f"input {name!r}: shape {value} holds more than {MAX_DIM} elements")
    return value


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value: Any, what: str) -> dict[str, Any]:
    """An optional ``parameters`` object: absent or null is empty; anything else is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be an object, got {short(value)}")
    return value


def decode(body: bytes, header_length: str | None) -> InferRequest:
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length!r} does not fit a body of {len(body)} bytes"
            )
        json_part, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        req = orjson.loads(json_part)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"the request body is not valid JSON ({e})") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise InvalidInput("an inference request is a JSON object with an 'inputs' list")
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for spec in req["inputs"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidInput("each input needs a 'name', 'shape', 'datatype' and 'data' (or binary_data_size)")
        name = spec["name"]
        if name in inputs:
            raise InvalidInput(f"input {name!r} is given twice")
        datatype = spec.get("datatype", "")
        dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise InvalidInput(f"input {name!r}: datatype {spec.get('datatype')!r} is not supported here")
        shape = check_shape(spec.get("shape"), name)
        count = math.prod(shape)
        size, plain = None, None
        if (tensor_params := spec.get("parameters")) is not None:  # (its message formatted only when needed)
            size = _object(tensor_params, f"input {name!r}: parameters").get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or offset + size > len(binary):
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size!r} runs past the {len(binary)} binary bytes of the body"
                )
            if size != count * np.dtype(dtype).itemsize:
                raise InvalidInput(
                    f"input {name!r}: binary_data_size {size} does not match shape {shape} of {spec['datatype']} "
                    f"({count * np.dtype(dtype).itemsize} bytes)"
                )
            arr = np.frombuffer(binary[offset : offset + size], dtype=np.dtype(dtype).newbyteorder("<"))
            offset += size
        else:
            if "data" not in spec:
                raise InvalidInput(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
            plain = plain_f32(spec["data"]) if dtype is np.float32 else None  # rectangular when not None
            arr = plain if plain is not None else flat_numbers(spec["data"], f"input {name!r}: data", dtype)
        if arr.size != count:
            raise InvalidInput(f"input {name!r}: {arr.size} values do not fill shape {shape} ({count} values)")
        if size is None and plain is None and not rectangular(spec["data"]):
            raise InvalidInput(f"input {name!r}: data nested in lists must be rectangular (a ragged list was sent)")
        inputs[name] = arr.reshape(shape)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes after the tensors are not claimed by any input")
    params = _object(req.get("parameters"), "request 'parameters'")
    outputs = None
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list):
            raise InvalidInput("'outputs' must be a list")
        outputs = []
        for o in req["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise InvalidInput("each requested output needs a 'name'")
            binary = _object(o.get("parameters"), f"output {o['name']!r}: parameters").get("binary_data", False)
            if not isinstance(binary, bool):
                raise InvalidInput(
                    f"output {o['name']!r}: parameter binary_data must be a boolean, got {short(binary)}"
                )
            outputs.append((o["name"], binary))
    rid = req.get("id")
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInput(f"parameter binary_data_output must be a boolean, got {short(binary_output)}")
    return InferRequest(
        id=str(rid) if rid is not None else None,
        inputs=inputs,
        parameters=params,
        outputs=outputs,
        binary_output=binary_output,
    )


def encode(reply: InferReply, request: InferRequest) -> tuple[bytes, int | None]:
    """The reply body, and the JSON header length when binary tensors follow it."""
    wanted = request.outputs if request.outputs is not None else [(n, request.binary_output) for n in reply.outputs]
    outs, blobs = [], []
    for name, binary in wanted:
        arr = np.ascontiguousarray(reply.outputs[name], dtype=np.float32)
        o: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary or request.binary_output:
            data = arr.astype("<f4", copy=False).tobytes()
            o["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            o["data"] = arr.reshape(-1)
        outs.append(o)
    head: dict[str, Any] = {"model_name": reply.model_name, "model_version": reply.model_version, "outputs": outs}
    if reply.id is not None:
        head["id"] = reply.id
    if reply.parameters:
        head["parameters"] = reply.parameters
    header = json_bytes(head)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
