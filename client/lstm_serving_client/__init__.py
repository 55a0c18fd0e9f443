"""Client for lstm-serving: sessions whose every step is exact, retried safely and failed over.

from lstm_serving_client import Client

with Client("http://localhost:8000") as client, client.session("demand") as s:
    y = s.step([[30500, 8.0, 2]])
"""

from lstm_serving_client._common import Prediction, RetryPolicy
from lstm_serving_client.aio import AsyncClient, AsyncSession
from lstm_serving_client.errors import (
    CapacityExceeded,
    ConnectionFailed,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    ProtocolError,
    ServerError,
    ServingError,
    SessionExpired,
    SnapshotMismatch,
    StepConflict,
    Unauthorized,
)
from lstm_serving_client.sync import Client, Session

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncSession",
    "CapacityExceeded",
    "Client",
    "ConnectionFailed",
    "DeadlineExceeded",
    "InvalidInput",
    "ModelNotFound",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Prediction",
    "ProtocolError",
    "RetryPolicy",
    "ServerError",
    "ServingError",
    "Session",
    "SessionExpired",
    "SnapshotMismatch",
    "StepConflict",
    "Unauthorized",
]
