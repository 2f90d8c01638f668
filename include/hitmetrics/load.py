"""Load a landing day into the daily environment indexes: exact on every re-run, full reload, reconciliation.

A load of landing folder D writes every good record under a deterministic `_id` (source file, line) with a fresh
`load_id`, then deletes the documents whose `source_file` is under `D/` and whose `load_id` differs: what the
folder no longer contributes, in whichever day's index it went. Re-runs, retries after a load cut off half way
and reloads of corrected folders all end with exactly the folder's current good records. Only server-core APIs
are used (bulk, point in time, search_after, count), no `_delete_by_query`.

Speed: the usual records are parsed, checked and written onto the bulk bodies in C (`_fastpath.c`, built by
`pip install -e .`), byte for byte as the Python way writes them. The Python way does the rest (all of it where the
extension is not built): records parsed and checked mostly in C (msgspec, see `ingest.py`), each `_source` encoded
by msgspec and written onto the end of its bulk body (the action line from a template). Bodies are sized by bytes, with
several requests in flight while the next body is parsed; a request is answered only with whether anything
failed. Indexes are created and tuned in the background while records are parsed. While a load writes, its
indexes have refresh off and no replicas; their previous settings come back when the write phase ends, also
when it fails.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import hashlib
import io
import logging
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import orjson
from elasticsearch import ApiError, ConnectionTimeout, Elasticsearch
from elasticsearch import ConnectionError as ESConnectionError

from hitmetrics.config import Settings
from hitmetrics.indexes import create_index, ensure_template, foreign_behind_alias, index_name, parse_index_name
from hitmetrics.ingest import (
    FastPath,
    LandingFile,
    LandingPath,
    MissingLandingDay,
    Reject,
    find_day_files,
    landing_root,
    parse_batches,
)
from hitmetrics.model import Hit
from hitmetrics.rejects import RejectsError, RejectsFile

try:
    from hitmetrics import _fastpath
except ImportError:  # not built (no C compiler at install): the Python way does everything
    _fastpath = None

__all__ = [
    "LoadError",
    "LoadProgress",
    "LoadReport",
    "MissingLandingDay",
    "ReconciliationError",
    "TooManyRejects",
    "load_landing_day",
    "new_load_id",
]

log = logging.getLogger(__name__)

# Bulk requests of about 8 MB (Elasticsearch's sweet spot is 5-15 MB), three in flight: on a small node that
# keeps every write thread busy while the next body is parsed. CHUNK_DOCS only caps tiny-document bodies.
CHUNK_DOCS = 100_000
CHUNK_BYTES = 8 << 20
BULK_THREADS = 3
# The bodies being built (one per index) hold at most about this much, checked after every batch of records.
BUFFERED_BYTES = 4 * CHUNK_BYTES
# Local days around the landing day that the C fast path routes itself (a record of any other day goes the Python way).
FAST_DAYS = range(-7, 3)
BULK_TIMEOUT_S = 120
# glibc serves a block this large or larger with its own mmap, handed back to the system when freed. Its default
# threshold rises to the size of the largest block freed so far: after the first body, bodies come from the heap,
# whose freed holes fragment and grow the process with the length of the load (peak RSS 122 MiB at 1M hits, 143 at
# 10M; with the threshold fixed, 98 and 109: the bodies in flight). The price is the page faults of fresh memory
# for every body (one block per body: see `_Body.take`; the C body is one bytes object too).
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
# Transient failures (429, 5xx, connection lost) are retried with exponential backoff, about a minute in all.
RETRIES = 6
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
RETRY_STATUS = (429, 502, 503, 504)
PROGRESS_EVERY_S = 10.0
LOGGED_REJECTS = 5  # the first rejects of a load are in its log too; all of them are in the rejects file
SWEEP_PAGE = 5_000
# A request is first sent asking only whether anything failed: producing, sending and parsing a status per item
# costs the node and the loader time on every request. Only when something failed is it sent again (index and
# delete are idempotent here) asking for each item's status and error, in the chunk's order.
QUICK_FILTER_PATH = "errors"
ITEMS_FILTER_PATH = "errors,items.*.status,items.*.error"

# Index settings while a load writes (refresh off, no replicas), the usual bulk-load tuning. The settings they
# replace are put back afterwards; settings found equal to these were left by a load that was killed before it
# could restore them, and are replaced by the template's.
LOAD_SETTINGS = {
    "index.refresh_interval": "-1",
    "index.number_of_replicas": "0",
    "index.auto_expand_replicas": "false",
}

RESTORE_BATCH = 50  # index names per settings request, well under any URL length limit

LOAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")

Partition = tuple[dt.date, str]
# One bulk operation: (index, action line, source line or None for a delete), each line ending in a newline.
Action = tuple[str, bytes, bytes | None]


class _Source(msgspec.Struct):
    """A document's `_source`, encoded by msgspec and written onto the end of a bulk body."""

    page: str
    datetime: dt.datetime
    user_id: int
    environment: str
    source_file: str
    load_id: str


