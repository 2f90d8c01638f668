"""Find a landing day's files and parse them, streaming, into valid records and rejects.

Speed: files are read in blocks split in C; a usual record takes a fast path (a JSON line is decoded and checked
by msgspec in one call, a CSV line without quotes is split on commas) and only anything else the full way
(the same msgspec decoder with the fields taken as they are, then `validate_hit`; the csv module), which accepts
it or says why not. The fast paths only ever accept what the full way accepts, and read it alike
(tests/unit/test_verdicts.py compares every path on generated records and files). The loader can pass a
`FastPath` of its own, which takes usual records straight from the lines (see `parse_batches`).

The landing root is a `pathlib.Path` or any pathlib-like object (`universal_pathlib`'s `UPath`, Airflow's
`ObjectStoragePath`) offering `/`, `rglob` (or `iterdir`), `is_dir()`, `is_file()` and `open("rb")`.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import itertools
import os
import re
import stat
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any, NamedTuple, Protocol

import msgspec

from hitmetrics.gunzip import Gunzip
from hitmetrics.model import (
    FIELDS,
    MAX_PAGE_LENGTH,
    MAX_USER_ID,
    HitRecord,
    InvalidHit,
    plain_utc,
    text_user_id,
    validate_hit,
    validate_text_hit,
)

FORMATS = (".jsonl", ".ndjson", ".csv")
# A valid hit is a few KB at most; a longer line is rejected without ever holding more than this in memory.
MAX_LINE_BYTES = 1 << 20
MAX_RAW_BYTES = 4096
# JSON values nested deeper than this make a line a reject: a hit is flat, and a limit of its own keeps the verdict
# the same however deep the caller's stack is (the decoder's recursion limit is the interpreter's).
MAX_JSON_DEPTH = 64
BLOCK_BYTES = 1 << 16
BATCH_RECORDS = 1024
_BOM = b"\xef\xbb\xbf"
# Single bytes as ints: `int in bytes` is a memchr, many times faster than looking for a one-byte string.
_QUOTE, _CR, _NUL = ord('"'), ord("\r"), 0


class LandingPath(Protocol):
    """The subset of the pathlib API the ingest needs."""

    name: str

    def __truediv__(self, other: str) -> LandingPath: ...
    def is_dir(self) -> bool: ...
    def is_file(self) -> bool: ...
    def iterdir(self) -> Iterator[LandingPath]: ...
    def open(self, mode: str) -> IO[bytes]: ...


class FastPath(Protocol):
    """Takes usual records straight from a block of lines (the loader's C writer, `hitmetrics._fastpath.Writer`).

    A take goes from `position` on and returns the position of the first line it did not take, which the parser
    then decides, or stops early after a record that left `full` set. It takes only records the parser would accept.
    """

    full: int

    def take_json(self, lines: list[bytes], position: int, first_number: int) -> int: ...
    def take_csv(self, lines: list[bytes], position: int, first_number: int) -> int: ...
    def csv_columns(self, width: int, page: int, datetime: int, user_id: int, environment: int) -> None: ...


class MissingLandingDay(FileNotFoundError):
    """The landing folder of a day does not exist."""


class UnreadableLandingEntries(ValueError):
    """Entries named like hit files that are not readable files (a named pipe, a dangling link, a link loop).

    The day cannot be loaded exactly without them, and a retry would meet them again: the message names each one.
    """


class ParsedHit(msgspec.Struct, frozen=True):
    """A valid record and where it came from. Flat, and a msgspec struct: the loader reads millions of them."""

    page: str
    datetime: dt.datetime
    user_id: int
    environment: str
    source_file: str
    line: int

    @property
    def record(self) -> HitRecord:
        return HitRecord(self.page, self.datetime, self.user_id, self.environment)


class _JsonHit(msgspec.Struct):
    """A JSON record decoded and checked in one C call (the fast path); other keys are ignored, as by
    `validate_hit`. Its constraints are `validate_hit`'s (and a page without NUL, checked after), so a record it
    takes is one `validate_hit` takes."""

    page: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PAGE_LENGTH)]
    datetime: str
    user_id: Annotated[int, msgspec.Meta(ge=0, le=MAX_USER_ID)]
    environment: str


_decode_json_hit = msgspec.json.Decoder(_JsonHit).decode


class _AnyHit(msgspec.Struct):
    """A JSON record decoded for the full way: the four fields as they are, for `validate_hit` to judge. Other keys
    are skipped by the same decoder as in the fast path, so both read every line alike (the last of repeated keys
    counts)."""

    page: Any = msgspec.UNSET
    datetime: Any = msgspec.UNSET
    user_id: Any = msgspec.UNSET
    environment: Any = msgspec.UNSET


_decode_any_hit = msgspec.json.Decoder(_AnyHit).decode
# A JSON string, to leave out of a depth count; brackets outside strings open and close values.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")


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

    Raises `MissingLandingDay` when `<landing>/<YYYY-MM-DD>/` is not a folder, and `UnreadableLandingEntries`
    when an entry named like a hit file is not a readable file: it is never opened (a named pipe would hang the
    load), and loading the day without it would delete what it loaded before. Links to folders are not followed;
    they are listed with the ignored files.
    """
    folder = landing / day.isoformat()
    if not folder.is_dir():
        raise MissingLandingDay(f"landing folder {folder} does not exist for {day.isoformat()}")
    files, ignored, unreadable = [], [], []
    for path, relative in _walk(folder):
        source_file = f"{day.isoformat()}/{relative}"
        if not relative.removesuffix(".gz").endswith(FORMATS):
            ignored.append(source_file)
        elif path.is_file():
            files.append(LandingFile(path, source_file))
        else:
            unreadable.append(f"{source_file} ({_not_a_file(path)})")
    if unreadable:
        raise UnreadableLandingEntries(
            f"landing folder {folder} has {len(unreadable)} entr{'y' if len(unreadable) == 1 else 'ies'} named like "
            f"hit files that cannot be read as files: {', '.join(sorted(unreadable))}; "
            "replace or remove them, then run the day again"
        )
    return sorted(files, key=lambda f: f.source_file), sorted(ignored)


def _not_a_file(path: LandingPath) -> str:
    """Why an entry is not a readable file, as far as its kind of path can tell."""
    if not isinstance(path, Path):
        return "not a file"
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a symbolic link to nothing"
    except OSError as error:
        return "a symbolic link loop" if error.errno == errno.ELOOP else error.strerror or str(error)
    kinds = {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a link to a folder"}
    return next((kind for test, kind in kinds.items() if test(mode)), "a device or other special file")


def _walk(folder: LandingPath) -> Iterator[tuple[LandingPath, str]]:
    """(entry, path relative to `folder` with `/` separators) for every entry below `folder` but folders."""
    if hasattr(folder, "rglob"):
        for path in folder.rglob("*"):
            # rglob does not descend into links to folders: such a link is listed like any entry that is no file.
            if not path.is_dir() or path.is_symlink():
                yield path, path.relative_to(folder).as_posix()
        return
    for child in folder.iterdir():
        if child.is_dir():
            yield from ((path, f"{child.name}/{relative}") for path, relative in _walk(child))
        else:
            yield child, child.name


def parse_file(file: LandingFile, environments: Collection[str]) -> Iterator[ParsedHit | Reject]:
    """Every record of one file, in order, as a `ParsedHit` or a `Reject`. Blank lines are not records.

    A file that stops being readable part way (a damaged gzip file) keeps every whole line before the damage and
    yields one last reject: the line the damage cut short, or the rest of the file.
    """
    for batch in parse_batches(file, environments):
        yield from batch


def parse_batches(
    file: LandingFile, environments: Collection[str], fast: FastPath | None = None
) -> Iterator[list[ParsedHit | Reject]]:
    """`parse_file` in lists of up to `BATCH_RECORDS` items: a loop over a list costs less per record.

    With `fast`, the records it takes are not in the lists (it has written them itself), and a list also ends
    after each block of lines and whenever `fast` is full, so the caller gets a say that often.
    """
    with file.path.open("rb") as raw_stream:
        stream = Gunzip(raw_stream) if file.is_gzip else raw_stream
        lines = _Lines(stream)
        numbered = lines.numbered() if fast is None else _Leftovers(lines, fast, file.is_csv)
        if file.is_csv:
            yield from _parse_csv(file.source_file, numbered, environments, fast)
        else:
            yield from _parse_json_lines(file.source_file, numbered, environments)
        if lines.error is not None:
            # A line without its end of line is never parsed here: its tail may be what the damage took.
            what = "line cut short, the file is unreadable from here on" if lines.cut else "the rest is unreadable"
            yield [Reject(file.source_file, lines.number + 1, f"{what}: {lines.error}", _raw_text(lines.cut))]


class _Lines:
    """The numbered lines of a binary stream, without their end of line.

    The stream is read in blocks split in C, and `numbered()` chains them in C: a Python step per line would
    cost more than parsing it. A line of `MAX_LINE_BYTES` or more is cut to that length (and is too long
    exactly when its length is that); the rest of it is never held in memory. A stream that stops being
    readable ends the lines, leaves the error in `error` and the start of a line it cut short in `cut`.
    """

    def __init__(self, stream: IO[bytes] | Gunzip) -> None:
        self.stream = stream
        self.number = 0  # of the last line handed out
        self.error: Exception | None = None
        self.cut = b""

    def numbered(self) -> Iterator[tuple[int, bytes]]:
        return itertools.chain.from_iterable(enumerate(block, start) for start, block in self._blocks())

    def _blocks(self) -> Iterator[tuple[int, list[bytes]]]:
        """(number of the first line, the lines) for each block read."""
        limit = MAX_LINE_BYTES
        pending = b""  # the start of a line whose end is in a later block
        skipping = False  # inside a too-long line already handed out
        while True:
            try:
                block = self.stream.read(BLOCK_BYTES)
            except (EOFError, zlib.error) as error:
                self.error, self.cut = error, pending
                return
            if not block:
                break
            if skipping:
                end = block.find(b"\n")
                if end < 0:
                    continue
                block, skipping = block[end + 1 :], False
            data = pending + block if pending else block
            lines = data.split(b"\n")
            pending = lines.pop()
            if len(pending) >= limit:
                lines.append(pending)
                pending, skipping = b"", True
            if lines:
                yield self._cleaned(lines, b"\r" in data)
        if pending:
            yield self._cleaned([pending], b"\r" in pending)

    def _cleaned(self, lines: list[bytes], has_cr: bool) -> tuple[int, list[bytes]]:
        # Whole-list operations: these cases are rare and the common one costs no Python step per line.
        start = self.number + 1
        self.number += len(lines)
        if start == 1 and lines[0].startswith(_BOM):
            lines[0] = lines[0][len(_BOM) :]
        if has_cr:
            lines = [line.rstrip(b"\r") for line in lines]
        if max(map(len, lines)) >= MAX_LINE_BYTES:
            lines = [line[:MAX_LINE_BYTES] for line in lines]
        return start, lines


# In the lines a fast path leaves: the end of a block, or a full fast path. The parser hands its batch over.
_BATCH_END = (0, None)


class _Leftovers:
    """The numbered lines `fast` does not take, and `_BATCH_END` after each block and whenever `fast` is full.

    While `paused` (a parser inside a quoted CSV record that spans lines), every line is handed out as it is.
    """

    def __init__(self, lines: _Lines, fast: FastPath, is_csv: bool) -> None:
        self.paused = False
        self._pairs = self._generate(lines, fast, fast.take_csv if is_csv else fast.take_json)

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        return self._pairs

    def _generate(
        self, lines: _Lines, fast: FastPath, take: Callable[[list[bytes], int, int], int]
    ) -> Iterator[tuple[int, bytes | None]]:
        for start, block in lines._blocks():
            position = 0
            while True:
                if not self.paused:
                    position = take(block, position, start)
                    if position < len(block) and fast.full:
                        yield _BATCH_END
                        continue
                if position == len(block):
                    break
                yield start + position, block[position]
                position += 1
            yield _BATCH_END


def _raw_text(data: bytes) -> str:
    """A reject's raw text: invalid bytes escaped, cut at `MAX_RAW_BYTES` so a rejects file stays readable."""
    text = data[:MAX_RAW_BYTES].decode("utf-8", "backslashreplace")
    return text + "…" if len(data) > MAX_RAW_BYTES else text


def _too_long() -> str:
    return f"line is longer than {MAX_LINE_BYTES} bytes"


def _parse_json_lines(
    source_file: str, numbered: Iterable[tuple[int, bytes | None]], environments: Collection[str]
) -> Iterator[list[ParsedHit | Reject]]:
    decode, limit, depth = _decode_json_hit, MAX_LINE_BYTES, MAX_JSON_DEPTH
    batch: list[ParsedHit | Reject] = []
    for number, line in numbered:
        if line is None:  # _BATCH_END
            yield batch
            batch = []
            continue
        # The decoder skips other keys unchecked: only an ASCII line is surely valid UTF-8. With no more brackets
        # than `MAX_JSON_DEPTH`, a line cannot be nested deeper than that.
        if len(line) < limit and line.isascii() and line.count(b"{") + line.count(b"[") <= depth:
            try:
                hit = decode(line)
            except msgspec.MsgspecError:
                pass
            else:
                instant = plain_utc(hit.datetime)
                if instant is not None and hit.environment in environments and "\0" not in hit.page:
                    batch.append(ParsedHit(hit.page, instant, hit.user_id, hit.environment, source_file, number))
                    if len(batch) >= BATCH_RECORDS:
                        yield batch
                        batch = []
                    continue
        # Anything else takes the full way, which accepts the record or says why not.
        item = _json_record(source_file, number, line, environments)
        if item is not None:
            batch.append(item)
            if len(batch) >= BATCH_RECORDS:
                yield batch
                batch = []
    if batch:
        yield batch


def _json_record(
    source_file: str, number: int, line: bytes, environments: Collection[str]
) -> ParsedHit | Reject | None:
    """One JSON line the full way: a `ParsedHit`, a `Reject` saying why, or None for a blank line."""
    if len(line) >= MAX_LINE_BYTES:
        return Reject(source_file, number, _too_long(), _raw_text(line))
    if not line.strip(b" \t"):
        return None
    try:
        line.decode()
    except UnicodeDecodeError:
        return Reject(source_file, number, "not valid UTF-8", _raw_text(line))
    if _json_depth(line) > MAX_JSON_DEPTH:
        return Reject(source_file, number, f"JSON nested deeper than {MAX_JSON_DEPTH} levels", _raw_text(line))
    try:
        hit = _decode_any_hit(line)
    except msgspec.ValidationError as error:
        reason = "not a JSON object" if str(error).startswith("Expected `object`") else f"invalid JSON value: {error}"
        return Reject(source_file, number, reason, _raw_text(line))
    except msgspec.DecodeError as error:
        return Reject(source_file, number, f"invalid JSON: {error}", _raw_text(line))
    raw = {name: value for name in FIELDS if (value := getattr(hit, name)) is not msgspec.UNSET}
    try:
        return ParsedHit(*validate_hit(raw, environments), source_file, number)
    except InvalidHit as error:
        return Reject(source_file, number, str(error), _raw_text(line))


def _json_depth(line: bytes) -> int:
    """How deep a JSON text nests its arrays and objects (a bound for invalid JSON); cheap unless it has many."""
    if line.count(b"{") + line.count(b"[") <= MAX_JSON_DEPTH:
        return 1
    depth = deepest = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRING.sub(b"", line)):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _parse_csv(
    source_file: str,
    numbered: Iterable[tuple[int, bytes | None]],
    environments: Collection[str],
    fast: FastPath | None,
) -> Iterator[list[ParsedHit | Reject]]:
    limit = MAX_LINE_BYTES
    batch: list[ParsedHit | Reject] = []
    header: dict[str, int] | None = None
    header_problem = ""
    width = 0
    ipage = idatetime = iuser = ienvironment = 0
    for number, line in numbered:
        if line is None:  # _BATCH_END
            yield batch
            batch = []
            continue
        # The fast path: a line without quotes (nor CR, NUL, or too long) is one record whose cells are its
        # comma-separated parts, as csv would read it; `validate_text_hit`'s rules for the usual record apply.
        # Anything else takes the full way.
        special = len(line) >= limit or _QUOTE in line or _CR in line or _NUL in line
        if width and not special:
            try:
                row = line.decode().split(",")
            except UnicodeDecodeError:
                row = []
            if len(row) == width:
                page, user_id, environment = row[ipage], row[iuser], row[ienvironment]
                if (
                    0 < len(page) <= MAX_PAGE_LENGTH
                    and environment in environments
                    and (number_id := text_user_id(user_id)) is not None
                    and 0 <= number_id <= MAX_USER_ID
                    and (instant := plain_utc(row[idatetime])) is not None
                ):
                    batch.append(ParsedHit(page, instant, number_id, environment, source_file, number))
                    if len(batch) >= BATCH_RECORDS:
                        yield batch
                        batch = []
                    continue
        if special:
            if fast is not None:
                numbered.paused = True  # the record's next lines are its own, whatever they look like
            row, reason, raw_lines = _csv_record((number, line), numbered)
            if fast is not None:
                numbered.paused = False
            if not reason and not any(cell.strip() for cell in row):
                continue
        else:
            raw_lines = [line]
            try:
                text = line.decode()
            except UnicodeDecodeError:
                row, reason = [], "not valid UTF-8"
            else:
                if not text.replace(",", "").strip():
                    continue
                row, reason = text.split(","), ""
        if header is None and not header_problem:
            header, header_problem = _read_header(row, reason)
            if header is not None:
                width = len(row)
                ipage, idatetime, iuser, ienvironment = (header[name] for name in FIELDS)
                if fast is not None:
                    fast.csv_columns(width, ipage, idatetime, iuser, ienvironment)
                continue
        reason = reason or header_problem
        if not reason and len(row) != width:
            reason = f"{len(row)} fields where the header has {width}"
        if not reason:
            try:
                record = validate_text_hit({name: row[i] for name, i in header.items()}, environments)
                batch.append(ParsedHit(*record, source_file, number))
            except InvalidHit as error:
                reason = str(error)
        if reason:
            batch.append(Reject(source_file, number, reason, _raw_text(b"\n".join(raw_lines))))
        if len(batch) >= BATCH_RECORDS:
            yield batch
            batch = []
    if batch:
        yield batch


def _csv_record(
    first: tuple[int, bytes], rest: Iterable[tuple[int, bytes | None]]
) -> tuple[list[str], str, list[bytes]]:
    """One record read by csv from `first` on, pulling the lines it needs from `rest` (quoted line breaks).

    Returns (its cells, the first problem found or "", its physical lines for a reject's raw text).
    """
    raw_lines: list[bytes] = []
    problem = ""

    def text_lines() -> Iterator[str]:
        nonlocal problem
        for _, line in itertools.chain([first], rest):
            if line is None:  # _BATCH_END
                continue
            raw_lines.append(line)
            if len(line) >= MAX_LINE_BYTES:
                problem = problem or _too_long()
                yield "\n"  # never hand csv a cut line: an open quote would swallow the lines after it
                continue
            try:
                yield line.decode() + "\n"
            except UnicodeDecodeError:
                problem = problem or "not valid UTF-8"
                yield line.decode("utf-8", "replace") + "\n"

    try:
        row = next(csv.reader(text_lines(), strict=True))
    except csv.Error as error:
        return [], problem or f"invalid CSV: {error}", raw_lines
    return row, problem, raw_lines


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
