"""Load a landing day into the daily environment indexes: exact on every re-run, full reload, reconciliation.

A load of landing folder D writes every good record under a deterministic `_id` (source file, line) with the
`load_id` of the attempt that wrote it, then deletes the documents whose `source_file` is under `D/` and whose
`load_id` is none of the load's: what the folder no longer contributes, in whichever day's index it went. Re-runs,
retries after a load cut off half way and reloads of corrected folders all end with exactly the folder's current
good records. Only server-core APIs are used (bulk, point in time, search_after, count), no `_delete_by_query`.

A load can be fanned out (the DAG does, over workers): `plan_load` splits the folder's files into shards of about
`HITS_SHARD_MB` (`shards.py`), `load_shard` writes one shard (a retried shard writes again, under a new attempt id),
and `finish_load`, given every shard's report, restores the index settings (`tuning.py`), merges the rejects
files, sweeps, reconciles (`sweep.py`) and reports the day. `load_landing_day` does all three in one process.

Speed: the usual records are parsed, checked and written onto the bulk bodies in C (`_fastpath.c`, built by
`pip install -e .`), byte for byte as the Python way writes them. The Python way does the rest (all of it where the
extension is not built): records parsed and checked mostly in C (msgspec, see `ingest.py`), each `_source` encoded
by msgspec and written onto the end of its bulk body (the action line from a template). Bodies are sized by bytes,
with several requests in flight while the next body is parsed (`bulk.py`). Indexes are created and tuned in the
background while records are parsed. While a load writes, its indexes do not refresh; their previous settings come
back when the load finishes, and when a shard fails. Replicas stay on: on a cluster, a node lost mid-load loses
nothing that was acknowledged.
"""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
import hashlib
import io
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import msgspec
import orjson
from elasticsearch import Elasticsearch

from hitmetrics.bulk import CHUNK_BYTES, CHUNK_DOCS, Chunk, LoadError, describe, send_chunks
from hitmetrics.config import Settings
from hitmetrics.indexes import (
    create_index,
    ensure_template,
    foreign_behind_alias,
    index_name,
)
from hitmetrics.ingest import (
    FastPath,
    LandingFile,
    LandingPath,
    MissingLandingDay,
    Reject,
    landing_root,
    parse_batches,
)
from hitmetrics.rejects import RejectsError, RejectsFile, merge_rejects
from hitmetrics.shards import (
    LoadPlan,
    LoadProgress,
    LoadReport,
    Partition,
    Shard,
    ShardReport,
    file_stamp,
    new_load_id,
    plan_load,
    split_into_shards,
)
from hitmetrics.sweep import ReconciliationError, _by_partition, _reconcile, _sweep_stale
from hitmetrics.tuning import LOAD_SETTINGS, IndexSettings, _template_settings, _Tuner, restore_settings
from hitmetrics.users import user_key

try:
    from hitmetrics import _fastpath
except ImportError:  # not built (no C compiler at install): the Python way does everything
    _fastpath = None

# What callers use from here; the plan and reports (`shards`), the index settings (`tuning`) and the sweep
# (`sweep`) are modules of their own.
__all__ = [
    "LOAD_SETTINGS",
    "LoadError",
    "LoadPlan",
    "LoadProgress",
    "LoadReport",
    "MissingLandingDay",
    "ReconciliationError",
    "Shard",
    "ShardReport",
    "TooManyRejects",
    "file_stamp",
    "finish_load",
    "load_landing_day",
    "load_shard",
    "new_load_id",
    "plan_load",
    "split_into_shards",
]

log = logging.getLogger(__name__)

