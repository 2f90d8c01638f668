"""One value, one verdict: generated records and files through every path (property-based and differential).

A record may be taken by three readers: the C fast path (`_fastpath.c`), the Python fast path (msgspec, or a CSV
line split on commas) and the full way (`ingest._json_record`, `ingest._csv_record` with `validate_text_hit`),
which alone decides every record the others leave. For generated records and files:
- the Python way of a whole file gives, line by line, exactly what the full way gives each record alone;
- the C code with the Python way for what it leaves writes the same documents and rejects as the Python way alone;
- how a record happens to be written (a quoted CSV cell, `Z` or `+00:00`, spacing, key order) never changes its
  verdict;
- damaged files keep the invariants: nothing crashes, every line gets one verdict, and every whole line before a
  gzip file is cut short or followed by bytes that are not gzip is read as it was written.

`make fuzz` runs these with many more examples (the `fuzz` Hypothesis profile, tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitmetrics import ingest
from hitmetrics.ingest import LandingFile, ParsedHit, parse_file
from hitmetrics.model import InvalidHit, validate_text_hit

from .test_fastpath import DAY, ENVS, both_ways

pytestmark = pytest.mark.usefixtures("fastpath_built")


class Raw(bytes):
    """JSON text written into a line as it is (numbers past any float, deep nesting, invalid UTF-8)."""


# --- values -------------------------------------------------------------------------------------------------------


def mostly(good: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    """`good` five times in six: most generated records are valid, so that the fast paths have plenty to take."""
    return st.integers(0, 5).flatmap(lambda n: good if n else odd)


PAGES = mostly(
    st.from_regex(r"/[a-z0-9/._~%-]{0,30}", fullmatch=True),
    st.sampled_from(["/home", "/a,b", '/q"uote', "/back\\slash", "/caf\u00e9", "/tab\there", "/nl\nx", "/cr\rx",
                     "/nul\x00", " /space", "/\u2028", "\U0001f600", "é" * 2048, "é" * 2049, "/" * 2048, "", " "])
    | st.text(max_size=12),
)  # fmt: skip
DATE_TEXTS = st.sampled_from(["2026-W48-3T10:15:00Z", "2026-329T10:15:00Z", "20261125T101500Z", "2026-11-25",
                              "2026-11-25T10Z", "1764065700", "", "yesterday", "2026-11-25T10:15:00Z "])  # fmt: skip


@st.composite
def datetimes(draw) -> str:
    """Datetime texts around the landing day: mostly usual ones, many just outside the grammar or the calendar."""
    if draw(st.integers(0, 12)) == 0:
        return draw(st.one_of(DATE_TEXTS, st.text(max_size=25)))
    odd = draw(st.integers(0, 2)) == 0  # else the usual form, which the fast paths take
    day = DAY + dt.timedelta(days=draw(st.integers(-9, 4)))
    year = draw(st.sampled_from([day.year] * 6 + [1, 999, 1000, 9998, 9999])) if odd else day.year
    month, mday = (day.month, day.day)
    if odd:
        month, mday = draw(st.sampled_from([(month, mday)] * 6 + [(2, 29), (2, 30), (13, 1), (0, 1), (4, 31)]))
    hour = draw(st.sampled_from([*range(24), 24] if odd else range(24)))
    minute = draw(st.sampled_from([0, 15, 59, 60] if odd else [0, 15, 59]))
    second = draw(st.sampled_from([0, 7, 59, 60] if odd else [0, 7, 59]))
    fractions = ["", "", ".5", ".123", ".123456"] + ([".1234567", ".123456789", ".1234567890", ",5"] if odd else [])
    fraction = draw(st.sampled_from(fractions))
    seconds = "" if odd and draw(st.integers(0, 8)) == 0 else f":{second:02}{fraction}"
    separator = draw(st.sampled_from("TTTTTTt x")) if odd else "T"
    offsets = ["z", "", "+00:00", "+02:00", "-05:30", "+0530", "+05", "+24:00", "+01:60", "-00:00", "+14:00"]
    offset = draw(st.sampled_from(["Z"] * 8 + offsets)) if odd else "Z"
    return f"{year:04}-{month:02}-{mday:02}{separator}{hour:02}:{minute:02}{seconds}{offset}"


JSON_USER_IDS = mostly(
    st.integers(0, 2**31 - 1),
    st.sampled_from([-1, 0, 2**31 - 1, 2**31, 2**64, -(2**70), True, False, None, 42.0, 4.2, "42", [], {}])
    | st.sampled_from([Raw(b"1e400"), Raw(b"-0"), Raw(b"4.20e1"), Raw(b"1E2"), Raw(b"9" * 400), Raw(b"0042")]),
)
TEXT_USER_IDS = mostly(
    st.from_regex(r"0{0,3}[0-9]{1,10}", fullmatch=True),
    st.from_regex(r"-?0{0,25}[0-9]{1,12}", fullmatch=True)
    | st.sampled_from([" 42", "+42", "42 ", "4.2", "", "42\x1d", "\u0664\u0662", "1_000", "9" * 5000, "0x2a"])
    | st.text(max_size=4),
)
ENVIRONMENTS = mostly(
    st.sampled_from(sorted(ENVS)), st.sampled_from(["Production", "qa", " production", "", "production\x00"])
)
EXTRA_VALUES = st.one_of(
    st.sampled_from([Raw(b"1e400"), Raw(b"-1e400"), Raw(b"1" * 500), Raw(b'"\xff\xfe"'), Raw(b'"\\ud800"'),
                     Raw(b"NaN"), Raw(b"true"), Raw(b'"\\u00e9\\n"'), Raw(b"{}")]),
    st.integers(1, 80).map(lambda depth: Raw(b"[" * depth + b"]" * depth)),
    st.sampled_from([5000]).map(lambda depth: Raw(b'{"a":' * depth + b"1" + b"}" * depth)),
    st.text(max_size=6),
)  # fmt: skip


@st.composite
def records(draw, text: bool = False) -> dict:
    """A record's fields; some missing, in JSON some of another type."""
    record = {
        "page": draw(PAGES),
        "datetime": draw(datetimes()),
        "user_id": draw(TEXT_USER_IDS if text else JSON_USER_IDS),
        "environment": draw(ENVIRONMENTS),
    }
    if not text and draw(st.integers(0, 15)) == 0:
        record[draw(st.sampled_from(sorted(record)))] = draw(st.sampled_from([7, None, ["x"], {"a": 1}]))
    if draw(st.integers(0, 15)) == 0:
        del record[draw(st.sampled_from(sorted(record)))]
    return record


