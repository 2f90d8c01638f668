import datetime as dt
import gzip
import io
import os

import orjson
import pytest
from upath import UPath

from hitmetrics import ingest
from hitmetrics.gunzip import Gunzip
from hitmetrics.ingest import (
    LandingFile,
    MissingLandingDay,
    ParsedHit,
    Reject,
    find_day_files,
    landing_root,
    parse_file,
)
from hitmetrics.model import InvalidHit, validate_hit, validate_text_hit

ENVS = frozenset({"production", "staging", "development"})
DAY = dt.date(2026, 11, 25)


def line(**overrides) -> bytes:
    raw = {"page": "/home", "datetime": "2026-11-25T10:15:00Z", "user_id": 42, "environment": "production"}
    raw.update(overrides)
    return orjson.dumps(raw)


def parse(tmp_path, name: str, data: bytes) -> list[ParsedHit | Reject]:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return list(parse_file(LandingFile(path, f"{DAY}/{name}"), ENVS))


def split(items):
    return [i for i in items if isinstance(i, ParsedHit)], [i for i in items if isinstance(i, Reject)]


@pytest.mark.parametrize("name", ["a.jsonl", "a.ndjson", "a.jsonl.gz", "a.ndjson.gz"])
def test_json_lines_good_bad_and_blank(tmp_path, name):
    data = b"\n".join(
        [
            line(),
            b"",
            b"   ",
            line(user_id=-1),
            b'{"page": "/x"',
            b"[1, 2]",
            b'{"page": "/caf\xe9", "datetime": "2026-11-25T10:15:00Z", "user_id": 1, "environment": "production"}',
            line(page="/second", extra={"nested": True}),
        ]
    )
    good, rejects = split(parse(tmp_path, name, data + b"\r\n"))
    assert [(g.line, g.record.page, g.source_file) for g in good] == [
        (1, "/home", f"{DAY}/{name}"),
        (8, "/second", f"{DAY}/{name}"),
    ]
    assert [(r.line, r.reason.split(":")[0]) for r in rejects] == [
        (4, "user_id -1 is outside 0..2147483647"),
        (5, "invalid JSON"),
        (6, "not a JSON object"),
        (7, "not valid UTF-8"),  # a reject, not a crash
    ]
    assert rejects[1].raw == '{"page": "/x"'
    assert rejects[3].raw.startswith('{"page": "/caf\\xe9"')


def test_two_identical_lines_are_two_hits(tmp_path):
    good, rejects = split(parse(tmp_path, "a.jsonl", line() + b"\n" + line() + b"\n"))
    assert [g.line for g in good] == [1, 2] and not rejects
    assert good[0].record == good[1].record


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    good, _ = split(parse(tmp_path, "a.jsonl", b"\xef\xbb\xbf" + line()))
    assert len(good) == 1


def test_csv_with_header_in_any_column_order(tmp_path):
    data = (
        b"user_id,environment,page,datetime,ignored\n"
        b'42,production,"/a,b",2026-11-25T10:15:00Z,x\n'
        b"\n"
        b'7,staging,"/multi\nline",2026-11-25T11:00:00+01:00,y\n'
        b"4.2,staging,/c,2026-11-25T11:00:00Z,z\n"
        b"true,staging,/d,2026-11-25T11:00:00Z,z\n"
        b"1,staging,/e\n"
        b"1,qa,/f,2026-11-25T11:00:00Z,z\n"
    )
    for name in ["h.csv", "h.csv.gz"]:
        good, rejects = split(parse(tmp_path, name, data))
        assert [(g.line, g.record.page, g.record.user_id) for g in good] == [(2, "/a,b", 42), (4, "/multi\nline", 7)]
        assert good[1].record.datetime == dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC)
        assert [(r.line, r.reason) for r in rejects] == [
            (6, "user_id '4.2' is not an integer"),
            (7, "user_id 'true' is not an integer"),
            (8, "3 fields where the header has 5"),
            (9, "environment 'qa' is not one of development, production, staging"),
        ]
        assert rejects[0].raw == "4.2,staging,/c,2026-11-25T11:00:00Z,z"


