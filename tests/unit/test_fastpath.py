"""The loader's C fast path (`hitmetrics._fastpath`) writes exactly what the Python way would, and leaves it the rest.

Each case parses one file both ways: the Python way alone (`parse_file`, each record written as the loader writes
it), and the fast path with the Python way for what it leaves. Both must give the same documents, byte for byte,
and the same rejects.
"""

import datetime as dt
import gzip
import random
from zoneinfo import ZoneInfo

import msgspec
import orjson
import pytest

from hitmetrics import ingest, load, model
from hitmetrics.ingest import LandingFile, ParsedHit, Reject, parse_batches, parse_file
from hitmetrics.sample import generate_day
from hitmetrics.users import user_key

from .test_ingest import TRICKY_CSV, TRICKY_JSON

ENVS = frozenset({"production", "staging", "development"})
DAY = dt.date(2026, 11, 25)
LOAD_ID = "20261125T000000Z-abcd"
CSV_HEADER = b"page,datetime,user_id,environment\n"


pytestmark = pytest.mark.usefixtures("fastpath_built")


def both_ways(tmp_path, name: str, data: bytes, timezone: str = "UTC"):
    """(the Python way's (documents, rejects), the fast path's, how many documents the C code wrote)."""
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    file = LandingFile(path, f"{DAY}/{name}")
    zone = ZoneInfo(timezone)
    id_prefix = load._id_prefix(file.source_file)

    def index_of(day: dt.date, environment: str) -> str:
        return f"hits-{day}-{environment}"

    def document(hit: ParsedHit) -> bytes:
        index = index_of(hit.datetime.astimezone(zone).date(), hit.environment)
        source = load._Source(
            hit.page, hit.datetime, hit.user_id, user_key(hit.user_id), hit.environment, file.source_file, LOAD_ID
        )
        return load._action_template(index, id_prefix) % hit.line + msgspec.json.encode(source) + b"\n"

    def outcome(items, written=()) -> tuple[list[bytes], list[tuple]]:
        documents = [document(i) for i in items if isinstance(i, ParsedHit)] + list(written)
        return sorted(documents), sorted(tuple(i) for i in items if isinstance(i, Reject))

    bodies: dict[str, load._fastpath.Body] = {}

    def target(key):
        index = index_of(*key)
        return index, load._action_template(index, id_prefix), bodies.setdefault(index, load._fastpath.Body())

    days, spans = load._day_spans(DAY, zone)
    fast = load._fast_writer(file.source_file, LOAD_ID, sorted(ENVS), days, spans, target)
    leftovers = [item for batch in parse_batches(file, ENVS, fast) for item in batch]
    lines = b"".join(body.take() for body in bodies.values()).splitlines(keepends=True)
    written = [action + source for action, source in zip(lines[::2], lines[1::2], strict=True)]
    return outcome(list(parse_file(file, ENVS))), outcome(leftovers, written), len(written)


def test_the_c_code_has_the_python_way_s_limits():
    assert load._fastpath.MAX_PAGE_CHARS == model.MAX_PAGE_LENGTH
    assert load._fastpath.MAX_USER_ID == model.MAX_USER_ID
    assert load._fastpath.MAX_LINE_BYTES == ingest.MAX_LINE_BYTES


def json_line(**overrides) -> bytes:
    raw = {"page": "/home", "datetime": "2026-11-25T10:15:00Z", "user_id": 42, "environment": "production"}
    return orjson.dumps(raw | overrides)


def test_a_sample_day_is_written_the_same_and_almost_all_in_c(tmp_path):
    sample = generate_day(tmp_path / "landing", DAY, hits=3_000)
    for path in sample.files:
        python, fast, in_c = both_ways(tmp_path, path.name, gzip.decompress(path.read_bytes()) if path.suffix == ".gz"
                                       else path.read_bytes())  # fmt: skip
        assert fast == python
        assert in_c >= 0.99 * len(python[0]), path.name


def test_tricky_json_records(tmp_path):
    lines = [json_line(**overrides) for overrides in TRICKY_JSON]
    lines += [
        b'  { "page" : "/spaces" ,\t"datetime":"2026-11-25T10:15:00.5Z", "user_id" : 7 , "environment":"staging" }  ',
        b'{"page":"/esc\\u00e9","datetime":"2026-11-25T10:15:00Z","user_id":7,"environment":"staging"}',
        json_line(page="/caf\u00e9 \u2028 \x7f"),
        b'{"page":"/bad \xc3","datetime":"2026-11-25T10:15:00Z","user_id":7,"environment":"staging"}',
        b'{"page":"/surrogate \xed\xa0\x80","datetime":"2026-11-25T10:15:00Z","user_id":7,"environment":"staging"}',
        b'{"page":"/p","datetime":"2026-11-25T10:15:00Z","user_id":7,"environment":"staging"} x',
        b'{"page":"/p","datetime":"2026-11-25T10:15:00Z","user_id":007,"environment":"staging"}',
        b'{"page":"/p","datetime":"2026-11-25T10:15:00Z","user_id":7e0,"environment":"staging"}',
        b'{"page":"/p","datetime":"2026-11-25T10:15:00Z","user_id":-0,"environment":"staging"}',
        b'{"page":"/p","page":"/q","datetime":"2026-11-25T10:15:00Z","user_id":7,"environment":"staging"}',
        b'{"page":"/p","datetime":"2026-11-25T10:15:00Z","user_id":7,"environment":"staging",}',
        b'{"page":"/p","datetime":"2026-11-25T10:15:00Z","user_id":7}',
        json_line(datetime="2026-02-29T10:15:00Z"),
        json_line(datetime="2028-02-29T23:59:59.999999Z"),
        json_line(datetime="2026-10-01T10:15:00Z"),  # outside the days the C code routes
        b"",
        b"   ",
    ]
    python, fast, in_c = both_ways(tmp_path, "t.jsonl", b"\n".join(lines) + b"\n")
    assert fast == python
    assert 0 < in_c < len(python[0])


