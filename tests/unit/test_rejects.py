"""The rejects file (`hitmetrics.rejects`): written whole, or failing with its path and leaving nothing behind."""

from __future__ import annotations

import pytest

from hitmetrics import rejects as rejects_module
from hitmetrics.ingest import Reject
from hitmetrics.rejects import RejectsError, RejectsFile


def test_a_full_rejects_disk_names_the_file_and_leaves_nothing_behind(tmp_path, monkeypatch):
    rejects = RejectsFile(tmp_path / "rejects" / "load.jsonl")
    real_open = open

    def full_disk(path, mode):  # the temporary file is made, and every write to it fails as on a full disk
        real_open(path, mode).close()
        return real_open("/dev/full", mode, buffering=0)

    monkeypatch.setattr(rejects_module, "open", full_disk, raising=False)
    with pytest.raises(RejectsError) as caught:
        rejects.write(Reject("2026-11-25/a.jsonl", 3, "bad", "{"))
    assert str(caught.value).startswith(f"cannot write the rejects file {rejects.path}: No space left on device")
    rejects.discard()
    assert list((tmp_path / "rejects").iterdir()) == []


def test_an_unwritable_rejects_folder_names_the_file(tmp_path):
    (tmp_path / "rejects").write_text("a file where the folder should be")
    rejects = RejectsFile(tmp_path / "rejects" / "2026-11-25" / "load.jsonl")
    with pytest.raises(RejectsError, match="cannot write the rejects file .*/rejects/2026-11-25/load.jsonl"):
        rejects.write(Reject("2026-11-25/a.jsonl", 3, "bad", "{"))
    rejects.discard()