def test_csv_without_the_header_rejects_every_line(tmp_path):
    data = b"/home,2026-11-25T10:15:00Z,42,production\n\n/x,2026-11-25T10:15:00Z,1,production\n"
    good, rejects = split(parse(tmp_path, "no-header.csv", data))
    assert not good
    assert [r.line for r in rejects] == [1, 3]  # the header-less first line was probably a record too
    assert all("not a CSV header naming page, datetime, user_id, environment" in r.reason for r in rejects)


def test_csv_invalid_utf8_and_bad_quoting_are_rejects(tmp_path):
    data = (
        b"page,datetime,user_id,environment\n"
        b"/caf\xe9,2026-11-25T10:15:00Z,1,production\n"
        b'"/a"b,2026-11-25T10:15:00Z,1,production\n'
        b"/ok,2026-11-25T10:15:00Z,1,production\n"
    )
    good, rejects = split(parse(tmp_path, "u.csv", data))
    assert [g.line for g in good] == [4]
    assert [(r.line, r.reason.split(":")[0]) for r in rejects] == [(2, "not valid UTF-8"), (3, "invalid CSV")]
    assert rejects[0].raw.startswith("/caf\\xe9")


def test_an_empty_file_has_no_records(tmp_path):
    assert parse(tmp_path, "e.jsonl", b"") == []
    assert parse(tmp_path, "e.csv", b"page,datetime,user_id,environment\n") == []


def test_overlong_lines_are_rejected_without_reading_them_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 200)
    long_json = line(page="/" + "x" * 500)
    good, rejects = split(parse(tmp_path, "l.jsonl", long_json + b"\n" + line() + b"\n"))
    assert [g.line for g in good] == [2]
    assert [(r.line, r.reason) for r in rejects] == [(1, "line is longer than 200 bytes")]
    long_csv = b'"/' + b"x" * 500 + b",2026-11-25T10:15:00Z,1,production\n"
    header = b"page,datetime,user_id,environment\n"
    good, rejects = split(parse(tmp_path, "l.csv", header + long_csv + b"/ok,2026-11-25T10:15:00Z,1,production\n"))
    assert [g.line for g in good] == [3]
    assert [(r.line, r.reason) for r in rejects] == [(2, "line is longer than 200 bytes")]


def whole_lines_before(data: bytes, cut: int) -> int:
    """How many whole lines the first `cut` bytes of gzip `data` decompress to (zlib, byte by byte)."""
    inflate, out = __import__("zlib").decompressobj(wbits=31), b""
    for index in range(cut):
        out += inflate.decompress(data[index : index + 1])
    return out.count(b"\n")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
def test_a_truncated_gzip_file_keeps_every_whole_line_and_rejects_the_cut_one(tmp_path, fraction):
    data = gzip.compress(b"\n".join(line(user_id=i) for i in range(2000)) + b"\n")
    cut = int(len(data) * fraction)
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(data[:cut])
    good, rejects = split(list(parse_file(LandingFile(path, "t.jsonl.gz"), ENVS)))
    assert len(good) == whole_lines_before(data, cut)
    assert [g.record.user_id for g in good] == list(range(len(good)))
    (reject,) = rejects
    assert reject.line == len(good) + 1
    assert reject.reason.startswith("line cut short, the file is unreadable from here on: the gzip data ends")
    assert line(user_id=len(good)).startswith(reject.raw.encode())  # the start of the line it cut


def test_gzip_members_one_after_another_and_zero_padding_are_one_stream(tmp_path):
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(gzip.compress(line(user_id=1) + b"\n") + gzip.compress(line(user_id=2) + b"\n") + b"\0" * 9)
    assert [item.record.user_id for item in parse_file(LandingFile(path, "m.jsonl.gz"), ENVS)] == [1, 2]


def test_bytes_after_the_gzip_data_keep_every_line_and_are_one_reject(tmp_path):
    path = tmp_path / "g.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(line(user_id=i) for i in range(30)) + b"\n") + b"garbage")
    good, rejects = split(list(parse_file(LandingFile(path, "g.jsonl.gz"), ENVS)))
    assert len(good) == 30
    assert [(r.line, r.reason) for r in rejects] == [
        (31, "the rest is unreadable: bytes after the end of the gzip data are not gzip")
    ]