# --- writing records ----------------------------------------------------------------------------------------------


def json_value(value: object, ascii_only: bool) -> bytes:
    return bytes(value) if isinstance(value, Raw) else json.dumps(value, ensure_ascii=ascii_only).encode()


@st.composite
def json_lines(draw, record: dict | None = None) -> bytes:
    """One JSON line: the record's fields, spaced and escaped at random; a generated record may also get other keys
    or a repeated one (the last one counts)."""
    generated = record is None
    record = draw(records()) if generated else record
    pairs = [(json.dumps(name), value) for name, value in record.items()]
    for _ in range(draw(st.integers(0, 2)) if generated and draw(st.integers(0, 3)) == 0 else 0):
        pairs.append((json.dumps(draw(st.sampled_from(["extra", "meta", "x\u00e9"]))), draw(EXTRA_VALUES)))
    if generated and pairs and draw(st.integers(0, 20)) == 0:
        pairs.append((pairs[0][0], draw(PAGES)))
    if pairs and draw(st.integers(0, 30)) == 0:  # a key written with an escape is the same key
        pairs[0] = (pairs[0][0].replace("e", "\\u0065", 1), pairs[0][1])
    order = draw(st.permutations(range(len(pairs))))
    ascii_only = draw(st.booleans())
    space = draw(st.sampled_from(["", "", " ", "\t"]))
    items = [pairs[i][0].encode() + f"{space}:{space}".encode() + json_value(pairs[i][1], ascii_only) for i in order]
    return space.encode() + b"{" + f",{space}".encode().join(items) + b"}" + space.encode()


def csv_cell(value: str, quote: bool) -> str:
    if quote or any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def csv_files(draw) -> tuple[bytes, list[dict]]:
    """A CSV file: a header in any column order (maybe an extra column), then generated rows, cells quoted at random."""
    extra = ["extra"] * draw(st.integers(0, 1))
    columns = draw(st.permutations(["page", "datetime", "user_id", "environment", *extra]))
    rows = draw(st.lists(records(text=True), min_size=1, max_size=12))
    lines = [",".join(columns)]
    for row in rows:
        cells = [csv_cell(str(row.get(name, "")), draw(st.integers(0, 4)) == 0) for name in columns]
        if draw(st.integers(0, 25)) == 0:
            cells.pop()  # a record short of a field
        lines.append(",".join(cells))
    if draw(st.integers(0, 10)) == 0:
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(["", ",,,", '"open quote', "a,b"])))
    return "\n".join(lines).encode() + b"\n", rows


# --- what the readers say -----------------------------------------------------------------------------------------


def verdicts(items) -> list[tuple]:
    """Each record's line and verdict: its hit, or its reason."""
    return [(i.line, i.record) if isinstance(i, ParsedHit) else (i.line, i.reason) for i in items]


