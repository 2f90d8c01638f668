"""Load a landing day into the daily environment indexes: exact on every re-run, full reload, reconciliation.

A load of landing folder D writes every good record under a deterministic `_id` (source file, line) with the
`load_id` of the attempt that wrote it, then deletes the documents whose `source_file` is under `D/` and whose
`load_id` is none of the load's: what the folder no longer contributes, in whichever day's index it went. Re-runs,
retries after a load cut off half way and reloads of corrected folders all end with exactly the folder's current
good records. Only server-core APIs are used (bulk, point in time, search_after, count), no `_delete_by_query`.

A load can be fanned out (the DAG does, over workers): `plan_load` splits the folder's files into shards of about
`HITS_SHARD_MB`, `load_shard` writes one shard (a retried shard writes again, under a new attempt id), and
`finish_load`, given every shard's report, restores the index settings, merges the rejects files, sweeps,
reconciles and reports the day. `load_landing_day` does all three in one process.

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
import heapq
import io
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
import orjson
from elasticsearch import ApiError, ConnectionTimeout, Elasticsearch
from elasticsearch import ConnectionError as ESConnectionError

from hitmetrics.bulk import CHUNK_BYTES, CHUNK_DOCS, Action, Chunk, LoadError, chunks_of, describe, send_chunks
from hitmetrics.config import Settings
from hitmetrics.indexes import (
    create_index,
    ensure_template,
    foreign_behind_alias,
    index_name,
    index_settings,
    parse_index_name,
)
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
from hitmetrics.rejects import RejectsError, RejectsFile, merge_rejects
from hitmetrics.users import user_key

try:
    from hitmetrics import _fastpath
except ImportError:  # not built (no C compiler at install): the Python way does everything
    _fastpath = None

__all__ = [
    "LoadError",
    "LoadPlan",
    "LoadProgress",
    "LoadReport",
    "MissingLandingDay",
    "ReconciliationError",
    "ShardReport",
    "TooManyRejects",
    "finish_load",
    "load_landing_day",
    "load_shard",
    "new_load_id",
    "plan_load",
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
SWEEP_PAGE = 5_000

# Index settings while a load writes: no refresh, the usual bulk-load tuning (replicas are left as they are, see
# above). The settings they replace are put back afterwards; settings found equal to these were left by a load
# that was killed before it could restore them, and are replaced by the template's.
LOAD_SETTINGS = {"index.refresh_interval": "-1"}

RESTORE_BATCH = 50  # index names per settings request, well under any URL length limit

LOAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")

Partition = tuple[dt.date, str]
IndexSettings = dict[str, str | None]


class _Source(msgspec.Struct):
    """A document's `_source`, encoded by msgspec and written onto the end of a bulk body."""

    page: str
    datetime: dt.datetime
    user_id: int
    user_key: int
    environment: str
    source_file: str
    load_id: str


class ReconciliationError(LoadError):
    """Elasticsearch does not hold exactly what was loaded."""


class TooManyRejects(LoadError):
    """More records were rejected than `HITS_MAX_REJECT_RATIO` allows; the good ones are loaded."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Shard:
    """One shard of a load: some of the landing day's files (`source_file` names), for one task to write."""

    landing_day: dt.date
    load_id: str
    number: int  # from 0; logs count from 1
    count: int  # shards of the load
    files: tuple[str, ...]
    bytes: int
    stamps: tuple[str, ...] = ()  # each file's size and modification time when planned (`file_stamp`)
    incremental: bool = False  # the load is of some of the folder's files (`plan_load`'s `loaded`), not all

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values, for XCom."""
        return {**self.__dict__, "landing_day": self.landing_day.isoformat(), "files": list(self.files),
                "stamps": list(self.stamps)}  # fmt: skip

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Shard:
        return cls(**{**values, "landing_day": dt.date.fromisoformat(values["landing_day"]),
                      "files": tuple(values["files"]), "stamps": tuple(values.get("stamps", ()))})  # fmt: skip


@dataclass(frozen=True)
class LoadPlan:
    """A landing day's load: its id and its files in shards of about even bytes.

    There is always at least one shard, empty for an empty or (with `missing_ok`) removed folder: finishing it
    removes what the folder contributed before.
    """

    landing_day: dt.date
    load_id: str
    shards: tuple[Shard, ...]

    @classmethod
    def of_shards(cls, shards: Sequence[Shard]) -> LoadPlan:
        """The plan the shards (all of them, in any order) were cut from."""
        ordered = tuple(sorted(shards, key=lambda shard: shard.number))
        first = ordered[0]
        if [shard.number for shard in ordered] != list(range(first.count)) or any(
            (shard.landing_day, shard.load_id) != (first.landing_day, first.load_id) for shard in ordered
        ):
            raise LoadError(f"the shards given are not the {first.count} of load {first.load_id}")
        return cls(landing_day=first.landing_day, load_id=first.load_id, shards=ordered)

    @property
    def incremental(self) -> bool:
        return self.shards[0].incremental

    def stamps(self) -> dict[str, str]:
        """Each planned file's stamp (`file_stamp`), by `source_file`."""
        return {name: stamp for shard in self.shards for name, stamp in zip(shard.files, shard.stamps, strict=True)}


