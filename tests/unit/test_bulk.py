"""The bulk transport's back-off: capped, jittered, within a total budget, and told in one line."""

from __future__ import annotations

import pytest

from hitmetrics import bulk


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    pauses: list[float] = []
    monkeypatch.setattr(bulk.time, "sleep", pauses.append)
    return pauses


def test_pauses_grow_exponentially_with_jitter_up_to_the_cap(slept):
    pressure, waited = bulk.BackPressure(), 0.0
    for attempt in range(10):
        waited = pressure.wait(attempt, waited, "429 es_rejected_execution_exception: a bulk request")
    for attempt, pause in enumerate(slept):
        cap = min(bulk.MAX_BACKOFF_S, bulk.INITIAL_BACKOFF_S * 2**attempt)
        assert cap / 2 <= pause <= cap
    assert waited == pytest.approx(sum(slept)) and pressure.waited_s == pytest.approx(sum(slept))
    assert str(pressure).startswith("rode out back-pressure: 10 retries (429 es_rejected_execution_exception x10)")


def test_the_budget_bounds_the_total_wait_and_the_error_names_the_cause(slept, monkeypatch):
    monkeypatch.setattr(bulk, "RETRY_BUDGET_S", 20.0)
    pressure, waited, attempt = bulk.BackPressure(), 0.0, 0
    with pytest.raises(bulk.LoadError, match=r"still answered 503 .* after \d+ retries over \d+s"):
        while True:
            waited = pressure.wait(attempt, waited, "503 unavailable: a bulk request")
            attempt += 1
    assert sum(slept) <= 20.0


def test_refused_items_are_sent_again_alone_until_accepted(slept, monkeypatch):
    chunk = bulk.Chunk(b'{"index":{"_index":"i","_id":"1"}}\n{}\n{"index":{"_index":"i","_id":"2"}}\n{}\n',
                       bulk.Counter({"i": 2}))  # fmt: skip
    answers = [
        {"errors": True},
        {"errors": True, "items": [{"index": {"status": 201}},
                                   {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}}]},
        {"errors": False},
    ]  # fmt: skip
    bodies = []

    def post(es, body, filter_path):
        bodies.append(body)
        return answers.pop(0)

    monkeypatch.setattr(bulk, "post_bulk", post)
    done, errors = bulk.send_chunk(None, chunk)
    assert done == {"i": 2} and errors == []
    assert bodies[-1] == b'{"index":{"_index":"i","_id":"2"}}\n{}\n' and len(slept) == 1
