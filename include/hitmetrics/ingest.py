"""Find a landing day's files and parse them, streaming, into valid records and rejects.

The landing root is a `pathlib.Path` or any pathlib-like object (`universal_pathlib`'s `UPath`, Airflow's
`ObjectStoragePath`) offering `/`, `rglob` (or `iterdir`), `is_dir()` and `open("rb")`.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, Protocol

import orjson

from hitmetrics.model import FIELDS, HitRecord, InvalidHit, validate_hit, validate_text_hit

FORMATS = (".jsonl", ".ndjson", ".csv")
# A valid hit is a few KB at most; a longer line is rejected without ever holding more than this in memory.
MAX_LINE_BYTES = 1 << 20
MAX_RAW_BYTES = 4096
_BOM = b"\xef\xbb\xbf"


class LandingPath(Protocol):
    """The subset of the pathlib API the ingest needs."""

    name: str

    def __truediv__(self, other: str) -> LandingPath: ...
    def is_dir(self) -> bool: ...
    def iterdir(self) -> Iterator[LandingPath]: ...
    def open(self, mode: str) -> IO[bytes]: ...


class MissingLandingDay(FileNotFoundError):
    """The landing folder of a day does not exist."""


class ParsedHit(NamedTuple):
    record: HitRecord
    source_file: str
    line: int


class Reject(NamedTuple):
    source_file: str
    line: int
    reason: str
    raw: str


@dataclass(frozen=True)
class LandingFile:
    """A file to load: where it is and its `source_file` name (relative to the landing root)."""

    path: LandingPath
    source_file: str

    @property
    def is_csv(self) -> bool:
        return self.source_file.removesuffix(".gz").endswith(".csv")

    @property
    def is_gzip(self) -> bool:
        return self.source_file.endswith(".gz")


def landing_root(location: str) -> LandingPath:
    """The landing root for `HITS_LANDING`: a local folder, or a URL (s3://, gs://, file://, memory://...)."""
    if "://" not in location:
        return Path(location)
    from upath import UPath  # fsspec's filesystems load lazily, only when a URL is used

    return UPath(location)


def find_day_files(landing: LandingPath, day: dt.date) -> tuple[list[LandingFile], list[str]]:
    """The day's loadable files at any depth, sorted, and the names of the other files found there (ignored).

    Raises `MissingLandingDay` when `<landing>/<YYYY-MM-DD>/` is not a folder.
    """
    folder = landing / day.isoformat()
    if not folder.is_dir():
        raise MissingLandingDay(f"landing folder {folder} does not exist for {day.isoformat()}")
    files, ignored = [], []
    for path, relative in _walk(folder):
        source_file = f"{day.isoformat()}/{relative}"
        if relative.removesuffix(".gz").endswith(FORMATS):
            files.append(LandingFile(path, source_file))
        else:
            ignored.append(source_file)
    return sorted(files, key=lambda f: f.source_file), sorted(ignored)


def _walk(folder: LandingPath) -> Iterator[tuple[LandingPath, str]]:
    """(file, path relative to `folder` with `/` separators) for every file below `folder`."""
    if hasattr(folder, "rglob"):
        for path in folder.rglob("*"):
            if not path.is_dir():
                yield path, path.relative_to(folder).as_posix()
        return
    for child in folder.iterdir():
        if child.is_dir():
            yield from ((path, f"{child.name}/{relative}") for path, relative in _walk(child))
        else:
            yield child, child.name


def parse_file(file: LandingFile, environments: Collection[str]) -> Iterator[ParsedHit | Reject]:
    """Every record of one file, in order, as a `ParsedHit` or a `Reject`. Blank lines are not records.

    A file that stops being readable part way (truncated gzip) yields one last reject for the rest.
    """
    with file.path.open("rb") as raw_stream:
        stream = gzip.GzipFile(fileobj=raw_stream) if file.is_gzip else raw_stream
        lines = _Lines(stream)
        try:
            if file.is_csv:
                yield from _parse_csv(file.source_file, lines, environments)
            else:
                yield from _parse_json_lines(file.source_file, lines, environments)
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            yield Reject(file.source_file, lines.number + 1, f"the rest of the file is unreadable: {error}", "")


class _Lines:
    """Numbered lines of a binary stream, each at most `MAX_LINE_BYTES` (longer ones are cut and flagged)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.number = 0

    def __iter__(self) -> Iterator[tuple[int, bytes, bool]]:
        """(line number, line without its end-of-line, whether it was too long)."""
        readline = self.stream.readline
        while line := readline(MAX_LINE_BYTES):
            self.number += 1
            too_long = not line.endswith(b"\n") and len(line) == MAX_LINE_BYTES
            if too_long:
                while (rest := readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
            if self.number == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            yield self.number, line.rstrip(b"\r\n"), too_long


def _raw_text(data: bytes) -> str:
    """A reject's raw text: invalid bytes escaped, cut at `MAX_RAW_BYTES` so a rejects file stays readable."""
    text = data[:MAX_RAW_BYTES].decode("utf-8", "backslashreplace")
    return text + "…" if len(data) > MAX_RAW_BYTES else text


def _parse_json_lines(source_file: str, lines: _Lines, environments: Collection[str]) -> Iterator[ParsedHit | Reject]:
    loads = orjson.loads
    for number, line, too_long in lines:
        if too_long:
            yield Reject(source_file, number, f"line is longer than {MAX_LINE_BYTES} bytes", _raw_text(line))
            continue
        try:
            raw = loads(line)
        except orjson.JSONDecodeError as error:
            if not line.strip():
                continue
            yield Reject(source_file, number, f"invalid JSON: {error}", _raw_text(line))
            continue
        if type(raw) is not dict:
            yield Reject(source_file, number, "not a JSON object", _raw_text(line))
            continue
        try:
            yield ParsedHit(validate_hit(raw, environments), source_file, number)
        except InvalidHit as error:
            yield Reject(source_file, number, str(error), _raw_text(line))


def _parse_csv(source_file: str, lines: _Lines, environments: Collection[str]) -> Iterator[ParsedHit | Reject]:
    # csv pulls as many physical lines as a record needs (quoted newlines): keep them for the reject's raw text,
    # with the first problem found while decoding them.
    pending: list[bytes] = []
    first_line = 0
    problem = ""

    def text_lines() -> Iterator[str]:
        nonlocal first_line, problem
        for number, line, too_long in lines:
            if not pending:
                first_line = number
            pending.append(line)
            if too_long:
                problem = problem or f"line is longer than {MAX_LINE_BYTES} bytes"
                yield "\n"  # never hand csv a cut line: an open quote would swallow the lines after it
                continue
            try:
                yield line.decode() + "\n"
            except UnicodeDecodeError:
                problem = problem or "not valid UTF-8"
                yield line.decode("utf-8", "replace") + "\n"

    reader = csv.reader(text_lines(), strict=True)
    header: dict[str, int] | None = None
    header_problem = ""
    width = 0
    while True:
        try:
            row = next(reader)
            reason = problem
        except StopIteration:
            break
        except csv.Error as error:
            row, reason = [], problem or f"invalid CSV: {error}"
        number, raw, problem = first_line, _raw_text(b"\n".join(pending)), ""
        pending.clear()
        if not reason and not any(cell.strip() for cell in row):
            continue
        if header is None and not header_problem:
            header, header_problem = _read_header(row, reason)
            if header is not None:
                width = len(row)
                continue
        reason = reason or header_problem
        if not reason and len(row) != width:
            reason = f"{len(row)} fields where the header has {width}"
        if not reason:
            try:
                yield ParsedHit(
                    validate_text_hit({name: row[i] for name, i in header.items()}, environments), source_file, number
                )
                continue
            except InvalidHit as error:
                reason = str(error)
        yield Reject(source_file, number, reason, raw)


def _read_header(row: list[str], problem: str) -> tuple[dict[str, int] | None, str]:
    """Column positions of the four fields, or why the file's first record is not a usable header."""
    names = [cell.strip() for cell in row]
    missing = [name for name in FIELDS if name not in names]
    if problem or missing:
        detail = problem or f"missing {', '.join(missing)}"
        return None, (
            f"the file's first line is not a CSV header naming {', '.join(FIELDS)} ({detail}); "
            "every line of the file is rejected"
        )
    return {name: names.index(name) for name in FIELDS}, ""