# The bodies being built (one per index) hold at most about this much, checked after every batch of records.
BUFFERED_BYTES = 4 * CHUNK_BYTES
# Local days around the landing day that the C fast path routes itself (a record of any other day goes the Python way).
FAST_DAYS = range(-7, 3)
# glibc serves a block this large or larger with its own mmap, handed back to the system when freed. Its default
# threshold rises to the size of the largest block freed so far: after the first body, bodies come from the heap,
# whose freed holes fragment and grow the process with the length of the load (peak RSS 122 MiB at 1M hits, 143 at
# 10M; with the threshold fixed, 98 and 109: the bodies in flight). The price is the page faults of fresh memory
# for every body (one block per body: see `_Body.take`; the C body is one bytes object too).
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h
PROGRESS_EVERY_S = 10.0
LOGGED_REJECTS = 5  # the first rejects of a shard are in its log too; all of them are in the rejects file


class _Source(msgspec.Struct):
    """A document's `_source`, encoded by msgspec and written onto the end of a bulk body."""

    page: str
    datetime: dt.datetime
    user_id: int
    user_key: int
    environment: str
    source_file: str
    load_id: str


class TooManyRejects(LoadError):
    """More records were rejected than `HITS_MAX_REJECT_RATIO` allows; the good ones are loaded."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


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
    """Load `<landing>/<landing_day>/` in this process (one shard) so the indexes hold exactly the folder's good
    records; return the report.

    `landing` defaults to `settings.landing` and `rejects_root` to `settings.rejects_location` (each a folder or
    URL); pass an Airflow `ObjectStoragePath` to use a connection's credentials. `load_id` must be new for every
    attempt (default: generated). Raises `MissingLandingDay` when the folder does not exist (with `missing_ok`, a
    removed folder loads as empty, which deletes everything it contributed), `TooManyRejects` (after loading the
    good records) when the rejected share exceeds `settings.max_reject_ratio`, `ReconciliationError` when
    Elasticsearch's counts differ from what was loaded, `LoadError` for anything else that stops the load.
    """
    started = time.monotonic()
    plan = plan_load(settings, landing_day, landing=landing, load_id=load_id, missing_ok=missing_ok, shard_mb=None)
    (shard,) = plan.shards
    written = load_shard(es, settings, shard, landing=landing, rejects_root=rejects_root, progress=progress)
    return finish_load(es, settings, plan, [written], rejects_root=rejects_root, started=started)


def load_shard(
    es: Elasticsearch,
    settings: Settings,
    shard: Shard,
    *,
    landing: LandingPath | None = None,
    rejects_root: LandingPath | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
) -> ShardReport:
    """Write one shard of a load under a fresh attempt id (a retry writes the same ids again); rejects go to the
    shard's own file. The indexes stay tuned for loading until `finish_load`; when the shard fails, it puts back
    the settings it changed. Raises `LoadError` when the shard cannot be written whole."""
    started = time.monotonic()
    _fix_mmap_threshold()
    root = landing if landing is not None else landing_root(settings.landing)
    files = [LandingFile(root / name, name) for name in shard.files]
    vanished = [file.source_file for file in files if not file.path.is_file()]
    if vanished:
        raise LoadError(f"{', '.join(vanished)} vanished from the landing folder since the load was planned; "
                        "run the day again")  # fmt: skip
    attempt_id = f"{shard.load_id}.{shard.number}.{secrets.token_hex(3)}"
    report = ShardReport(shard=shard.number, attempt_id=attempt_id, files=len(files))
    way = "C fast path" if _fastpath else "Python way only: hitmetrics._fastpath is not built"
    log.info(
        "shard %d of %d of landing day %s: %d file(s), %.1f MiB (%s)",
        shard.number + 1, shard.count, shard.landing_day, len(files), shard.bytes / (1 << 20), way,
    )  # fmt: skip
    rejects_root = rejects_root if rejects_root is not None else landing_root(settings.rejects_location)
    rejects = RejectsFile(rejects_root / shard.landing_day.isoformat() / f"{attempt_id}.jsonl")
    ensure_template(es, settings)  # before any index is created, and current even if the mapping changed
    tuned = _Tuner(es, settings)
    try:
        written = _write_documents(es, settings, shard.landing_day, files, attempt_id, report, rejects, started,
                                   progress, tuned)  # fmt: skip
        report.rejects_file = rejects.commit()
    except BaseException as error:
        restore_settings(es, tuned.previous, failing=True)
        if isinstance(error, RejectsError):
            raise LoadError(str(error)) from error
        raise
    finally:
        rejects.discard()
    assert report.read == report.loaded + report.rejected, report
    report.written = dict(written)
    report.previous_settings = tuned.previous
    report.seconds = time.monotonic() - started
    log.info("%s", report.summary())
    return report


def finish_load(
    es: Elasticsearch,
    settings: Settings,
    plan: LoadPlan,
    shards: Sequence[ShardReport],
    *,
    rejects_root: LandingPath | None = None,
    started: float | None = None,
) -> LoadReport:
    """Finish `plan` from the report of every shard: put the index settings back, merge the shards' rejects into
    the day's file, delete what the folder no longer contributes, reconcile the counts and report the day.

    Raises `LoadError` when a shard's report is missing or repeated, `ReconciliationError` and `TooManyRejects` as
    `load_landing_day` does.
    """
    started = time.monotonic() if started is None else started
    numbers = sorted(report.shard for report in shards if report.attempt_id.startswith(f"{plan.load_id}."))
    if numbers != list(range(len(plan.shards))) or len(shards) != len(plan.shards):
        raise LoadError(f"load {plan.load_id} has {len(plan.shards)} shard(s), but {len(shards)} report(s) "
                        f"of which {numbers} are its own")  # fmt: skip
    previous: dict[str, IndexSettings] = {}
    template = _template_settings(settings)
    for report in shards:  # a shard that found the settings tuned by another knows only the template's
        for index, values in report.previous_settings.items():
            if previous.get(index, template) == template:
                previous[index] = values
    restore_settings(es, previous)

    report = LoadReport(landing_day=plan.landing_day, load_id=plan.load_id, shards=len(plan.shards))
    for shard in shards:
        report.files += shard.files
        report.read += shard.read
        report.loaded += shard.loaded
        report.rejected += shard.rejected
    rejects_root = rejects_root if rejects_root is not None else landing_root(settings.rejects_location)
    folder = rejects_root / plan.landing_day.isoformat()
    parts = [folder / f"{shard.attempt_id}.jsonl" for shard in shards if shard.rejects_file]
    try:
        report.rejects_file = merge_rejects(parts, folder / f"{plan.load_id}.jsonl")
        # What attempts superseded by a retry left (their reports are not given): this load's, hence ours.
        if folder.exists():
            for pattern in (f"{plan.load_id}.*.jsonl", f".{plan.load_id}.*.jsonl.partial"):
                for leftover in folder.glob(pattern):
                    leftover.unlink(missing_ok=True)
    except (OSError, RejectsError) as error:
        raise LoadError(str(error)) from error

    alias = settings.index_prefix
    folder_prefix = f"{plan.landing_day.isoformat()}/"
    # What the load replaces: the folder, or (incremental) its files that it loaded.
    stamps = plan.stamps()
    if plan.incremental:
        scope, what = {"terms": {"source_file": sorted(stamps)}}, f"{len(stamps)} file(s) of {folder_prefix}"
    else:
        scope, what = {"prefix": {"source_file": folder_prefix}}, folder_prefix
    # The manifest records each file as it was read (a file changed since the plan was read as it is now).
    report.incremental = plan.incremental
    report.stamps = {**stamps, **{name: stamp for shard in shards for name, stamp in shard.stamps.items()}}
    attempts = [shard.attempt_id for shard in shards]
    es.indices.refresh(index=alias, ignore_unavailable=True)
    foreign = foreign_behind_alias(es, settings)  # the sweep and the count keep out of what is not ours
    deleted = _sweep_stale(es, alias, scope, what, attempts, foreign)
    es.indices.refresh(index=alias, ignore_unavailable=True)
    report.deleted = deleted.total()
    written: Counter[str] = Counter()
    for shard in shards:
        written.update(shard.written)
    touched = {name: written.get(name, 0) for name in [*written, *deleted]}
    report.partitions = _by_partition(settings.index_prefix, touched)
    _reconcile(es, settings, scope, what, attempts, report, foreign)

    report.seconds = time.monotonic() - started
    if len(shards) > 1:
        for shard in shards:
            log.info("%s", shard.summary())
    log.info("%s", report.summary())
    if report.reject_ratio > settings.max_reject_ratio:
        raise TooManyRejects(
            f"{report.rejected} of {report.read} records of landing day {plan.landing_day} were rejected "
            f"({report.reject_ratio:.2%}, more than HITS_MAX_REJECT_RATIO={settings.max_reject_ratio:g}); "
            f"the {report.loaded} good ones are loaded; see {report.rejects_file}",
            report,
        )
    return report


def _write_documents(
    es: Elasticsearch,
    settings: Settings,
    landing_day: dt.date,
    files: list[LandingFile],
    load_id: str,
    report: ShardReport,
    rejects: RejectsFile,
    started: float,
    progress: Callable[[LoadProgress], None] | None,
    tuned: _Tuner,
) -> Counter[str]:
    """Bulk-index every good record, rejects to `rejects`; returns the documents written per index.

    Each index is tuned for loading (`tuned`) before its first document is sent.
    """
    written: Counter[str] = Counter()
    files_done = 0
    last_progress = started

    def chunks() -> Iterator[Chunk]:
        """The bulk bodies, built in place: no per-record objects outlive a record (see `chunks_of`)."""
        nonlocal files_done
        tz, prefix = settings.tz, settings.index_prefix
        utc = settings.timezone == "UTC"
        environments = frozenset(settings.environments)
        environment_names = sorted(environments)  # the C code's environment numbers
        encode = msgspec.json.Encoder().encode
        new_body = _fastpath.Body if _fastpath else _Body
        days, spans = _day_spans(landing_day, tz)
        # Each index is created and tuned in the background while records are parsed; a chunk is sent only
        # once its indexes are ready (see `bulk.send_chunk`).
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

        def take(index: str) -> Chunk:
            """The index's body as a chunk; the body starts again empty."""
            body = bodies[index]
            docs = body.docs
            report.read += docs
            return Chunk(body.take(), Counter({index: docs}), [ready_of[index]])

        # One body per index: a bulk request to a single shard is cheaper for the node than one split across many.
        # Records of many days (a backfill) would leave many bodies half full: past `BUFFERED_BYTES` in all, the
        # largest are sent.
        bodies: dict[str, Body] = {}
        for file in files:
            source_file = file.source_file
            target = router(_id_prefix(source_file))
            fast = _fast_writer(source_file, load_id, environment_names, days, spans, target) if _fastpath else None
            # A file changed while it is read (a shipper still writing, a file replaced) would load as a mix of two
            # versions: its stamp before and after must agree, and the one read goes into the manifest.
            before = file_stamp(file.path.stat())
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
                    user = item.user_id
                    body.write(
                        encode(_Source(item.page, instant, user, user_key(user), environment, source_file, load_id))
                    )
                    body.write(b"\n")
                    body.docs += 1
                    if _full(body):
                        yield take(index)
                for index in [index for index, body in bodies.items() if _full(body)]:
                    yield take(index)
                while sum(body.tell() for body in bodies.values()) >= BUFFERED_BYTES:
                    yield take(max(bodies, key=lambda name: bodies[name].tell()))
            after = file_stamp(file.path.stat())
            if after != before:
                raise LoadError(f"{source_file} changed while it was read (size and time {before}, then {after}): "
                                "the shard fails, and its retry reads one version of it whole")  # fmt: skip
            report.stamps[source_file] = before
            files_done += 1
        for index, body in bodies.items():
            if body.docs:
                yield take(index)

    errors: list[dict[str, Any]] = []
    # Leaving this block waits for index preparations still running, so `tuned` knows all it must restore.
    with ThreadPoolExecutor(1, thread_name_prefix="hits-index") as preparer:
        for chunk_written, chunk_errors in send_chunks(es, chunks()):
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
            f"Elasticsearch refused {len(errors)} document(s); first: {describe(errors[0])}. "
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
