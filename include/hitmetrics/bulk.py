"""The bulk transport of a load: bodies sent as they are, several in flight, transient failures retried.

Index and delete operations carry fixed ids, so sending one again is harmless: a chunk whose request failed part
way is simply sent again, whole or only the items Elasticsearch asked to resend.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from elasticsearch import ApiError, ConnectionTimeout, Elasticsearch
from elasticsearch import ConnectionError as ESConnectionError

log = logging.getLogger(__name__)

# Bulk requests of about 8 MB (Elasticsearch's sweet spot is 5-15 MB), three in flight: on a small node that
# keeps every write thread busy while the next body is parsed. CHUNK_DOCS only caps tiny-document bodies.
CHUNK_DOCS = 100_000
CHUNK_BYTES = 8 << 20
BULK_THREADS = 3
BULK_TIMEOUT_S = 120
# Back-pressure and transient failures (429 es_rejected_execution_exception, 5xx, a connection lost while a node
# leaves) are retried with capped exponential back-off and jitter (so the shards of a day do not retry in step),
# until one request has waited RETRY_BUDGET_S in all: only then does it fail its shard, naming the cause.
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
RETRY_BUDGET_S = 300.0
RETRY_STATUS = (429, 502, 503, 504)
# A request is first sent asking only whether anything failed: producing, sending and parsing a status per item
# costs the node and the loader time on every request. Only when something failed is it sent again (index and
# delete are idempotent here) asking for each item's status and error, in the chunk's order.
QUICK_FILTER_PATH = "errors"
ITEMS_FILTER_PATH = "errors,items.*.status,items.*.error"

# One bulk operation: (index, action line, source line or None for a delete), each line ending in a newline.
Action = tuple[str, bytes, bytes | None]


class LoadError(RuntimeError):
    """The load could not complete as asked; the message says why."""


def send_chunks(es: Elasticsearch, chunks: Iterable[Chunk]) -> Iterator[tuple[Counter[str], list[dict[str, Any]]]]:
    """Send `chunks`, `BULK_THREADS` requests in flight; yield per chunk (docs done per index, errors).

    Results come in the order the chunks were sent. Index and delete are idempotent here (fixed ids), so a chunk
    whose request failed part way is simply sent again. The back-pressure ridden out is logged at the end.
    """
    es = es.options(request_timeout=BULK_TIMEOUT_S)
    pressure = BackPressure()
    try:
        with ThreadPoolExecutor(BULK_THREADS, thread_name_prefix="hits-bulk") as pool:
            in_flight: deque[Future] = deque()
            for chunk in chunks:
                if len(in_flight) >= BULK_THREADS:
                    yield in_flight.popleft().result()
                in_flight.append(pool.submit(send_chunk, es, chunk, pressure))
            while in_flight:
                yield in_flight.popleft().result()
    finally:
        if pressure.retries:
            log.info("%s", pressure)


class BackPressure:
    """The retries of one load's requests (shared by its sending threads): how often, why and how long they
    waited. `wait` sleeps a jittered, capped exponential back-off, or fails once one request has waited
    `RETRY_BUDGET_S`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.retries = 0
        self.waited_s = 0.0
        self.causes: Counter[str] = Counter()

    def wait(self, attempt: int, waited_s: float, cause: str) -> float:
        """Sleep before retry `attempt` (from 0) of a request that has waited `waited_s` so far; returns its new
        total. Raises LoadError, naming `cause`, when that would pass the budget."""
        cap = min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2 ** min(attempt, 32))
        pause = random.uniform(cap / 2, cap)
        if waited_s + pause > RETRY_BUDGET_S:
            raise LoadError(
                f"Elasticsearch still answered {cause} after {attempt} retries over {waited_s:.0f}s: the cluster "
                f"is overloaded or a node is gone for longer than the loader waits ({RETRY_BUDGET_S:.0f}s); "
                "the shard fails so that Airflow retries it later"
            )
        with self._lock:
            self.retries += 1
            self.waited_s += pause
            self.causes[cause.split(":")[0]] += 1
        log.warning("%s; retrying in %.2fs", cause, pause)
        time.sleep(pause)
        return waited_s + pause

    def __str__(self) -> str:
        causes = ", ".join(f"{cause} x{count}" for cause, count in self.causes.most_common())
        return f"rode out back-pressure: {self.retries} retries ({causes}), {self.waited_s:.1f}s of waiting in all"


