"""JSON wire decoding shared by every transport: bodies, strict number arrays, small fields.

What comes out is typed (float32 arrays, ints, strings); what cannot be read as the request
is refused here with a plain message that names the field and what was expected. Checks
against the model (shape, feature ranges, limits) happen once, in the data plane
(:mod:`service.core.inputs`).
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, UnsupportedMediaType

NUMBER = frozenset({int, float})
SHAPES = {1: "a list of numbers", 2: "a list of time steps, each a list of numbers", 3: "a list of sequences"}
DIMS = {1: "[values]", 2: "[time steps, features]", 3: "[sequences, time steps, features]"}


def shape_of(value: Any) -> list[int] | str:
    """The shape nested lists have along their first elements (``[2, 3]``), or what the value
    is when it is not a list; for messages."""
    if not isinstance(value, list):
        return kind(value)
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return dims


def _expected(field: str, ndim: int, value: Any) -> str:
    """``field must be [time steps, features]; got shape [3]``: for shape errors."""
    got = shape_of(value)
    return f"{field} must be {DIMS.get(ndim, f'{ndim} nested lists')}; got {f'shape {got}' if isinstance(got, list) else got}"


def is_json(content_type: str | None) -> bool:
    """FastAPI's rule: no content type, ``application/json`` or ``application/*+json``."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def json_object(body: bytes, content_type: str | None = None, what: str = "the request body") -> dict[str, Any]:
    """``body`` parsed as a JSON object, or a 415/400 saying why not."""
    if not is_json(content_type):
        raise UnsupportedMediaType(f"{what} must be JSON (content-type: application/json); got {content_type!r}")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidInput(f"{what} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise InvalidInput(f"{what} must be a JSON object; got {kind(obj)}")
    return obj


def only_fields(obj: dict[str, Any], allowed: frozenset[str], what: str = "the request body") -> None:
    if unknown := sorted(set(obj) - allowed):
        raise InvalidInput(f"{what} has unknown field(s) {unknown}; the fields are {sorted(allowed)}")


F32_MAX = float(np.finfo(np.float32).max)


def _plain(value: Any, ndim: int) -> tuple[list[Any], list[int]] | None:
    """The values and shape of ``value`` when it is what a request almost always holds -- a
    non-empty rectangular nest of ``ndim`` lists of ints and floats within float32's range --
    else None, and the careful path below finds what is wrong. Plain Python: for the few
    values of a streamed reading it costs a fraction of numpy's per-call overhead."""
    level = [value]
    shape = []
    for _ in range(ndim):
        n = -1
        inner: list[Any] = []
        for v in level:
            if type(v) is not list or (n != len(v) and n != -1) or not v:
                return None
            n = len(v)
            inner += v
        shape.append(n)
        level = inner
    for v in level:
        t = type(v)
        if (t is not float and t is not int) or not -F32_MAX <= v <= F32_MAX:
            return None
    return level, shape


def to_array(value: Any, field: str, ndim: int) -> np.ndarray:
    """Nested JSON lists of numbers -> a float32 array with ``ndim`` dimensions.

    Strings, booleans and nulls are refused (never converted), as are ragged lists; the
    message names the element. Values too large for float32 become inf and are refused by
    the data plane's finiteness check with the other non-finite values.
    """
    plain = _plain(value, ndim)
    if plain is not None:
        return np.array(plain[0], np.float32).reshape(plain[1])
    level: list[Any] = [value]
    for depth in range(ndim):
        where = field + "".join("[i]" for _ in range(depth))
        kinds = set(map(type, level))
        if kinds - {list}:
            bad = next(v for v in level if type(v) is not list)
            raise InvalidInput(
                f"{where} must be {SHAPES.get(ndim - depth, 'a list')}; got {kind(bad)} "
                f"({_expected(field, ndim, value)})"
            )
        lengths = set(map(len, level))
        if len(lengths) > 1 and depth > 0:
            want = len(level[0])
            i = next(i for i, v in enumerate(level) if len(v) != want)
            raise InvalidInput(
                f"{field} must be a rectangular array: element {_index(i, level, depth)} has {len(level[i])} values "
                f"where the first has {want}"
            )
        level = list(chain.from_iterable(level))
    kinds = set(map(type, level))
    if kinds - NUMBER:
        bad = next(v for v in level if type(v) not in NUMBER)
        shape = f" ({_expected(field, ndim, value)})" if type(bad) is list else ""
        raise InvalidInput(f"{field} must hold numbers only; got {kind(bad)} {orjson.dumps(bad).decode()[:40]}{shape}")
    try:
        arr = np.array(value, dtype=np.float64)
    except (ValueError, OverflowError):  # ragged at the top level, or an integer past float64
        raise InvalidInput(f"{field} must be a rectangular array of numbers ({SHAPES.get(ndim, '')})") from None
    if arr.size == 0 and arr.ndim <= ndim:  # nothing to run: the data plane says how many it takes
        return np.zeros(arr.shape + (0,) * (ndim - arr.ndim), np.float32)
    if arr.ndim != ndim:
        raise InvalidInput(f"{field} must be {SHAPES.get(ndim, 'an array')}; got {arr.ndim} dimension(s)")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def plain_f32(value: Any) -> np.ndarray | None:
    """A tensor's ``data`` as a flat float32 array when it is what a request almost always
    holds (:func:`_plain`, flat or nested once); None sends it to :func:`flat_numbers`."""
    if type(value) is list and value:
        plain = _plain(value, 1) or (_plain(value, 2) if type(value[0]) is list else None)
        if plain is not None:
            return np.array(plain[0], np.float32)
    return None


def flat_numbers(value: Any, field: str, dtype: Any) -> np.ndarray:
    """A tensor's ``data``: numbers, flat or nested (row-major), as a flat array of ``dtype``."""
    if dtype is np.float32 and (arr := plain_f32(value)) is not None:
        return arr
    level = value if isinstance(value, list) else [value]
    while any(type(v) is list for v in level):
        if set(map(type, level)) - {list}:
            raise InvalidInput(f"{field} must be numbers, flat or nested in lists of equal depth")
        level = list(chain.from_iterable(level))
    kinds = set(map(type, level))
    allowed = NUMBER if np.dtype(dtype).kind == "f" else frozenset({int})
    if kinds - allowed:
        bad = next(v for v in level if type(v) not in allowed)
        expect = "numbers" if np.dtype(dtype).kind == "f" else "integers"
        raise InvalidInput(f"{field} must hold {expect} only; got {kind(bad)} {orjson.dumps(bad).decode()[:40]}")
    try:
        with np.errstate(over="ignore"):
            return np.array(level, dtype=dtype)
    except OverflowError:
        raise InvalidInput(f"{field} holds an integer out of range for {np.dtype(dtype).name}") from None


def rectangular(value: Any) -> bool:
    """Whether nested lists are rectangular: the lists of each level all of one length (a
    flat list is; ``[[1, 2], [3]]`` is not)."""
    level = value if isinstance(value, list) else [value]
    while level and type(level[0]) is list:
        if len(set(map(len, level))) > 1:
            return False
        level = list(chain.from_iterable(level))
    return True


def optional_step(value: Any, field: str = "expected_step") -> int | None:
    """A client's expected step: absent/null, or an integer >= 0."""
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise InvalidInput(f"{field} must be an integer >= 0; got {kind(value)} {orjson.dumps(value).decode()[:40]}")
    return value


def kind(v: Any) -> str:
    """What a JSON value is, in a message: ``a string``, ``null``, ``a list``..."""
    return {
        type(None): "null",
        bool: "a boolean",
        str: "a string",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(v), type(v).__name__)


def _index(i: int, level: list[Any], depth: int) -> str:
    return f"#{i}" if depth > 1 else f"[{i}]"
