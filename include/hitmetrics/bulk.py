"""The bulk transport of a load: bodies sent as they are, several in flight, transient failures retried.

Index and delete operations carry fixed ids, so sending one again is harmless: a chunk whose request failed part
way is simply sent again, whole or only the items Elasticsearch asked to resend.
"""

from __future__ import annotations

import logging
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
# Transient failures (429, 5xx, connection lost) are retried with exponential backoff, about a minute in all.
RETRIES = 6
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
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
    whose request failed part way is simply sent again.
    """
    es = es.options(request_timeout=BULK_TIMEOUT_S)
    with ThreadPoolExecutor(BULK_THREADS, thread_name_prefix="hits-bulk") as pool:
        in_flight: deque[Future] = deque()
        for chunk in chunks:
            if len(in_flight) >= BULK_THREADS:
                yield in_flight.popleft().result()
            in_flight.append(pool.submit(send_chunk, es, chunk))
        while in_flight:
            yield in_flight.popleft().result()


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


def send_chunk(es: Elasticsearch, chunk: Chunk) -> tuple[Counter[str], list[dict[str, Any]]]:
    """One chunk as one bulk request; returns (documents done per index, refused items).

    429 and 5xx answers and lost connections are retried with exponential backoff: a whole request again, or
    only the items Elasticsearch answered 429/5xx for.
    """
    for preparation in chunk.ready:
        preparation.result()
    done: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    filter_path = QUICK_FILTER_PATH
    attempt = 0
    while True:
        last = attempt == RETRIES
        try:
            response = post_bulk(es, chunk.ndjson, filter_path)
        except ApiError as error:
            if last or error.meta.status not in RETRY_STATUS:
                raise LoadError(f"bulk request failed: {error}") from error
            _back_off(attempt, f"bulk request answered {error.meta.status}")
            attempt += 1
            continue
        except (ESConnectionError, ConnectionTimeout) as error:
            if last:
                raise LoadError(f"bulk request failed after {attempt + 1} attempts: {error}") from error
            _back_off(attempt, f"bulk request failed ({error})")
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
        for (lines, operation, index, _id), item in zip(chunk.operations(), response["items"], strict=True):
            status = item[operation]["status"]
            # Deleting what is already gone is fine: someone else's sweep or a retry got there first.
            if status < 300 or (operation == "delete" and status == 404):
                done[index] += 1
            elif status in RETRY_STATUS and not last:
                retry += lines
                retry_per_index[index] += 1
            else:
                errors.append({operation: {**item[operation], "_index": index, "_id": _id}})
        if not retry_per_index:
            return done, errors
        chunk = Chunk(b"\n".join(retry) + b"\n", retry_per_index)
        _back_off(attempt, f"Elasticsearch asked to resend {retry_per_index.total()} document(s)")
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


def _back_off(attempt: int, why: str) -> None:
    pause = min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2**attempt)
    log.warning("%s; retrying in %.0fs", why, pause)
    time.sleep(pause)


def describe(error_item: dict[str, Any]) -> str:
    ((operation, result),) = error_item.items()
    return f"{operation} {result.get('_index')}/{result.get('_id')}: {result.get('status')} {result.get('error')}"