class LoadError(RuntimeError):
    """The load could not complete as asked; the message says why."""


class ReconciliationError(LoadError):
    """Elasticsearch does not hold exactly what was loaded."""


class TooManyRejects(LoadError):
    """More records were rejected than `HITS_MAX_REJECT_RATIO` allows; the good ones are loaded."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """What one load of a landing day did. Always `read == loaded + rejected`."""

    landing_day: dt.date
    load_id: str
    files: int = 0
    read: int = 0
    loaded: int = 0
    rejected: int = 0
    rejects_file: str | None = None  # a path or URL
    # Documents written per (local day, environment) partition. Partitions that only lost documents to the
    # sweep are included with 0: every partition listed needs its aggregates recomputed.
    partitions: dict[Partition, int] = field(default_factory=dict)
    deleted: int = 0  # stale documents the folder no longer contributes
    seconds: float = 0.0

    @property
    def reject_ratio(self) -> float:
        return self.rejected / self.read if self.read else 0.0

    def summary(self) -> str:
        where = f", rejects in {self.rejects_file}" if self.rejects_file else ""
        return (
            f"landing day {self.landing_day}: {self.files} file(s), read {self.read}, loaded {self.loaded}, "
            f"rejected {self.rejected}{where}; {self.deleted} stale document(s) deleted; "
            f"{self.seconds:.1f}s (load {self.load_id})"
        )


@dataclass(frozen=True)
class LoadProgress:
    """A snapshot of a running load, for progress logs and callbacks."""

    files_done: int
    files: int
    read: int
    loaded: int
    rejected: int
    seconds: float

    @property
    def docs_per_second(self) -> float:
        return self.loaded / self.seconds if self.seconds else 0.0

    def __str__(self) -> str:
        return (
            f"{self.files_done}/{self.files} file(s), read {self.read}, loaded {self.loaded}, "
            f"rejected {self.rejected}, {self.docs_per_second:,.0f} docs/s"
        )


def new_load_id() -> str:
    """A fresh, sortable load id: UTC time plus randomness."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _fix_mmap_threshold() -> bool:
    """Have glibc mmap every block of `MMAP_THRESHOLD_BYTES` or more (the bulk bodies), so the memory of a load
    stays flat however long it runs; False where the C library has no `mallopt` (not glibc), which changes nothing.

    The setting is the process's, and harmless to the rest of it: only blocks this large are affected.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return bool(mallopt and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def load_landing_day(
    es: Elasticsearch,
    settings: Settings,
    landing_day: dt.date,
    *,
    landing: LandingPath | None = None,
    load_id: str | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
    missing_ok: bool = False,
    rejects_root: LandingPath | None = None,
) -> LoadReport:
    """Load `<landing>/<landing_day>/` so the indexes hold exactly the folder's good records; return the report.

    `landing` defaults to `settings.landing` and `rejects_root` to `settings.rejects_location` (each a folder or
    URL); pass an Airflow `ObjectStoragePath` to use a connection's credentials. `load_id` must be new for every
    attempt (default: generated). Raises `MissingLandingDay` when the folder does not exist (with `missing_ok`, a
    removed folder loads as empty, which deletes everything it contributed), `TooManyRejects` (after loading the
    good records) when the rejected share exceeds `settings.max_reject_ratio`, `ReconciliationError` when
    Elasticsearch's counts differ from what was loaded, `LoadError` for anything else that stops the load.
    """
    started = time.monotonic()
    load_id = load_id or new_load_id()
    if not LOAD_ID.match(load_id):
        raise ValueError(f"load id {load_id!r} must be 1-128 letters, digits or ._:+- (starting with one of the first)")
    _fix_mmap_threshold()
    root = landing if landing is not None else landing_root(settings.landing)
    try:
        files, ignored = find_day_files(root, landing_day)
    except MissingLandingDay:
        if not missing_ok:
            raise
        log.warning("landing day %s is gone: removing everything it contributed", landing_day)
        files, ignored = [], []
    if ignored:
        log.warning(
            "ignoring %d file(s) that are not *.jsonl/*.ndjson/*.csv[.gz]: %s", len(ignored), ", ".join(ignored)
        )
    report = LoadReport(landing_day=landing_day, load_id=load_id, files=len(files))
    way = "C fast path" if _fastpath else "Python way only: hitmetrics._fastpath is not built"
    log.info("load %s of landing day %s: %d file(s) under %s (%s)", load_id, landing_day, len(files), root, way)

    folder_prefix = f"{landing_day.isoformat()}/"
    rejects_root = rejects_root if rejects_root is not None else landing_root(settings.rejects_location)
    rejects = RejectsFile(rejects_root / landing_day.isoformat() / f"{load_id}.jsonl")
    ensure_template(es, settings)  # before any index is created, and current even if the mapping changed
    try:
        with _LoadSettings(es) as tuned:
            written = _write_documents(es, settings, files, load_id, report, rejects, started, progress, tuned)
        report.rejects_file = rejects.commit()
    except RejectsError as error:
        raise LoadError(str(error)) from error
    finally:
        rejects.discard()
    assert report.read == report.loaded + report.rejected, report

    alias = settings.index_prefix
    es.indices.refresh(index=alias, ignore_unavailable=True)
    foreign = foreign_behind_alias(es, settings)  # the sweep and the count keep out of what is not ours
    deleted = _sweep_stale(es, alias, folder_prefix, load_id, foreign)
    es.indices.refresh(index=alias, ignore_unavailable=True)
    report.deleted = deleted.total()
    touched = {name: written.get(name, 0) for name in [*written, *deleted]}
    report.partitions = _by_partition(settings.index_prefix, touched)
    _reconcile(es, settings, folder_prefix, load_id, report, foreign)

    report.seconds = time.monotonic() - started
    log.info("%s", report.summary())
    if report.reject_ratio > settings.max_reject_ratio:
        raise TooManyRejects(
            f"{report.rejected} of {report.read} records of landing day {landing_day} were rejected "
            f"({report.reject_ratio:.2%}, more than HITS_MAX_REJECT_RATIO={settings.max_reject_ratio:g}); "
            f"the {report.loaded} good ones are loaded; see {report.rejects_file}",
            report,
        )
    return report


def _write_documents(
    es: Elasticsearch,
    settings: Settings,
    files: list[LandingFile],
    load_id: str,
    report: LoadReport,
    rejects: RejectsFile,
    started: float,
    progress: Callable[[LoadProgress], None] | None,
    tuned: _LoadSettings,
) -> Counter[str]:
    """Bulk-index every good record, rejects to `rejects`; returns the documents written per index.

    Each index is tuned for loading (`tuned`) before its first document is sent.
    """
    written: Counter[str] = Counter()
    files_done = 0
    last_progress = started

    def chunks() -> Iterator[_Chunk]:
        """The bulk bodies, built in place: no per-record objects outlive a record (see `_chunks`)."""
        nonlocal files_done
        tz, prefix = settings.tz, settings.index_prefix
        utc = settings.timezone == "UTC"
        environments = frozenset(settings.environments)
        environment_names = sorted(environments)  # the C code's environment numbers
        encode = msgspec.json.Encoder().encode
        new_body = _fastpath.Body if _fastpath else _Body
        days, spans = _day_spans(report.landing_day, tz)
        # Each index is created and tuned in the background while records are parsed; a chunk is sent only
        # once its indexes are ready (see `_send_chunk`).
        ready_of: dict[str, Future[None]] = {}

        def prepare_index(day: dt.date, environment: str, index: str) -> None:
            if create_index(es, prefix, day, environment, settings=LOAD_SETTINGS):
                log.info("created index %s", index)
                tuned.created(index)
            else:
                tuned.apply(index)

        def open_index(day: dt.date, environment: str) -> str:
            index = index_name(prefix, day, environment)
            if index not in ready_of:
                ready_of[index] = preparer.submit(prepare_index, day, environment, index)
            return index

        def router(id_prefix: str) -> Callable[[Partition], tuple[str, bytes, Body]]:
            """(day, environment) -> the index, its action line but the line number, its body, for one file."""
            target_of: dict[Partition, tuple[str, bytes, Body]] = {}

            def target(key: Partition) -> tuple[str, bytes, Body]:
                found = target_of.get(key)
                if found is None:
                    index = open_index(*key)
                    body = bodies.setdefault(index, new_body())
                    found = target_of[key] = (index, _action_template(index, id_prefix), body)
                return found

            return target

        def take(index: str) -> _Chunk:
            """The index's body as a chunk; the body starts again empty."""
            body = bodies[index]
            docs = body.docs
            report.read += docs
            return _Chunk(body.take(), Counter({index: docs}), [ready_of[index]])

        # One body per index: a bulk request to a single shard is cheaper for the node than one split across many.
        # Records of many days (a backfill) would leave many bodies half full: past `BUFFERED_BYTES` in all, the
        # largest are sent.
        bodies: dict[str, Body] = {}
        for file in files:
            source_file = file.source_file
            target = router(_id_prefix(source_file))
            fast = _fast_writer(source_file, load_id, environment_names, days, spans, target) if _fastpath else None
            for batch in parse_batches(file, environments, fast):
                for item in batch:
                    if type(item) is Reject:
                        report.read += 1
                        report.rejected += 1
                        rejects.write(item)
                        if report.rejected <= LOGGED_REJECTS:
                            log.warning("rejected %s line %d: %s", item.source_file, item.line, item.reason)
                        continue
                    instant, environment = item.datetime, item.environment
                    index, action, body = target(
                        (instant.date() if utc else instant.astimezone(tz).date(), environment)
                    )
                    body.write(action % item.line)
                    body.write(encode(_Source(item.page, instant, item.user_id, environment, source_file, load_id)))
                    body.write(b"\n")
                    body.docs += 1
                    if _full(body):
                        yield take(index)
                for index in [index for index, body in bodies.items() if _full(body)]:
                    yield take(index)
                while sum(body.tell() for body in bodies.values()) >= BUFFERED_BYTES:
                    yield take(max(bodies, key=lambda name: bodies[name].tell()))
            files_done += 1
        for index, body in bodies.items():
            if body.docs:
                yield take(index)

    errors: list[dict[str, Any]] = []
    # Leaving this block waits for index preparations still running, so `tuned` knows all it must restore.
    with ThreadPoolExecutor(1, thread_name_prefix="hits-index") as preparer:
        for chunk_written, chunk_errors in _bulk(es, chunks()):
            written.update(chunk_written)
            report.loaded += chunk_written.total()
            errors.extend(chunk_errors)
            now = time.monotonic()
            snapshot = LoadProgress(files_done, len(files), report.read, report.loaded, report.rejected, now - started)
            if progress:
                progress(snapshot)
            if now - last_progress >= PROGRESS_EVERY_S:
                log.info("progress: %s", snapshot)
                last_progress = now
    if errors:
        raise LoadError(
            f"Elasticsearch refused {len(errors)} document(s); first: {_describe(errors[0])}. "
            "Nothing was deleted; fix the cause and run the load again."
        )
    return written


