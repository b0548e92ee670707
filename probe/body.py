"""Bodies as the probe reads them: decoded as they arrive, never held past a limit."""

from __future__ import annotations

import zlib
from typing import Any

from probe.verdict import BodyEncodingError, BodyTooLargeError


class BodyDecoder:
    """Decodes a body as it arrives and refuses to hold more than `limit` decoded bytes.

    Decompression is bounded per call (`max_length`), so a small bomb never expands past the
    limit in memory, and the compressed input is bounded too, so a stream that decodes to
    nothing (empty deflate blocks) cannot be read forever either.
    """

    def __init__(self, content_encoding: str, limit: int) -> None:
        coding = content_encoding.strip().lower()
        if coding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise BodyEncodingError(f"unsupported Content-Encoding {content_encoding[:40]!r}")
        self.limit = limit
        self.compressed = coding not in ("", "identity")
        # Deflate's worst case adds 5 bytes per 64 KiB stored block, gzip a header and trailer
        # of a few dozen bytes: a real compressed body is never much larger than its content.
        self.encoded_limit = limit + limit // 64 + 1024 if self.compressed else limit
        self._coding = coding
        self._inflate: Any = None
        if coding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        # deflate: zlib-wrapped by the RFC, raw from some servers; the first bytes tell.
        self._head = b""
        self._encoded = 0
        self._parts: list[bytes] = []
        self._size = 0

    def refuse_announced(self, length: int | None) -> None:
        """Refuse at once a body whose announced length (Content-Length) is over the limit.

        Raises:
            BodyTooLargeError: `length` is more than this decoder would read as sent.
        """
        if length is not None and length > self.encoded_limit:
            raise BodyTooLargeError(self.limit, encoded=self.compressed)

    @property
    def complete(self) -> bool:
        """True once a compressed stream has ended: nothing after it needs reading."""
        return self._inflate is not None and bool(self._inflate.eof)

    def _start_deflate(self, data: bytes) -> bytes:
        self._head += data
        if len(self._head) < 2:
            return b""
        cmf, flg = self._head[0], self._head[1]
        zlib_wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        data, self._head = self._head, b""
        return data

    def feed(self, data: bytes) -> None:
        """Decode one piece of the body as sent.

        Raises:
            BodyTooLargeError: the body, sent or decoded, is larger than the limit.
            BodyEncodingError: the data does not decode.
        """
        self._encoded += len(data)
        if self._encoded > self.encoded_limit:
            raise BodyTooLargeError(self.limit, encoded=self.compressed)
        if not self.compressed:
            self._keep(data)
            return
        if self._inflate is None:
            data = self._start_deflate(data)
        try:
            while data and not self._inflate.eof:
                # One byte over the limit is enough to know the body is too large.
                self._keep(self._inflate.decompress(data, self.limit - self._size + 1))
                data = self._inflate.unconsumed_tail
        except zlib.error as exc:
            raise BodyEncodingError(f"{self._coding} data does not decode: {exc}") from exc

    def _keep(self, decoded: bytes) -> None:
        self._size += len(decoded)
        if self._size > self.limit:
            raise BodyTooLargeError(self.limit)
        self._parts.append(decoded)

    def finish(self) -> bytes:
        """The decoded body, once the body as sent has ended.

        Raises:
            BodyEncodingError: a compressed body ended before its stream did.
        """
        if self.compressed and not self.complete:
            if self._encoded == 0:
                return b""  # an empty body with a Content-Encoding header
            raise BodyEncodingError(f"{self._coding} data is truncated")
        return b"".join(self._parts)
