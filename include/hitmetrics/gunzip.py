"""Damaged gzip files read as far as they can be: every byte that decompresses before the damage.

`gzip.GzipFile` raises for a whole read when the file is cut short or followed by bytes that are not gzip, losing
the good lines of that block; the loader must keep every whole line before the damage (see `ingest.parse_batches`).
"""

from __future__ import annotations

import zlib
from typing import IO, Any

INPUT_BYTES = 1 << 16  # compressed bytes read at a time


class Gunzip:
    """The decompressed bytes of a gzip stream, as far as they can be had: `read` hands out every byte that
    decompresses before it raises for the damage (a file cut short, corrupt data, bytes after the last member
    that are not gzip). A cut or trailing bytes leave what came before exact; corrupt data may have been
    decompressed wrongly for a while before zlib noticed, which the error says. Members one after another are
    read as one stream (as `gzip` does), zero padding after them is skipped. Output is bounded per call: a small
    file that inflates hugely is read a block at a time.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.inflate: Any = zlib.decompressobj(wbits=31)  # None between members
        self.input = b""  # read from `raw`, not yet decompressed
        self.salvaged = b""  # decompressed before a damage found in the same input, still to hand out
        self.damage: Exception | None = None

    def read(self, size: int) -> bytes:
        while True:
            if self.salvaged:
                out, self.salvaged = self.salvaged[:size], self.salvaged[size:]
                return out
            if self.damage is not None:
                raise self.damage
            if not self.input:
                self.input = self.raw.read(INPUT_BYTES)
                if not self.input:
                    if self.inflate is None:
                        return b""
                    self.damage = EOFError("the gzip data ends before its end-of-stream marker")
                    continue
            if self.inflate is None and not self._next_member():
                continue
            out = self._decompress(size)
            if out:
                return out

    def _next_member(self) -> bool:
        """At the end of a member: start the next one if `input` begins one. False when there is none (yet)."""
        self.input = self.input.lstrip(b"\0")
        while len(self.input) == 1 and (more := self.raw.read(INPUT_BYTES)):
            self.input += more
        if not self.input:
            return False  # zero padding so far: read on
        if not self.input.startswith(b"\x1f\x8b"):
            self.damage, self.input = zlib.error("bytes after the end of the gzip data are not gzip"), b""
            return False
        self.inflate = zlib.decompressobj(wbits=31)
        return True

    def _decompress(self, size: int) -> bytes:
        saved = self.inflate.copy()
        try:
            out = self.inflate.decompress(self.input, size)
        except zlib.error as error:
            # The bytes before the damage in this input decompress one at a time (a byte inflates to 1 KB at most).
            salvaged = []
            for index in range(len(self.input)):
                try:
                    salvaged.append(saved.decompress(self.input[index : index + 1]))
                except zlib.error:
                    break
            # Deflate notices damage late (at the member's checksum, at worst): what came before may be damaged too.
            damage = zlib.error(f"the gzip data is corrupt ({error}); the lines before may be damaged too")
            self.salvaged, self.damage, self.input = b"".join(salvaged), damage, b""
            return b""
        if self.inflate.eof:
            self.input, self.inflate = self.inflate.unused_data, None
        else:
            self.input = self.inflate.unconsumed_tail
        return out