def test_corrupt_gzip_data_keeps_the_lines_before_it(tmp_path):
    data = bytearray(gzip.compress(b"\n".join(line(user_id=i) for i in range(3000)) + b"\n", mtime=0))
    middle = len(data) // 2
    data[middle : middle + 40] = b"\xff" * 40
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(bytes(data))
    good, rejects = split(list(parse_file(LandingFile(path, "c.jsonl.gz"), ENVS)))
    intact = whole_lines_before(bytes(data), middle)
    assert intact > 0 and [g.record.user_id for g in good[:intact]] == list(range(intact))
    # What zlib decompressed from the damaged bytes before it noticed is kept as it came (README, "Input").
    assert "the gzip data is corrupt" in rejects[-1].reason and "may be damaged too" in rejects[-1].reason


def test_a_gzip_bomb_is_read_a_block_at_a_time(tmp_path):
    path = tmp_path / "b.jsonl.gz"
    path.write_bytes(gzip.compress(b" " * (64 << 20)))  # 64 MiB of blanks in 64 KB
    stream = Gunzip(path.open("rb"))
    sizes = set()
    while block := stream.read(ingest.BLOCK_BYTES):
        sizes.add(len(block))
    assert max(sizes) <= ingest.BLOCK_BYTES


def test_a_file_that_is_not_gzip_despite_its_name(tmp_path):
    path = tmp_path / "n.jsonl.gz"
    path.write_bytes(line())
    (reject,) = parse_file(LandingFile(path, "n.jsonl.gz"), ENVS)
    assert reject.line == 1 and "unreadable" in reject.reason


def make_day(root) -> None:
    folder = root / DAY.isoformat()
    for relative in ["b.jsonl", "a/deep/er/c.csv.gz", "a/d.ndjson", "README.md", "a/_SUCCESS"]:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


EXPECTED_FILES = [f"{DAY}/a/d.ndjson", f"{DAY}/a/deep/er/c.csv.gz", f"{DAY}/b.jsonl"]
EXPECTED_IGNORED = [f"{DAY}/README.md", f"{DAY}/a/_SUCCESS"]


def test_find_day_files_at_any_depth(tmp_path):
    make_day(tmp_path)
    (tmp_path / "2026-11-24").mkdir()
    (tmp_path / "2026-11-24" / "other-day.jsonl").write_bytes(b"")
    files, ignored = find_day_files(tmp_path, DAY)
    assert [f.source_file for f in files] == EXPECTED_FILES
    assert ignored == EXPECTED_IGNORED
    assert [f.is_csv for f in files] == [False, True, False]
    assert [f.is_gzip for f in files] == [False, True, False]


def test_find_day_files_through_a_url(tmp_path):
    root = UPath(f"memory://landing-{tmp_path.name}")
    make_day(root)
    files, ignored = find_day_files(root, DAY)
    assert [f.source_file for f in files] == EXPECTED_FILES
    assert ignored == EXPECTED_IGNORED
    (root / EXPECTED_FILES[2]).write_bytes(line() + b"\n")
    assert [item.record.page for item in parse_file(files[2], ENVS)] == ["/home"]


class IterdirOnly:
    """A pathlib-like object without rglob, as some object-store paths are."""

    def __init__(self, path):
        self.path = path
        self.name = path.name

    def __truediv__(self, other):
        return IterdirOnly(self.path / other)

    def is_dir(self):
        return self.path.is_dir()

    def is_file(self):
        return self.path.is_file()

    def iterdir(self):
        return (IterdirOnly(child) for child in self.path.iterdir())

    def open(self, mode):
        return self.path.open(mode)


def test_find_day_files_with_iterdir_only(tmp_path):
    make_day(tmp_path)
    files, ignored = find_day_files(IterdirOnly(tmp_path), DAY)
    assert [f.source_file for f in files] == EXPECTED_FILES
    assert ignored == EXPECTED_IGNORED


