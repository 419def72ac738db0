"""StepContext: what a step sees, and the mistakes it explains."""

from __future__ import annotations

import pytest
import structlog

from statesaga import StepContext


def test_the_idempotency_key_is_the_saga_id_and_the_step() -> None:
    ctx = StepContext("trip-42", "book_hotel", {}, {})
    assert "trip-42:book_hotel" == ctx.idempotency_key
    assert "StepContext(saga_id='trip-42', step='book_hotel', attempt=1, fence=0)" == repr(ctx)


def test_publishing_outside_a_saga_says_where_it_can_be_done() -> None:
    with pytest.raises(RuntimeError, match="cannot publish here"):
        StepContext("s", "a", {}, {}).publish(object())


def test_the_log_is_bound_to_the_saga_and_the_step() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    ctx = StepContext("s9", "pay", {}, {}, name="shop")
    with structlog.testing.capture_logs() as logs:
        ctx.log.info("paid", amount=3)
    assert [{"event": "paid", "amount": 3, "saga_id": "s9", "saga": "shop", "step": "pay",
             "log_level": "info"}] == logs
    assert ctx.log is ctx.log  # bound once