def test_tricky_csv_records(tmp_path):
    rows = [row.encode() for row in TRICKY_CSV] + [
        b"/tab\there,2026-11-25T10:15:00Z,42,production",
        b"/back\\slash,2026-11-25T10:15:00Z,42,production",
        b"/caf\xc3\xa9,2026-11-25T10:15:00.120Z,42,staging",
        b"/ok,2026-11-25T10:15:00Z,42,production,extra",
        b"/ok,2026-11-25T10:15:00Z,42",
        b"/bad utf-8 elsewhere,2026-11-25T10:15:00Z,42,production\xff",
        b'"/quoted,comma",2026-11-25T10:15:00Z,42,production',
        # A quoted record over three lines: its middle line looks like a record of its own, and is not one.
        b'"/multi',
        b"/looks,2026-11-25T10:15:00Z,42,production",
        b'line",2026-11-25T10:15:00Z,42,production',
        b"/after,2026-11-25T10:15:00Z,42,production",
        b",,,",
        b"",
    ]
    python, fast, in_c = both_ways(tmp_path, "t.csv", CSV_HEADER + b"\n".join(rows) + b"\n")
    assert fast == python
    assert 0 < in_c < len(python[0])
    assert not any(b'"page":"/looks"' in document for document in python[0])


def test_csv_columns_in_another_order(tmp_path):
    data = (
        b"environment,user_id,extra,datetime,page\nstaging,7,x,2026-11-25T10:15:00Z,/p\nqa,7,,2026-11-25T10:15:00Z,/p\n"
    )
    python, fast, in_c = both_ways(tmp_path, "o.csv.gz", data)
    assert fast == python and in_c == 1


def test_days_of_a_time_zone_and_its_clock_changes(tmp_path):
    # New York: 24 hours from the landing day on, then the days around the autumn clock change (left to Python).
    lines = [json_line(datetime=f"2026-11-25T{hour:02}:30:00Z") for hour in range(24)]
    lines += [json_line(datetime=f"2026-11-0{day}T{hour:02}:59:59Z") for day in (1, 2) for hour in range(24)]
    python, fast, in_c = both_ways(tmp_path, "tz.jsonl", b"\n".join(lines), timezone="America/New_York")
    assert fast == python
    assert in_c == 24


@pytest.mark.parametrize("name", ["f.jsonl", "f.csv"])
def test_mutated_records(tmp_path, name):
    """Thousands of random edits of good records: whatever the C code takes, the Python way takes the same."""
    rng = random.Random(20261127)
    pieces = [b'"', b"\\", b",", b":", b"{", b"}", b" ", b"\t", b"\x00", b"\xc3", b"\xa9", b"\xff", b"0", b"9",
              b"-", b".", b"e", b"Z", b"T", b"+", b"\r", b"a", b"/"]  # fmt: skip
    good = json_line() if name.endswith(".jsonl") else b"/home,2026-11-25T10:15:00.123Z,42,production"
    lines = []
    for _ in range(3_000):
        record = bytearray(good)
        for _ in range(rng.choice([1, 1, 2])):
            at = rng.randrange(len(record) + 1)
            match rng.randrange(3):
                case 0:
                    record[at : at + 1] = rng.choice(pieces)
                case 1:
                    record.insert(min(at, len(record)), rng.randrange(256))
                case 2:
                    del record[at : at + rng.randint(1, 4)]
        lines.append(bytes(record))
    data = (b"" if name.endswith(".jsonl") else CSV_HEADER) + b"\n".join(lines) + b"\n"
    python, fast, in_c = both_ways(tmp_path, name, data)
    assert fast == python
    assert in_c > 50


def test_a_full_body_stops_the_c_code_so_the_loader_can_send_it(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "CHUNK_DOCS", 3)
    monkeypatch.setattr(ingest, "BATCH_RECORDS", 100)
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join(json_line(user_id=n) for n in range(10)))
    bodies: dict[str, load._fastpath.Body] = {}

    def target(key):
        return "i", load._action_template("i", "p"), bodies.setdefault("i", load._fastpath.Body())

    days, spans = load._day_spans(DAY, ZoneInfo("UTC"))
    fast = load._fast_writer("f", LOAD_ID, sorted(ENVS), days, spans, target)
    sizes = []
    for batch in parse_batches(LandingFile(path, "f.jsonl"), ENVS, fast):
        assert batch == []
        sizes.append(bodies["i"].docs)
        if bodies["i"].docs == 3:
            bodies["i"].take()
    assert sizes == [3, 3, 3, 1]
