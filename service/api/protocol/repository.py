"""The parameters of Triton's model repository extension, checked the same way for REST
(``/v2/repository/...``) and gRPC (``RepositoryIndex``, ``RepositoryModelLoad``,
``RepositoryModelUnload``): unknown parameters refused, ``version`` a version number,
flags booleans."""

from __future__ import annotations

from typing import Any

from service.errors import InvalidInput


def only_parameters(params: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; this request takes {sorted(allowed)}")
    return params


def version_param(params: dict[str, Any]) -> str | None:
    v = params.get("version")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | str) or not str(v).isdigit():
        raise InvalidInput(f'parameter version must be a version number such as "2", got {v!r}')
    return str(v)


def flag_param(params: dict[str, Any], name: str) -> bool:
    v = params.get(name, False)
    if not isinstance(v, bool):
        raise InvalidInput(f"parameter {name} must be a boolean, got {v!r}")
    return v