def python_way(name: str, data: bytes) -> list[tuple]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return verdicts(parse_file(LandingFile(path, f"{DAY}/{name}"), ENVS))


def full_way_json(data: bytes) -> list[tuple]:
    """Every line of a JSON lines file decided by the full way alone."""
    lines = ingest._Lines(io.BytesIO(data)).numbered()
    items = (ingest._json_record("f", number, line, ENVS) for number, line in lines)
    return verdicts(item for item in items if item is not None)


def full_way_csv(data: bytes) -> list[tuple]:
    """Every record of a CSV file read by the csv module and checked by `validate_text_hit`, none split by hand."""
    numbered = ingest._Lines(io.BytesIO(data)).numbered()
    header, problem, width, found = None, "", 0, []
    for number, line in numbered:
        row, reason, _ = ingest._csv_record((number, line), numbered)
        if not reason and not any(cell.strip() for cell in row):
            continue
        if header is None and not problem:
            header, problem = ingest._read_header(row, reason)
            width = len(row)
            if header is not None:
                continue
        reason = reason or problem or (f"{len(row)} fields where the header has {width}" if len(row) != width else "")
        if not reason:
            try:
                found.append((number, validate_text_hit({n: row[i] for n, i in header.items()}, ENVS)))
                continue
            except InvalidHit as error:
                reason = str(error)
        found.append((number, reason))
    return found


def c_way_agrees(name: str, data: bytes) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        python, fast, _ = both_ways(Path(folder), name, data)
    return fast == python


# --- properties -----------------------------------------------------------------------------------------------------


@given(st.lists(json_lines(), min_size=1, max_size=16))
def test_json_lines_get_one_verdict_on_every_path(lines):
    data = b"\n".join(lines) + b"\n"
    assert python_way("f.jsonl", data) == full_way_json(data)
    assert c_way_agrees("f.jsonl", data)


@given(csv_files())
def test_csv_records_get_one_verdict_on_every_path(file):
    data, _ = file
    assert python_way("f.csv", data) == full_way_csv(data)
    assert c_way_agrees("f.csv", data)


def outcome(found: list[tuple]) -> list:
    """Verdicts without reasons, which quote the record as it was written."""
    return [verdict if isinstance(verdict, tuple) else "rejected" for _, verdict in found]


@given(records(), st.data())
def test_how_a_json_record_is_written_never_changes_its_verdict(record, data):
    variants = [data.draw(json_lines(record)) for _ in range(3)]
    if isinstance(record.get("datetime"), str) and record["datetime"].endswith("Z"):
        variants.append(data.draw(json_lines({**record, "datetime": record["datetime"][:-1] + "+00:00"})))
    outcomes = [outcome(python_way("v.jsonl", line + b"\n")) for line in variants]
    assert all(o == outcomes[0] for o in outcomes)


@given(records(text=True))
def test_how_a_csv_record_is_quoted_never_changes_its_verdict(record):
    columns = ["page", "datetime", "user_id", "environment"]
    header = ",".join(columns) + "\n"
    files = [
        (header + ",".join(csv_cell(str(record.get(name, "")), quote) for name in columns) + "\n").encode()
        for quote in (False, True)
    ]
    assert outcome(python_way("q.csv", files[0])) == outcome(python_way("q.csv", files[1]))
    assert all(c_way_agrees("q.csv", data) for data in files)


def good_lines(count: int) -> list[bytes]:
    return [
        json.dumps({"page": f"/p{n}", "datetime": f"2026-11-25T10:{n % 60:02}:00Z", "user_id": n,
                    "environment": "production"}).encode()
        for n in range(count)
    ]  # fmt: skip


def whole_lines(stream: bytes) -> int:
    return stream.count(b"\n")


@given(st.integers(1, 400), st.data())
def test_a_gzip_file_cut_anywhere_keeps_every_whole_line_before_the_cut(count, data):
    text = b"\n".join(good_lines(count)) + b"\n"
    packed = gzip.compress(text, mtime=0)
    cut = data.draw(st.integers(0, len(packed) - 1))
    inflate = zlib.decompressobj(wbits=31)
    kept = whole_lines(inflate.decompress(packed[:cut]))
    found = python_way("c.jsonl.gz", packed[:cut])
    assert [verdict for verdict in found if isinstance(verdict[1], tuple)] == python_way("w.jsonl", text)[:kept]
    assert len(found) == kept + 1 and "unreadable" in found[-1][1]


