"""A load's plan and its reports: the landing day's files in shards of whole files with their stamps, and what
each attempt at a shard, and the whole load, wrote."""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hitmetrics.bulk import LoadError
from hitmetrics.config import Settings
from hitmetrics.ingest import LandingPath, MissingLandingDay, find_day_files, landing_root
from hitmetrics.tuning import IndexSettings

log = logging.getLogger(__name__)

# A (local day, environment) of the indexes.
Partition = tuple[dt.date, str]

LOAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


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