def _full(body: Body) -> bool:
    return body.docs >= CHUNK_DOCS or body.tell() >= CHUNK_BYTES


class Body(Protocol):
    """A bulk body being built: `_fastpath.Body` (C) or `_Body`."""

    docs: int  # operations written

    def write(self, data: bytes) -> int: ...
    def tell(self) -> int: ...
    def take(self) -> bytes:
        """The body as bytes; the body starts again empty."""
        ...


class _Body(io.BytesIO):
    """The Python way's body: a BytesIO counting its operations."""

    docs = 0

    def take(self) -> bytes:
        # CPython hands the buffer over, where a bytearray would be copied: a second 8 MB block and its page faults.
        data = self.getvalue()
        self.__init__()  # a new, empty buffer
        self.docs = 0
        return data


def _day_spans(landing_day: dt.date, tz: dt.tzinfo) -> tuple[list[dt.date], tuple[tuple[int, int], ...]]:
    """The local days near `landing_day` (`FAST_DAYS`) whose UTC offset is the same all day, and each one's UTC
    seconds [start, end): an instant in a span is on that local day. Days with a clock change are left out."""
    days, spans = [], []
    for offset in FAST_DAYS:
        day = landing_day + dt.timedelta(days=offset)
        start = dt.datetime.combine(day, dt.time(), tz)
        end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).timestamp())
        if start.utcoffset() == dt.datetime.fromtimestamp(end - 1, tz).utcoffset():
            days.append(day)
            spans.append((int(start.timestamp()), end))
    return days, tuple(spans)