@given(st.integers(1, 200), st.binary(min_size=1, max_size=40), st.integers(1, 3))
def test_bytes_after_gzip_members_never_cost_a_line(count, trailing, members):
    text = b"\n".join(good_lines(count)) + b"\n"
    lines = text.splitlines(keepends=True)
    step = -(-len(lines) // members)
    packed = b"".join(gzip.compress(b"".join(lines[i : i + step]), mtime=0) for i in range(0, len(lines), step))
    found = python_way("t.jsonl.gz", packed + trailing)
    hits = [verdict for verdict in found if isinstance(verdict[1], tuple)]
    assert hits == python_way("w.jsonl", text)
    if trailing.strip(b"\0"):
        assert len(found) == count + 1 and "not gzip" in found[-1][1] or trailing.startswith(b"\x1f\x8b")
    else:
        assert len(found) == count  # zero padding is no damage


DAMAGE = st.sampled_from(["truncate", "flip", "garbage", "bom", "nul", "crlf", "cr", "huge", "deep", "number"])


@given(st.integers(1, 120), st.lists(st.tuples(DAMAGE, st.integers(0, 10**9)), min_size=1, max_size=4),
       st.booleans(), st.booleans())  # fmt: skip
def test_damaged_files_never_crash_and_give_every_line_one_verdict(count, damages, packed, as_csv):
    if as_csv:
        rows = [f"/p{n},2026-11-25T10:{n % 60:02}:00Z,{n},production".encode() for n in range(count)]
        text = b"page,datetime,user_id,environment\n" + b"\n".join(rows) + b"\n"
    else:
        text = b"\n".join(good_lines(count)) + b"\n"
    data = bytearray(text)
    for damage, at in damages:
        at %= len(data) + 1
        match damage:
            case "bom":
                data[at:at] = b"\xef\xbb\xbf"
            case "nul":
                data[at:at] = b"\0"
            case "crlf":
                data[at:at] = b"\r\n"
            case "cr":
                data[at:at] = b"\r"
            case "huge":
                data[at:at] = b"7" * (ingest.MAX_LINE_BYTES + 10)
            case "deep":
                data[at:at] = b"[" * 3000
            case "number":
                data[at:at] = b"1e999999"
            case _:
                pass
    stream = gzip.compress(bytes(data), mtime=0) if packed else bytes(data)
    stream = bytearray(stream)
    for damage, at in damages:
        at %= len(stream) + 1
        match damage:
            case "truncate":
                del stream[at:]
            case "flip" if stream:
                stream[at % len(stream)] ^= 0xFF
            case "garbage":
                stream[at:at] = b"\x00garbage\xff"
    name = ("d.csv" if as_csv else "d.jsonl") + (".gz" if packed else "")
    found = python_way(name, bytes(stream))
    numbers = [number for number, _ in found]
    assert numbers == sorted(set(numbers))  # one verdict per line, in order
    if not packed:  # every line is a record, a reject or blank: no more verdicts than lines
        assert len(found) <= bytes(stream).count(b"\n") + 1
        assert c_way_agrees(name, bytes(stream))


# The cases a fault suite found, each through every path.
ISSUE_CSV = b"page,datetime,user_id,environment\n"
ISSUE_JSON_LINES = [
    b'{"page":"/a","datetime":"2026-11-25T10:15:00Z","user_id":1,"environment":"production","x":1e400}',
    b'{"page":"/a","datetime":"2026-11-25T12:15:00+02:00","user_id":1,"environment":"production","x":1e400}',
    b'{"page":"/a","datetime":"2026-11-25T10:15:00Z","user_id":1,"environment":"production","x":'
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
    b'{"page":"/a","datetime":"2026-11-25T10:15:00Z","user_id":1,"environment":"production","x":"\xff"}',
    b'{"page":"/a","page":"/b","datetime":"2026-11-25T10:15:00Z","user_id":1,"environment":"production"}',
]


def test_the_fault_suite_s_json_cases():
    data = b"\n".join([*ISSUE_JSON_LINES[:2], *good_lines(100), *ISSUE_JSON_LINES[2:]]) + b"\n"
    found = dict(python_way("i.jsonl", data))
    assert found[1].page == found[2].page == "/a" and found[1].datetime == found[2].datetime  # 1e400 is ignored
    assert found[103] == "JSON nested deeper than 64 levels"  # one line, never the day
    assert found[104] == "not valid UTF-8"
    assert found[105].page == "/b"  # the last of a repeated key counts
    assert sum(isinstance(verdict, tuple) for verdict in found.values()) == 100 + 3
    assert c_way_agrees("i.jsonl", data)


def test_the_fault_suite_s_csv_user_id_gets_one_verdict_quoted_or_not():
    rows = [b"/a,2026-11-25T10:15:00Z,000000000000000000000000044574,production",
            b'"/a",2026-11-25T10:15:00Z,000000000000000000000000044574,production']  # fmt: skip
    data = ISSUE_CSV + b"\n".join(rows) + b"\n"
    assert [verdict.user_id for _, verdict in python_way("i.csv", data)] == [44574, 44574]
    assert c_way_agrees("i.csv", data)
