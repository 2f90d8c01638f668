"""Unit tests of `hitmetrics.load` that need no Elasticsearch (the rest are in tests/integration/test_load.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