def test_entries_named_like_hit_files_that_are_no_files_fail_at_once_naming_each(tmp_path):
    make_day(tmp_path)
    folder = tmp_path / DAY.isoformat()
    os.mkfifo(folder / "pipe.jsonl")  # opening it would wait for a writer for ever
    (folder / "dangling.csv").symlink_to(folder / "nowhere.csv")
    (folder / "loop-a.jsonl").symlink_to(folder / "loop-b.jsonl")
    (folder / "loop-b.jsonl").symlink_to(folder / "loop-a.jsonl")
    (folder / "fine.jsonl").symlink_to(folder / "b.jsonl")  # a link to a file is a file
    (folder / "elsewhere").symlink_to(tmp_path, target_is_directory=True)  # not followed, listed
    with pytest.raises(ingest.UnreadableLandingEntries) as caught:
        find_day_files(tmp_path, DAY)
    assert str(caught.value) == (
        f"landing folder {folder} has 4 entries named like hit files that cannot be read as files: "
        f"{DAY}/dangling.csv (a symbolic link to nothing), {DAY}/loop-a.jsonl (a symbolic link loop), "
        f"{DAY}/loop-b.jsonl (a symbolic link loop), {DAY}/pipe.jsonl (a named pipe); "
        "replace or remove them, then run the day again"
    )
    for name in ["pipe.jsonl", "dangling.csv", "loop-a.jsonl", "loop-b.jsonl"]:
        (folder / name).unlink()
    files, ignored = find_day_files(tmp_path, DAY)
    assert [f.source_file for f in files] == sorted([*EXPECTED_FILES, f"{DAY}/fine.jsonl"])
    assert ignored == sorted([*EXPECTED_IGNORED, f"{DAY}/elsewhere"])


def test_a_missing_day_folder_names_the_path(tmp_path):
    with pytest.raises(MissingLandingDay, match=f"{tmp_path}/2026-11-25 does not exist"):
        find_day_files(tmp_path, DAY)


def test_landing_root_local_folder_or_url(tmp_path):
    assert landing_root(str(tmp_path)) == tmp_path
    assert isinstance(landing_root("memory://bucket/landing"), UPath)
    assert isinstance(landing_root(f"file://{tmp_path}"), UPath)