def chunks_of(actions: Iterable[Action]) -> Iterator[Chunk]:
    """Bulk bodies of about `CHUNK_BYTES` (at most `CHUNK_DOCS` operations).

    Lines go straight into one buffer: holding them as separate objects would cost several times their size
    (orjson's output buffers are over-allocated) and grow the loader's memory with the chunk size.
    """
    body, per_index, docs = bytearray(), Counter(), 0
    for index, action, source in actions:
        body += action
        if source is not None:
            body += source
        per_index[index] += 1
        docs += 1
        if len(body) >= CHUNK_BYTES or docs >= CHUNK_DOCS:
            yield Chunk(bytes(body), per_index)
            body, per_index, docs = bytearray(), Counter(), 0
    if docs:
        yield Chunk(bytes(body), per_index)


@dataclass(frozen=True)
class Chunk:
    """One bulk request: its NDJSON body (every line ended) and how many of its operations go to each index."""

    ndjson: bytes
    per_index: Counter[str]
    ready: list[Future[None]] = field(default_factory=list)  # preparations of its indexes, awaited before sending

    def operations(self) -> Iterator[tuple[list[bytes], str, str, str]]:
        """Each operation: (its lines, operation, index, id); used only to sort out a response with errors."""
        # orjson escapes line breaks inside strings, so every line is one JSON value.
        lines = self.ndjson.splitlines()
        at = 0
        while at < len(lines):
            ((operation, meta),) = orjson.loads(lines[at]).items()
            size = 1 if operation == "delete" else 2
            yield lines[at : at + size], operation, meta["_index"], meta["_id"]
            at += size


def send_chunk(
    es: Elasticsearch, chunk: Chunk, pressure: BackPressure | None = None
) -> tuple[Counter[str], list[dict[str, Any]]]:
    """One chunk as one bulk request; returns (documents done per index, refused items).

    429 and 5xx answers and lost connections are retried with back-off (`BackPressure.wait`): a whole request
    again, or only the items Elasticsearch answered 429/5xx for.
    """
    for preparation in chunk.ready:
        preparation.result()
    pressure = pressure or BackPressure()
    done: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    filter_path = QUICK_FILTER_PATH
    attempt, waited_s = 0, 0.0
    while True:
        try:
            response = post_bulk(es, chunk.ndjson, filter_path)
        except ApiError as error:
            if error.meta.status not in RETRY_STATUS:
                raise LoadError(f"bulk request failed: {error}") from error
            waited_s = pressure.wait(attempt, waited_s, f"{error.meta.status} {error.error}: a bulk request")
            attempt += 1
            continue
        except (ESConnectionError, ConnectionTimeout) as error:
            waited_s = pressure.wait(attempt, waited_s, f"connection lost: a bulk request ({error})")
            attempt += 1
            continue
        if not response.get("errors"):
            done.update(chunk.per_index)
            return done, errors
        if "items" not in response:
            filter_path = ITEMS_FILTER_PATH  # at once, not an attempt: only to learn which items failed
            continue
        retry: list[bytes] = []
        retry_per_index: Counter[str] = Counter()
        refusal = ""
        for (lines, operation, index, _id), item in zip(chunk.operations(), response["items"], strict=True):
            status = item[operation]["status"]
            # Deleting what is already gone is fine: someone else's sweep or a retry got there first.
            if status < 300 or (operation == "delete" and status == 404):
                done[index] += 1
            elif status in RETRY_STATUS:
                retry += lines
                retry_per_index[index] += 1
                refusal = refusal or f"{status} {(item[operation].get('error') or {}).get('type', '')}".strip()
            else:
                errors.append({operation: {**item[operation], "_index": index, "_id": _id}})
        if not retry_per_index:
            return done, errors
        chunk = Chunk(b"\n".join(retry) + b"\n", retry_per_index)
        waited_s = pressure.wait(attempt, waited_s, f"{refusal}: {retry_per_index.total()} document(s)")
        attempt += 1


def post_bulk(es: Elasticsearch, body: bytes, filter_path: str) -> dict[str, Any]:
    """POST a bulk body as it is. `es.bulk` would pass it through the client's NDJSON serializer, which copies
    every body twice (memory and time); sent as JSON, which `_bulk` takes as well, bytes go out untouched."""
    return es.perform_request(
        "POST",
        "/_bulk",
        params={"filter_path": filter_path},
        headers={"accept": "application/json", "content-type": "application/json"},
        body=body,
    ).body


def describe(error_item: dict[str, Any]) -> str:
    ((operation, result),) = error_item.items()
    return f"{operation} {result.get('_index')}/{result.get('_id')}: {result.get('status')} {result.get('error')}"
