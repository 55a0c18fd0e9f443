"""Pydantic wire types of the native REST API (``/v1``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.session_service import MAX_STEP

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Step = Annotated[list[Number], Field(min_length=1)]  # one time step: n_features numbers
Matrix = list[list[Number]]


CARD_NOTE = (
    "Beyond this schema, the tensors must fit the served model's card: its number of features, its layers "
    "and hidden size, the state tensors of its cell (h and C for an LSTM, h alone for a GRU), its feature "
    "ranges and grids; nested lists must be rectangular and a tensor's data must fill its shape. A body "
    "that does not is refused with 400 naming what was expected."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Strict):
    inputs: Annotated[list[Annotated[list[Step], Field(min_length=1)]], Field(min_length=1)] = Field(
        description="Sequences to run from their initial state: [batch, seq, n_features], real units.",
        examples=[[[[30500.0, 8.0, 2.0], [31200.0, 8.5, 2.0]]]],
    )
    h0: list[Matrix] | None = Field(None, description="Initial h, [layers, batch, hidden]; zeros when absent.")
    c0: list[Matrix] | None = Field(
        None, description="Initial C, [layers, batch, hidden]; zeros when absent. LSTM models only."
    )


class PredictResponse(BaseModel):
    model: str
    version: str
    outputs: list[list[list[float]]] = Field(description="[batch, seq, n_outputs], real units")
    hn: list[Matrix] = Field(description="Final h, [layers, batch, hidden]")
    cn: list[Matrix] | None = Field(None, description="Final C, [layers, batch, hidden] (LSTM models; a GRU has none)")


class CreateSessionRequest(_Strict):
    model: str = Field(description="Model name", examples=["demand"])
    version: str | None = Field(None, description="Model version; the latest when absent", examples=["1"])
    h0: Matrix | None = Field(None, description="Initial h, [layers, hidden]; zeros when absent.")
    c0: Matrix | None = Field(None, description="Initial C, [layers, hidden]; zeros when absent. LSTM models only.")


class SessionInfo(BaseModel):
    session_id: str
    model: str
    version: str
    step: int = Field(description="Time steps consumed so far")
    created_at: float = Field(description="Unix time")
    last_used_at: float = Field(description="Unix time of the last step (or creation)")
    expires_at: float = Field(description="Unix time at which the session expires if idle")


class StepRequest(_Strict):
    inputs: Annotated[list[Step], Field(min_length=1)] = Field(
        description="T >= 1 time steps, each n_features numbers in real units",
        examples=[[[30500.0, 8.0, 2.0]]],
    )
    expected_step: int | None = Field(
        None,
        ge=0,
        strict=True,
        description=(
            "The session's step the client expects. Equal: the request runs. A retry of the last "
            "applied request (same expected_step and inputs): its stored reply is returned and the "
            "state does not advance again. Anything else: 409 with the current step."
        ),
    )


class StepResponse(BaseModel):
    session_id: str
    step: int = Field(description="The session's step after this request")
    outputs: list[list[float]] = Field(description="[T, n_outputs]: the forecast after each input step")
    replayed: bool = Field(description="True when this reply is the stored reply of a retried request")


class Snapshot(_Strict):
    format: Literal["lstm-session-snapshot/1"] = Field(description="what the body is: lstm-session-snapshot/1")
    model: str
    version: str
    sha256: str = Field(description="sha256 of the model.onnx the state belongs to")
    # below 2**53: every step a session can reach in practice, and exact as a JSON number
    # in any client (a double), so a schema-valid step is never rounded on its way
    step: int = Field(ge=0, lt=MAX_STEP, strict=True)
    h: Matrix = Field(description="[layers, hidden]")
    c: Matrix | None = Field(None, description="[layers, hidden]: the cell state of an LSTM; absent for a GRU")


class ErrorBody(BaseModel):
    error: str
