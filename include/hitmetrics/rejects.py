"""A load's rejects file: every rejected record with its file, line and reason, put in place whole."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import IO

import orjson

from hitmetrics.ingest import LandingPath, Reject


class RejectsError(OSError):
    """The rejects file cannot be written; the message names it."""


class RejectsFile:
    """The load's rejects as JSON lines, put in place whole: a local file is written aside and renamed, an object
    (`s3://…`) is spooled to a local temporary file and uploaded at the end.

    A file that cannot be written (a full or read-only disk) fails the load with its path, and leaves no
    temporary file behind.
    """

    def __init__(self, path: LandingPath) -> None:
        self.path = path
        # A local file is written aside and renamed; None: an object, spooled and uploaded at commit.
        self.temporary = path.with_name(f".{path.name}.partial") if isinstance(path, Path) else None
        self.stream: IO[bytes] | None = None

    def write(self, reject: Reject) -> None:
        with self._naming_the_path():
            self._open().write(orjson.dumps(reject._asdict()) + b"\n")

    def append(self, lines: IO[bytes]) -> None:
        """Copy `lines` (rejects as JSON lines, e.g. another rejects file) onto the end."""
        with self._naming_the_path():
            shutil.copyfileobj(lines, self._open())

    def _open(self) -> IO[bytes]:
        if self.stream is None:
            if self.temporary is None:
                self.stream = tempfile.TemporaryFile()  # noqa: SIM115 - closed by commit() or discard()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.stream = open(self.temporary, "wb")  # noqa: SIM115 - closed by commit() or discard()
        return self.stream

    def commit(self) -> str | None:
        """Put the file in place; its path or URL, None when nothing was rejected."""
        if self.stream is None:
            return None
        with self._naming_the_path():
            if self.temporary is None:
                self.stream.seek(0)
                self.path.parent.mkdir(parents=True, exist_ok=True)  # a file:// folder; nothing on object stores
                with self.path.open("wb") as out:
                    shutil.copyfileobj(self.stream, out)
            else:
                self.stream.flush()
                os.fsync(self.stream.fileno())
                self.stream.close()
                os.replace(self.temporary, self.path)
        self.discard()  # only now: a commit that failed half way is discarded whole
        return str(self.path)

    def discard(self) -> None:
        """Drop an unfinished file (the load failed before commit) or what is left of a finished one."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        try:
            stream.close()  # may fail to flush on a full disk: the file goes all the same
        except OSError:
            pass
        finally:
            if self.temporary is not None:
                self.temporary.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _naming_the_path(self) -> Generator[None]:
        try:
            yield
        except OSError as error:
            raise RejectsError(
                f"cannot write the rejects file {self.path}: {error.strerror or error}; "
                "free the space or fix the permissions, then run the load again"
            ) from error


def merge_rejects(parts: Sequence[LandingPath], target: LandingPath) -> str | None:
    """Put the rejects files `parts` (the shards') together, in order, as `target`, then delete them; returns
    `target`'s path or URL, None when there are no parts.

    Safe to repeat: `target` is written whole before any part is deleted, so a part found missing next to an
    existing `target` means an earlier call got that far.
    """
    if not parts:
        return None
    try:
        if not (target.exists() and not all(part.exists() for part in parts)):
            out = RejectsFile(target)
            try:
                for part in parts:
                    with part.open("rb") as stream:
                        out.append(stream)
                out.commit()
            finally:
                out.discard()
        for part in parts:
            part.unlink(missing_ok=True)
    except OSError as error:
        if isinstance(error, RejectsError):
            raise
        raise RejectsError(f"cannot merge the rejects files into {target}: {error.strerror or error}") from error
    return str(target)
