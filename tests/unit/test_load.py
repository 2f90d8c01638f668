"""Unit tests of `hitmetrics.load` that need no Elasticsearch (the rest are in tests/integration/test_load.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitmetrics import load

# Allocates an 8 MB body, frees it, allocates another and prints whether glibc served that one with mmap.
_SECOND_BODY_MMAPPED = """
import ctypes, sys
from hitmetrics import bulk, load

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert load._fix_mmap_threshold()
body = bytearray(bulk.CHUNK_BYTES)
del body
body = bytearray(bulk.CHUNK_BYTES)
print(libc.mallinfo2().hblkhd >= bulk.CHUNK_BYTES)
"""


@pytest.mark.parametrize(("threshold", "mmapped"), [("default", "False"), ("fixed", "True")])
def test_every_body_is_mmapped_once_the_threshold_is_fixed(threshold: str, mmapped: str) -> None:
    # By default glibc raises its threshold past a freed mmapped block, so later bodies come from the heap.
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_BODY_MMAPPED, threshold], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == mmapped


sizes = st.lists(
    st.tuples(st.text("abc/._", min_size=1, max_size=8), st.integers(0, 10_000)), max_size=40, unique_by=lambda f: f[0]
)


@given(sizes, st.one_of(st.none(), st.integers(1, 20_000)))
def test_shards_hold_every_file_once_and_stay_even(files, shard_bytes):
    shards = load.split_into_shards(files, shard_bytes)
    names = [name for shard, _ in shards for name in shard]
    assert sorted(names) == sorted(name for name, _ in files)
    total = sum(size for _, size in files)
    expected = 1 if shard_bytes is None else max(1, min(len(files), -(-total // shard_bytes)))
    assert len(shards) == expected
    assert [weight for _, weight in shards] == [sum(dict(files)[name] for name in shard) for shard, _ in shards]
    # Largest first onto the lightest: no shard exceeds the mean by more than one file.
    largest = max((size for _, size in files), default=0)
    assert max(weight for _, weight in shards) <= total / len(shards) + largest
    assert all(shard == sorted(shard) for shard, _ in shards)


def test_a_plan_comes_back_whole_from_its_shards_and_only_from_all_of_them():
    day = dt.date(2026, 11, 25)
    shards = [load.Shard(day, "L1", n, 3, (f"{day}/f{n}.jsonl",), 10 * n) for n in range(3)]
    through_xcom = [load.Shard.from_dict(orjson.loads(orjson.dumps(s.to_dict()))) for s in reversed(shards)]
    assert load.LoadPlan.of_shards(through_xcom) == load.LoadPlan(day, "L1", tuple(shards))
    with pytest.raises(load.LoadError, match="not the 3 of load L1"):
        load.LoadPlan.of_shards(shards[:2])
    with pytest.raises(load.LoadError, match="not the 3 of load L1"):
        load.LoadPlan.of_shards([*shards[:2], load.Shard(day, "L2", 2, 3, (), 0)])


def test_a_shard_report_survives_xcom():
    report = load.ShardReport(1, "L1.1.abc", 2, 5, 4, 1, "/r/x.jsonl", {"hits-x": 4}, {"hits-x": {"a": None}}, 1.5)
    assert load.ShardReport.from_dict(orjson.loads(orjson.dumps(report.to_dict()))) == report