def test_parsing_streams():
    """A file is read a block at a time: the first record comes out before the stream is consumed."""
    stream = io.BytesIO((line() + b"\n") * (3 * ingest.BLOCK_BYTES // len(line())))

    class OneShot:
        def open(self, mode):
            return stream

    records = parse_file(LandingFile(OneShot(), "s.jsonl"), ENVS)
    next(records)
    assert stream.tell() < len(stream.getvalue())


# The fast paths must never decide differently from the full validation: each record below is parsed as a file
# would be and compared with what validate_hit / validate_text_hit say of it.
TRICKY_JSON = [
    {},
    {"datetime": "2026-11-25T10:15:00.123456Z"},
    {"datetime": "2026-11-25T10:15:00.1Z"},
    {"datetime": "2026-11-25 10:15:00Z"},
    {"datetime": "2026-11-25t10:15:00z"},
    {"datetime": "2026-11-25T10:15:00+01:00"},
    {"datetime": "2026-11-25T10:15:00"},
    {"datetime": "20261125T101500Z"},
    {"datetime": "0999-11-25T10:15:00Z"},
    {"datetime": "9999-12-31T23:59:59Z"},
    {"datetime": "2026-02-30T10:15:00Z"},
    {"datetime": "2026-11-25T24:00:00Z"},
    {"datetime": "2026-11-25T10:15:00.1234567Z"},
    {"datetime": 1764065700000},
    {"user_id": 0},
    {"user_id": 2**31 - 1},
    {"user_id": 2**31},
    {"user_id": -0},
    {"user_id": 1.0},
    {"user_id": True},
    {"user_id": "42"},
    {"page": "p" * 2048},
    {"page": "p" * 2049},
    {"page": "é" * 2048},
    {"page": "é" * 2049},
    {"page": ""},
    {"page": 'quote " and \\ backslash\n'},
    {"page": None},
    {"environment": "Production"},
    {"environment": ["production"]},
    {"extra": {"nested": [1, 2]}, "source_file": 5, "load_id": None},
]


@pytest.mark.parametrize("overrides", TRICKY_JSON, ids=range(len(TRICKY_JSON)))
def test_json_fast_path_agrees_with_validate_hit(tmp_path, overrides):
    raw = {"page": "/home", "datetime": "2026-11-25T10:15:00Z", "user_id": 42, "environment": "production"}
    raw.update(overrides)
    try:
        expected = validate_hit(raw, ENVS)
    except InvalidHit as error:
        expected = str(error)
    (item,) = parse(tmp_path, "t.jsonl", orjson.dumps(raw))
    assert (item.record if isinstance(item, ParsedHit) else item.reason) == expected


def test_json_duplicate_keys_take_the_last_value(tmp_path):
    """As orjson (the full way) does; the document written has each key once."""
    data = b'{"page": "/first", ' + line()[1:]  # then line()'s own "page": "/home"
    (item,) = parse(tmp_path, "d.jsonl", data)
    assert item.page == "/home"


TRICKY_CSV = [
    "/home,2026-11-25T10:15:00Z,42,production",
    "/home,2026-11-25T10:15:00Z,0042,production",
    "/home,2026-11-25T10:15:00Z, 42,production",
    "/home,2026-11-25T10:15:00Z,+42,production",
    "/home,2026-11-25T10:15:00Z,٤٢,production",
    "/home,2026-11-25T10:15:00Z,2147483648,production",
    "/home,2026-11-25T10:15:00Z,99999999999999999999,production",
    "/home,2026-11-25T10:15:00Z,4.2,production",
    "/home,2026-11-25T10:15:00+01:00,42,production",
    "/home,2026-11-25 10:15:00,42,production",
    "/home,0999-11-25T10:15:00Z,42,production",
    ",2026-11-25T10:15:00Z,42,production",
    " /home ,2026-11-25T10:15:00Z,42,production",
    "/home,2026-11-25T10:15:00Z,42,production ",
    "/home,2026-11-25T10:15:00Z,42,qa",
    "p" * 2049 + ",2026-11-25T10:15:00Z,42,production",
]


@pytest.mark.parametrize("row", TRICKY_CSV, ids=range(len(TRICKY_CSV)))
def test_csv_fast_path_agrees_with_validate_text_hit(tmp_path, row):
    page, instant, user_id, environment = row.split(",")
    try:
        expected = validate_text_hit(
            {"page": page, "datetime": instant, "user_id": user_id, "environment": environment}, ENVS
        )
    except InvalidHit as error:
        expected = str(error)
    (item,) = parse(tmp_path, "t.csv", f"page,datetime,user_id,environment\n{row}\n".encode())
    assert (item.record if isinstance(item, ParsedHit) else item.reason) == expected


@pytest.mark.parametrize("block", [1, 2, 7, 64])
def test_lines_are_the_same_whatever_the_block_size(monkeypatch, block):
    monkeypatch.setattr(ingest, "BLOCK_BYTES", block)
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 20)
    data = b"\xef\xbb\xbffirst\r\n\nsecond\r\r\n" + b"x" * 45 + b"\nafter a long one\n" + b"y" * 20 + b"\nlast"
    lines = ingest._Lines(io.BytesIO(data))
    assert list(lines.numbered()) == [
        (1, b"first"),
        (2, b""),
        (3, b"second"),
        (4, b"x" * 20),  # cut: too long
        (5, b"after a long one"),
        (6, b"y" * 20),  # exactly the limit is too long
        (7, b"last"),
    ]
    assert lines.number == 7 and lines.error is None


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv"])
def test_batches_stay_bounded_whatever_the_records(tmp_path, monkeypatch, name):
    monkeypatch.setattr(ingest, "BATCH_RECORDS", 10)
    bad = b"not a record\n" * 35 if name.endswith(".jsonl") else b"page,datetime,user_id,environment\n" + b"x\n" * 35
    good = line() + b"\n" if name.endswith(".jsonl") else b"/home,2026-11-25T10:15:00Z,42,production\n"
    path = tmp_path / name
    path.write_bytes(bad + good * 25)
    batches = list(ingest.parse_batches(LandingFile(path, name), ENVS))
    assert [len(batch) for batch in batches] == [10] * 6
