"""Unit tests of `hitmetrics.load` that need no Elasticsearch (the rest are in tests/integration/test_load.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hitmetrics import load
from hitmetrics.ingest import Reject

# Allocates an 8 MB body, frees it, allocates another and prints whether glibc served that one with mmap.
_SECOND_BODY_MMAPPED = """
import ctypes, sys
from hitmetrics import load

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert load._fix_mmap_threshold()
body = bytearray(load.CHUNK_BYTES)
del body
body = bytearray(load.CHUNK_BYTES)
print(libc.mallinfo2().hblkhd >= load.CHUNK_BYTES)
"""


@pytest.mark.parametrize(("threshold", "mmapped"), [("default", "False"), ("fixed", "True")])
def test_every_body_is_mmapped_once_the_threshold_is_fixed(threshold: str, mmapped: str) -> None:
    # By default glibc raises its threshold past a freed mmapped block, so later bodies come from the heap.
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_BODY_MMAPPED, threshold], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == mmapped


def test_a_full_rejects_disk_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    rejects = load._RejectsFile(tmp_path / "rejects" / "load.jsonl")
    real_open = open

    def full_disk(path, mode):  # the temporary file is made, and every write to it fails as on a full disk
        real_open(path, mode).close()
        return real_open("/dev/full", mode, buffering=0)

    monkeypatch.setattr(load, "open", full_disk, raising=False)
    with pytest.raises(load.LoadError) as caught:
        rejects.write(Reject("2026-11-25/a.jsonl", 3, "bad", "{"))
    assert str(caught.value).startswith(f"cannot write the rejects file {rejects.path}: No space left on device")
    rejects.discard()
    assert list((tmp_path / "rejects").iterdir()) == []


def test_an_unwritable_rejects_folder_names_the_file(tmp_path):
    (tmp_path / "rejects").write_text("a file where the folder should be")
    rejects = load._RejectsFile(tmp_path / "rejects" / "2026-11-25" / "load.jsonl")
    with pytest.raises(load.LoadError, match="cannot write the rejects file .*/rejects/2026-11-25/load.jsonl"):
        rejects.write(Reject("2026-11-25/a.jsonl", 3, "bad", "{"))
    rejects.discard()