def _fast_writer(
    source_file: str,
    load_id: str,
    environments: list[str],
    days: list[dt.date],
    spans: tuple[tuple[int, int], ...],
    target: Callable[[Partition], tuple[str, bytes, Body]],
) -> FastPath:
    """The C writer of one file's usual records, routing them through `target` as the Python way does."""

    def route(slot: int, environment: int) -> tuple[Body, bytes, bytes]:
        _, action, body = target((days[slot], environments[environment]))
        before, after = (part.replace(b"%%", b"%") for part in action.split(b"%d"))
        return body, before, after

    tail = b"," + msgspec.json.encode({"source_file": source_file, "load_id": load_id})[1:] + b"\n"
    return _fastpath.Writer(
        tuple(name.encode() for name in environments), tuple(msgspec.json.encode(name) for name in environments),
        spans, tail, route, CHUNK_DOCS, CHUNK_BYTES,
    )  # fmt: skip


def _id_prefix(source_file: str) -> str:
    """A short stable key of a source file; a document's `_id` is `<key>:<line>`, well under the 512-byte limit."""
    digest = hashlib.blake2b(source_file.encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(digest).decode()


def _action_template(index: str, id_prefix: str) -> bytes:
    """The bulk action line of a document of `index` whose `_id` is `<id_prefix>:<line>`, `%d` for the line."""
    line = orjson.dumps({"index": {"_index": index, "_id": f"{id_prefix}:{{line}}"}}, option=orjson.OPT_APPEND_NEWLINE)
    return line.replace(b"%", b"%%").replace(b"{line}", b"%d")


def _bulk(es: Elasticsearch, chunks: Iterable[_Chunk]) -> Iterator[tuple[Counter[str], list[dict[str, Any]]]]:
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
            in_flight.append(pool.submit(_send_chunk, es, chunk))
        while in_flight:
            yield in_flight.popleft().result()


def _chunks(actions: Iterable[Action]) -> Iterator[_Chunk]:
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
            yield _Chunk(bytes(body), per_index)
            body, per_index, docs = bytearray(), Counter(), 0
    if docs:
        yield _Chunk(bytes(body), per_index)


@dataclass(frozen=True)
class _Chunk:
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


def _send_chunk(es: Elasticsearch, chunk: _Chunk) -> tuple[Counter[str], list[dict[str, Any]]]:
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
            response = _post_bulk(es, chunk.ndjson, filter_path)
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
        chunk = _Chunk(b"\n".join(retry) + b"\n", retry_per_index)
        _back_off(attempt, f"Elasticsearch asked to resend {retry_per_index.total()} document(s)")
        attempt += 1


def _post_bulk(es: Elasticsearch, body: bytes, filter_path: str) -> dict[str, Any]:
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


def _describe(error_item: dict[str, Any]) -> str:
    ((operation, result),) = error_item.items()
    return f"{operation} {result.get('_index')}/{result.get('_id')}: {result.get('status')} {result.get('error')}"


def _sweep_stale(
    es: Elasticsearch, alias: str, folder_prefix: str, load_id: str, foreign: list[dict[str, Any]]
) -> Counter[str]:
    """Delete every document from the landing folder written by another load, in our own indexes only (`foreign`
    says which indexes behind the alias are not); returns the deletions per index."""
    query = {
        "bool": {
            "filter": [{"prefix": {"source_file": folder_prefix}}],
            "must_not": [{"term": {"load_id": load_id}}, *foreign],
        }
    }
    pit = es.open_point_in_time(index=alias, keep_alive="2m", ignore_unavailable=True)["id"]
    try:

        def stale() -> Iterator[Action]:
            nonlocal pit
            dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
            search_after = None
            while True:
                page = es.search(
                    pit={"id": pit, "keep_alive": "2m"},
                    query=query,
                    sort=["_shard_doc"],
                    search_after=search_after,
                    size=SWEEP_PAGE,
                    source=False,
                    track_total_hits=False,
                )
                pit = page.get("pit_id", pit)
                hits = page["hits"]["hits"]
                for hit in hits:
                    index = hit["_index"]
                    yield index, dumps({"delete": {"_index": index, "_id": hit["_id"]}}, option=newline), None
                if len(hits) < SWEEP_PAGE:
                    return
                search_after = hits[-1]["sort"]

        deleted: Counter[str] = Counter()
        errors: list[dict[str, Any]] = []
        for chunk_deleted, chunk_errors in _bulk(es, _chunks(stale())):
            deleted.update(chunk_deleted)
            errors.extend(chunk_errors)
        if errors:
            raise LoadError(f"deleting {len(errors)} stale document(s) failed; first: {_describe(errors[0])}")
    finally:
        es.options(ignore_status=404).close_point_in_time(id=pit)
    if deleted:
        log.info("deleted %d stale document(s) from %s: %s", deleted.total(), folder_prefix, dict(deleted))
    return deleted


def _reconcile(
    es: Elasticsearch,
    settings: Settings,
    folder_prefix: str,
    load_id: str,
    report: LoadReport,
    foreign: list[dict[str, Any]],
) -> None:
    """Check Elasticsearch's counts: per partition exactly what this load wrote, and nothing else from the folder
    in our own indexes."""
    from_folder = {"prefix": {"source_file": folder_prefix}}
    mismatches = []
    for (day, environment), expected in sorted(report.partitions.items()):
        name = index_name(settings.index_prefix, day, environment)
        query = {"bool": {"filter": [from_folder, {"term": {"load_id": load_id}}]}}
        found = es.count(index=name, query=query)["count"]
        if found != expected:
            mismatches.append(f"{name}: {found} instead of {expected}")
    mine = {"bool": {"filter": [from_folder], "must_not": foreign}}
    total = es.count(index=settings.index_prefix, query=mine, ignore_unavailable=True)["count"]
    if total != report.loaded:
        mismatches.append(f"all indexes: {total} documents from {folder_prefix} instead of {report.loaded}")
    if mismatches:
        raise ReconciliationError(f"load {load_id} of {folder_prefix} does not reconcile: {'; '.join(mismatches)}")


def _by_partition(prefix: str, per_index: Mapping[str, int]) -> dict[Partition, int]:
    partitions: dict[Partition, int] = {}
    for name, count in sorted(per_index.items()):
        partition = parse_index_name(prefix, name)
        if partition is None:  # never reached while the sweep keeps to our own indexes: a guard, not a path
            raise LoadError(f"index {name} behind alias {prefix} is not a daily hit index")
        partitions[partition] = count
    return partitions


class _LoadSettings:
    """Tunes the indexes a load writes to with `LOAD_SETTINGS`; on exit puts their previous settings back.

    A failure to restore fails a load that went well; after a failed load it is logged, so the first error stays
    the one reported, and the next load of those indexes repairs them (it finds `LOAD_SETTINGS` there).
    """

    def __init__(self, es: Elasticsearch) -> None:
        self.es = es
        self.previous: dict[str, dict[str, str | None]] = {}
        template = Hit._index.to_dict()["settings"]
        # None resets a setting to Elasticsearch's default.
        self.template = {name: _text(template.get(name.removeprefix("index."))) for name in LOAD_SETTINGS}

    def apply(self, index: str) -> None:
        response = self.es.indices.get_settings(index=index, name=list(LOAD_SETTINGS), flat_settings=True)
        current = response[index]["settings"]
        previous = {name: current.get(name) for name in LOAD_SETTINGS}
        # Recorded before the change, so a change that fails half way is still undone.
        self.previous[index] = self.template if previous == LOAD_SETTINGS else previous
        self.es.indices.put_settings(index=index, settings=LOAD_SETTINGS)

    def created(self, index: str) -> None:
        """`index` was just created with `LOAD_SETTINGS`: it gets the template's settings afterwards."""
        self.previous[index] = self.template

    def __enter__(self) -> _LoadSettings:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        failed = []
        # One request per group of indexes to restore alike (usually all of them), not one per index.
        groups: dict[tuple[tuple[str, str | None], ...], list[str]] = {}
        for index, previous in self.previous.items():
            groups.setdefault(tuple(sorted(previous.items())), []).append(index)
        for previous, indexes in groups.items():
            for start in range(0, len(indexes), RESTORE_BATCH):
                names = ",".join(indexes[start : start + RESTORE_BATCH])
                try:
                    self.es.indices.put_settings(index=names, settings=dict(previous))
                except (ApiError, ESConnectionError, ConnectionTimeout) as error:
                    failed.append(f"{names}: {error}")
        if failed and error_type is None:
            raise LoadError(f"could not restore the index settings after the load: {'; '.join(failed)}")
        for failure in failed:
            log.error("could not restore the index settings of %s", failure)


def _text(value: object) -> str | None:
    return None if value is None else str(value).lower()