@dataclass
class ShardReport:
    """What one attempt at one shard wrote. Always `read == loaded + rejected`."""

    shard: int  # its `Shard.number`
    attempt_id: str  # the `load_id` on every document it wrote
    files: int = 0
    read: int = 0
    loaded: int = 0
    rejected: int = 0
    rejects_file: str | None = None  # a path or URL; merged into the day's by `finish_load`
    written: dict[str, int] = field(default_factory=dict)  # documents per index
    # The settings each index had before this shard tuned it, for `finish_load` to put back.
    previous_settings: dict[str, IndexSettings] = field(default_factory=dict)
    seconds: float = 0.0
    stamps: dict[str, str] = field(default_factory=dict)  # each file's `file_stamp` as it was read (before and after)

    def summary(self) -> str:
        return (
            f"shard {self.shard + 1}: {self.files} file(s), read {self.read}, loaded {self.loaded}, "
            f"rejected {self.rejected}; {self.seconds:.1f}s (attempt {self.attempt_id})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly values, for XCom."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ShardReport:
        return cls(**values)


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
    shards: int = 1
    incremental: bool = False  # only some files of the folder were loaded (new or changed ones: `plan_load`)
    stamps: dict[str, str] = field(default_factory=dict)  # each loaded file's `file_stamp` as it was read

    @property
    def reject_ratio(self) -> float:
        return self.rejected / self.read if self.read else 0.0

    def summary(self) -> str:
        where = f", rejects in {self.rejects_file}" if self.rejects_file else ""
        shards = f" in {self.shards} shards" if self.shards > 1 else ""
        return (
            f"landing day {self.landing_day}: {self.files} file(s){shards}, read {self.read}, loaded {self.loaded}, "
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


def plan_load(
    settings: Settings,
    landing_day: dt.date,
    *,
    landing: LandingPath | None = None,
    load_id: str | None = None,
    missing_ok: bool = False,
    shard_mb: float | None = -1,
    loaded: Mapping[str, str] | None = None,
) -> LoadPlan:
    """List the landing day's files and split them into shards of about `shard_mb` MiB (default
    `settings.shard_mb`; None: one shard), whole files each, largest first onto the lightest shard.

    With `loaded` (the stamp of each file already loaded, by `source_file`: the manifest), the load is incremental:
    only the files that are new or whose stamp changed are planned, and finishing it replaces exactly their
    documents (the rest of the folder is left as it is).

    A file is never split: a gzip stream cannot be entered in the middle, a CSV record may span lines and a
    document's id is its file and line. Raises `MissingLandingDay` (unless `missing_ok`) and
    `UnreadableLandingEntries` before anything is written.
    """
    load_id = load_id or new_load_id()
    if not LOAD_ID.match(load_id):
        raise ValueError(f"load id {load_id!r} must be 1-128 letters, digits or ._:+- (starting with one of the first)")
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
    stats = {file.source_file: file.path.stat() for file in files}
    stamps = {name: file_stamp(stat) for name, stat in stats.items()}
    if loaded is not None:
        stats = {name: stat for name, stat in stats.items() if loaded.get(name) != stamps[name]}
        log.info("%d file(s) loaded before and unchanged, %d new or changed", len(stamps) - len(stats), len(stats))
    sizes = [(name, stat.st_size) for name, stat in stats.items()]
    shard_mb = settings.shard_mb if shard_mb == -1 else shard_mb
    split = split_into_shards(sizes, None if shard_mb is None else max(1, int(shard_mb * (1 << 20))))
    shards = tuple(
        Shard(landing_day, load_id, number, len(split), tuple(names), size, tuple(stamps[n] for n in names),
              incremental=loaded is not None)
        for number, (names, size) in enumerate(split)
    )  # fmt: skip
    log.info(
        "load %s of landing day %s: %d file(s), %.1f MiB under %s, in %d shard(s)",
        load_id, landing_day, len(sizes), sum(shard.bytes for shard in shards) / (1 << 20), root, len(shards),
    )  # fmt: skip
    return LoadPlan(landing_day, load_id, shards)


def file_stamp(stat: Any) -> str:
    """A file's size and modification time (`<bytes>:<ns>`): a file whose stamp is unchanged is not loaded again by
    an incremental load. Object storage gives the time its object was written, to the second only, so its entity
    tag (a digest of the content on S3) is added where there is one (`<bytes>:<ns>:<tag digest>`): an object replaced
    within the same second by one of the same size is still a changed file."""
    nanoseconds = getattr(stat, "st_mtime_ns", None)
    if nanoseconds is None:
        nanoseconds = round(float(getattr(stat, "st_mtime", 0) or 0) * 1e9)
    tag = (stat.get("ETag") or stat.get("etag")) if isinstance(stat, Mapping) else None
    stamp = f"{stat.st_size}:{nanoseconds}"
    if tag:  # as a digest: the stamp stays within the manifest's 64 characters (a multipart tag is longer)
        stamp += ":" + hashlib.blake2b(str(tag).encode(), digest_size=8).hexdigest()
    return stamp


def split_into_shards(sizes: Sequence[tuple[str, int]], shard_bytes: int | None) -> list[tuple[list[str], int]]:
    """(names, bytes) of shards of about `shard_bytes` each (None: one shard), at least one, at most one per file;
    each file goes, largest first, onto the shard with the fewest bytes so far (names sorted within a shard)."""
    total = sum(size for _, size in sizes)
    count = 1 if not shard_bytes else max(1, min(len(sizes), -(-total // shard_bytes)))
    heap = [(0, shard, []) for shard in range(count)]
    for name, size in sorted(sizes, key=lambda item: (-item[1], item[0])):
        weight, shard, names = heapq.heappop(heap)
        names.append(name)
        heapq.heappush(heap, (weight + size, shard, names))
    return [(sorted(names), weight) for weight, _, names in sorted(heap, key=lambda item: item[1])]


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


def _sweep_stale(
    es: Elasticsearch,
    alias: str,
    scope: dict[str, Any],
    what: str,
    attempts: Sequence[str],
    foreign: list[dict[str, Any]],
) -> Counter[str]:
    """Delete every document of the load's `scope` (its landing folder, or its files) written by anything but the
    load's shard `attempts` (another load, a shard's failed attempt), in our own indexes only (`foreign` says which
    indexes behind the alias are not); returns the deletions per index."""
    query = {
        "bool": {
            "filter": [scope],
            "must_not": [{"terms": {"load_id": list(attempts)}}, *foreign],
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
                    allow_partial_search_results=False,  # a shard that cannot answer must not hide its stale docs
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
        for chunk_deleted, chunk_errors in send_chunks(es, chunks_of(stale())):
            deleted.update(chunk_deleted)
            errors.extend(chunk_errors)
        if errors:
            raise LoadError(f"deleting {len(errors)} stale document(s) failed; first: {describe(errors[0])}")
    finally:
        es.options(ignore_status=404).close_point_in_time(id=pit)
    if deleted:
        log.info("deleted %d stale document(s) from %s: %s", deleted.total(), what, dict(deleted))
    return deleted


def _reconcile(
    es: Elasticsearch,
    settings: Settings,
    scope: dict[str, Any],
    what: str,
    attempts: Sequence[str],
    report: LoadReport,
    foreign: list[dict[str, Any]],
) -> None:
    """Check Elasticsearch's counts: per partition exactly what the load's shard `attempts` wrote, and nothing else
    from the load's `scope` (its folder, or its files) in our own indexes."""
    mismatches = []
    for (day, environment), expected in sorted(report.partitions.items()):
        name = index_name(settings.index_prefix, day, environment)
        query = {"bool": {"filter": [scope, {"terms": {"load_id": list(attempts)}}]}}
        found = _count(es, index=name, query=query)
        if found != expected:
            mismatches.append(f"{name}: {found} instead of {expected}")
    mine = {"bool": {"filter": [scope], "must_not": foreign}}
    total = _count(es, index=settings.index_prefix, query=mine, ignore_unavailable=True)
    if total != report.loaded:
        mismatches.append(f"all indexes: {total} documents from {what} instead of {report.loaded}")
    if mismatches:
        raise ReconciliationError(f"load {report.load_id} of {what} does not reconcile: {'; '.join(mismatches)}")


def _count(es: Elasticsearch, **request: Any) -> int:
    """A count that every shard answered (a count missing a shard whose node just died would be short)."""
    response = es.count(**request)
    if response["_shards"].get("failed"):
        raise ReconciliationError(f"{response['_shards']['failed']} shard(s) could not be counted: retry the load")
    return response["count"]


def _by_partition(prefix: str, per_index: Mapping[str, int]) -> dict[Partition, int]:
    partitions: dict[Partition, int] = {}
    for name, count in sorted(per_index.items()):
        partition = parse_index_name(prefix, name)
        if partition is None:  # never reached while the sweep keeps to our own indexes: a guard, not a path
            raise LoadError(f"index {name} behind alias {prefix} is not a daily hit index")
        partitions[partition] = count
    return partitions


def _template_settings(settings: Settings) -> IndexSettings:
    """The template's values of `LOAD_SETTINGS` (None: Elasticsearch's default)."""
    template = index_settings(settings)
    return {name: _text(template.get(name.removeprefix("index."))) for name in LOAD_SETTINGS}


class _Tuner:
    """Tunes the indexes a shard writes to with `LOAD_SETTINGS`, recording each one's previous settings."""

    def __init__(self, es: Elasticsearch, settings: Settings) -> None:
        self.es = es
        self.previous: dict[str, IndexSettings] = {}
        self.template = _template_settings(settings)

    def apply(self, index: str) -> None:
        response = self.es.indices.get_settings(index=index, name=list(LOAD_SETTINGS), flat_settings=True)
        current = response.body.get(index, {}).get("settings", {})  # absent when none of them is set
        previous = {name: current.get(name) for name in LOAD_SETTINGS}
        # Recorded before the change, so a change that fails half way is still undone. Settings equal to the load's
        # were left by another shard of this load or by a killed one: the template's come back.
        self.previous[index] = self.template if previous == LOAD_SETTINGS else previous
        self.es.indices.put_settings(index=index, settings=LOAD_SETTINGS)

    def created(self, index: str) -> None:
        """`index` was just created with `LOAD_SETTINGS`: it gets the template's settings afterwards."""
        self.previous[index] = self.template


def restore_settings(es: Elasticsearch, previous: Mapping[str, IndexSettings], *, failing: bool = False) -> None:
    """Put each index's `previous` settings back, one request per group of indexes alike.

    A failure to restore fails a load that went well; while a load is `failing` it is logged, so the first error
    stays the one reported, and the next load of those indexes repairs them (it finds `LOAD_SETTINGS` there).
    """
    failed = []
    groups: dict[tuple[tuple[str, str | None], ...], list[str]] = {}
    for index, values in previous.items():
        groups.setdefault(tuple(sorted(values.items())), []).append(index)
    for values, names in groups.items():
        for start in range(0, len(names), RESTORE_BATCH):
            batch = ",".join(names[start : start + RESTORE_BATCH])
            try:
                es.indices.put_settings(index=batch, settings=dict(values))
            except (ApiError, ESConnectionError, ConnectionTimeout) as error:
                failed.append(f"{batch}: {error}")
    if failed and not failing:
        raise LoadError(f"could not restore the index settings after the load: {'; '.join(failed)}")
    for failure in failed:
        log.error("could not restore the index settings of %s", failure)


def _text(value: object) -> str | None:
    return None if value is None else str(value).lower()
