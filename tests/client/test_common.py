"""The client's pure parts: reading encoding, retry policy and budget, replica rotation, error mapping."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_serving_client import (
    CapacityExceeded,
    ConnectionFailed,
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    ProtocolError,
    RetryPolicy,
    ServerError,
    SessionExpired,
    SnapshotMismatch,
    StepConflict,
    Unauthorized,
)
from lstm_serving_client._common import (
    Attempts,
    Call,
    Endpoints,
    as_rows,
    own_retry_conflict,
    retry_after,
    step_outputs,
)
from lstm_serving_client.errors import error_for


def test_readings_from_lists_tuples_and_arrays():
    assert as_rows([[1, 2, 3], (4, 5, 6)]) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert as_rows([1, 2, 3]) == [[1.0, 2.0, 3.0]]  # one reading
    assert as_rows(np.arange(6, dtype=np.float32).reshape(2, 3)) == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert as_rows(np.float32([7, 8, 9])) == [[7.0, 8.0, 9.0]]
    for bad in ([], "abc", [[1, "x"]], [[True, 1, 2]]):
        with pytest.raises(TypeError):
            as_rows(bad)


def test_retry_after_is_honoured_and_capped_backoff_is_bounded():
    p = RetryPolicy(backoff_s=0.1, max_backoff_s=0.5, max_retry_after_s=3)
    assert p.delay(0, 1.0) == 1.0 and p.delay(5, 100.0) == 3
    assert all(0 <= p.delay(k, None) <= min(0.5, 0.1 * 2**k) for k in range(8) for _ in range(20))
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None
    assert retry_after({}) is None


def test_attempts_stop_at_the_bound_and_try_the_next_replica_at_once():
    tries = Attempts(RetryPolicy(attempts=4, backoff_s=0.01), replicas=2)
    err = Overloaded("busy", 503)
    assert tries.next_wait(err, 1.0, moved=True) == 0.0  # the other replica, at once
    assert tries.next_wait(err, 1.0, moved=True) == 1.0  # both tried: Retry-After
    assert tries.next_wait(err, None, moved=False) is not None
    assert tries.next_wait(err, None, moved=False) is None
    assert tries.give_up() is err
    assert Attempts(RetryPolicy(deadline_s=0.5), 1).next_wait(err, 1.0, moved=False) is None


def test_one_call_state_machine_for_every_transport():
    """What the sync and async clients, over HTTP and WebSocket, do after each try."""
    e = Endpoints(["http://a", "http://b"])
    call = Call(RetryPolicy(attempts=5, backoff_s=0.01, max_backoff_s=0.01), e, advance=2)
    assert call.begin() == "http://a"
    assert call.unreachable(ConnectionFailed("a: refused")) == 0.0 and call.moved  # the next replica, at once
    assert call.begin() == "http://b" and not call.moved
    assert call.refused(Overloaded("draining", 503), 7.0) == 7.0 and call.moved  # both tried: Retry-After
    assert call.begin() == "http://a"
    assert 0 <= call.refused(DeadlineExceeded("late", 504)) <= 0.01 and not call.moved  # 504: same replica
    assert call.begin() == "http://a"
    # this call's own retry raced its first try, which was applied: sent again at once, once, uncounted
    own = StepConflict("expected 3, at 5", current_step=5, expected_step=3)
    assert call.refused(own) == 0.0 and not call.moved
    with pytest.raises(StepConflict):
        call.refused(own)  # a second time it is someone else's step
    with pytest.raises(InvalidInput):
        Call(RetryPolicy(), e).refused(InvalidInput("bad", 400))  # not retried
    last = Call(RetryPolicy(attempts=2), e)
    assert last.unreachable(ConnectionFailed("down")) == 0.0
    with pytest.raises(ConnectionFailed, match="again"):
        last.unreachable(ConnectionFailed("down again"))  # the bound: the last error


def test_endpoints_rotate_once_per_failure():
    e = Endpoints(["http://a/", "http://b"])
    assert e.current == "http://a" and e.ws("/x") == "ws://a/x"
    e.advance("http://a")
    e.advance("http://a")  # a second caller saw the same failure: no double move
    assert e.current == "http://b"
    e.advance("http://b")
    assert e.current == "http://a"
    assert Endpoints("https://h:1").ws("/s") == "wss://h:1/s"
    with pytest.raises(ValueError):
        Endpoints([])


@pytest.mark.parametrize(
    ("status", "session", "cls"),
    [
        (400, True, InvalidInput),
        (422, False, InvalidInput),
        (413, True, PayloadTooLarge),
        (401, False, Unauthorized),
        (404, True, SessionExpired),
        (404, False, ModelNotFound),
        (429, False, CapacityExceeded),
        (503, True, Overloaded),
        (504, True, DeadlineExceeded),
        (500, True, ServerError),
        (409, False, SnapshotMismatch),
    ],
)
def test_error_mapping(status, session, cls):
    err = error_for(status, {"error": "the server says so"}, session=session)
    assert type(err) is cls and err.status == status and err.message == "the server says so"
    assert "the server says so" in str(err)


def test_conflicts_and_replies_that_do_not_add_up():
    err = error_for(409, {"error": "expected_step 3 != 5", "current_step": 5}, session=True, expected_step=3)
    assert isinstance(err, StepConflict) and err.current_step == 5 and err.expected_step == 3
    assert own_retry_conflict(err, advance=2, resent=True)
    assert not own_retry_conflict(err, advance=2, resent=False)  # a first try: someone else moved it
    assert not own_retry_conflict(err, advance=1, resent=True)  # not where our request would have left it
    assert step_outputs({"step": 5, "outputs": [[1], [2]]}, 3, 2) == [[1.0], [2.0]]
    with pytest.raises(ProtocolError):
        step_outputs({"step": 6, "outputs": [[1], [2]]}, 3, 2)
