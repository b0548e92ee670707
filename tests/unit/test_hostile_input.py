"""The probe's pure defences: the bounded body decoder, the DER expiry walk, parse errors."""

from __future__ import annotations

import datetime
import random
import ssl
import zlib

import aiohttp
import pytest
import trustme
from aiohttp import http_exceptions
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError
from yarl import URL

from probe.body import BodyDecoder
from probe.check import cert_not_after
from probe.config import TargetConfig
from probe.verdict import (
    BodyEncodingError,
    BodyTooLargeError,
    Failure,
    classify_exception,
    version_error_kind,
)
from wire.result import MAX_CERT_EPOCH_S, ErrorKind, VersionErrorKind

LIMIT = 4096
WBITS = {"gzip": 31, "deflate": 15, "raw-deflate": -15}


def compress(data: bytes, kind: str) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, WBITS[kind])
    return packer.compress(data) + packer.flush()


def decode(encoding: str, sent: bytes, piece: int = 1024, limit: int = LIMIT) -> bytes:
    decoder = BodyDecoder(encoding, limit)
    for i in range(0, len(sent), piece):
        decoder.feed(sent[i : i + piece])
        if decoder.complete:
            break
    return decoder.finish()


@pytest.mark.parametrize("kind", ["identity", "gzip", "deflate", "raw-deflate"])
@pytest.mark.parametrize("piece", [1, 7, 1024, 1 << 20])
def test_decoder_takes_the_cap_and_refuses_one_byte_more(kind: str, piece: int) -> None:
    """At the cap the body decodes whole, however it arrives; one byte over raises."""
    encoding = "deflate" if kind == "raw-deflate" else kind
    body = random.Random(1).randbytes(LIMIT // 2) + bytes(LIMIT // 2)

    def sent(data: bytes) -> bytes:
        return data if kind == "identity" else compress(data, kind)

    assert decode(encoding, sent(body), piece) == body
    with pytest.raises(BodyTooLargeError):
        decode(encoding, sent(body + b"!"), piece)


def test_decoder_stops_a_bomb_within_the_cap() -> None:
    """A 64 MiB gzip bomb in one piece never yields more than the cap plus one byte."""
    decoder = BodyDecoder("gzip", 64 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    sent = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()
    assert len(sent) < decoder.encoded_limit  # so it is decompression that catches it
    with pytest.raises(BodyTooLargeError, match="decompressed"):
        decoder.feed(sent)
    assert decoder._size <= 64 * 1024 + 1


def test_decoder_bounds_what_is_sent_too() -> None:
    """Empty deflate blocks decode to nothing, so the bytes as sent are bounded as well."""
    decoder = BodyDecoder("deflate", LIMIT)
    empty_stored_block = b"\x00\x00\x00\xff\xff"
    for _ in range(decoder.encoded_limit // len(empty_stored_block)):
        decoder.feed(empty_stored_block)
    with pytest.raises(BodyTooLargeError, match="as sent"):
        decoder.feed(empty_stored_block)


@pytest.mark.parametrize(
    ("encoding", "sent", "message"),
    [
        ("br", b"\x0b", "unsupported Content-Encoding 'br'"),
        ("gzip, gzip", b"", "unsupported Content-Encoding"),
        ("gzip", b"not gzip at all", "gzip data does not decode"),
        ("gzip", compress(b'{"status":"ok"}', "gzip")[:-4], "gzip data is truncated"),
        ("deflate", b"x", "deflate data is truncated"),
    ],
)
def test_decoder_refuses_what_does_not_decode(encoding: str, sent: bytes, message: str) -> None:
    """Unknown codings, garbage and truncated streams are encoding errors, not bodies."""
    with pytest.raises(BodyEncodingError, match=message):
        decode(encoding, sent)


def test_decoder_passes_an_empty_compressed_body() -> None:
    """An empty body with a Content-Encoding header is an empty body."""
    assert decode("gzip", b"") == b""


def der_of(not_after: datetime.datetime) -> bytes:
    cert = trustme.CA().issue_cert("vigil.test", not_after=not_after)
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


@pytest.mark.parametrize(
    "not_after",
    [
        datetime.datetime(2031, 5, 17, 12, 34, 56, tzinfo=datetime.UTC),
        datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),
        datetime.datetime(2050, 1, 1, 0, 0, 0, tzinfo=datetime.UTC),
        datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),
    ],
)
def test_expiry_is_read_from_der(not_after: datetime.datetime) -> None:
    """notAfter, as UTCTime up to 2049 and GeneralizedTime after, is read to the second."""
    assert cert_not_after(der_of(not_after)) == not_after.timestamp()


def test_expiry_walk_never_raises_on_junk() -> None:
    """Truncations give None; flipped bytes and random bytes give None or a sane time."""
    der = der_of(datetime.datetime(2031, 5, 17, tzinfo=datetime.UTC))
    for end in range(len(der)):
        assert cert_not_after(der[:end]) is None
    rng = random.Random(11)
    junk = [rng.randbytes(rng.randrange(0, 64)) for _ in range(2000)]
    for _ in range(3000):
        flipped = bytearray(der)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(der))] = rng.randrange(256)
        junk.append(bytes(flipped))
    junk += [b"\x30\x84\xff\xff\xff\xff", b"\x30\x80\x00\x00", b"\x30\x00", b"\x30"]
    for data in junk:
        value = cert_not_after(data)
        assert value is None or 0.0 <= value <= MAX_CERT_EPOCH_S


URL_ = URL("http://api.test/")
REQUEST = aiohttp.RequestInfo(URL_, "GET", CIMultiDictProxy(CIMultiDict()), URL_)


def payload_error(cause: http_exceptions.HttpProcessingError) -> aiohttp.ClientPayloadError:
    exc = aiohttp.ClientPayloadError(str(cause))
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (
            aiohttp.ClientResponseError(
                REQUEST, (), status=400, message="Invalid header token:\n\n  b'Bad'\n    ^"
            ),
            ErrorKind.PROTOCOL,
            "probe could not parse the response: Invalid header token: b'Bad'",
        ),
        (
            payload_error(http_exceptions.TransferEncodingError("Invalid chunk size")),
            ErrorKind.PROTOCOL,
            "probe could not parse the body: Invalid chunk size",
        ),
        (
            payload_error(http_exceptions.ContentEncodingError("Can not decode")),
            ErrorKind.PROTOCOL,
            "probe could not parse the body: Can not decode",
        ),
        (
            http_exceptions.BadStatusLine("HTTQ/9"),
            ErrorKind.PROTOCOL,
            "probe could not parse the response: Bad status line 'HTTQ/9'",
        ),
        (
            BodyEncodingError("gzip data is truncated"),
            ErrorKind.PROTOCOL,
            "probe could not decode the body: gzip data is truncated",
        ),
        # A body cut short by the connection closing is the network's failure, not a parse.
        (
            payload_error(http_exceptions.ContentLengthError("Not enough data to satisfy")),
            ErrorKind.CONNECT,
            "connection closed before the whole body arrived (Not enough data to satisfy)",
        ),
        (
            payload_error(http_exceptions.TransferEncodingError("Not enough data to satisfy")),
            ErrorKind.CONNECT,
            "connection closed before the whole body arrived (Not enough data to satisfy)",
        ),
        (
            BodyTooLargeError(65536),
            ErrorKind.BODY_TOO_LARGE,
            "body larger than max_body (65536 bytes decompressed); reading stopped",
        ),
    ],
)
def test_parse_errors_are_the_probes_not_a_400(
    exc: BaseException, kind: ErrorKind, text: str
) -> None:
    """The parser's errors are `protocol` in the probe's words; a cut-short body is `connect`."""
    failure = classify_exception(exc)
    assert failure.kind is kind
    assert failure.error.startswith(text), failure.error
    assert "400" not in failure.error


@pytest.mark.parametrize(
    ("kind", "version_kind"),
    [
        (ErrorKind.PROTOCOL, VersionErrorKind.INVALID_BODY),
        (ErrorKind.BODY_TOO_LARGE, VersionErrorKind.INVALID_BODY),
        (ErrorKind.CONNECT, VersionErrorKind.CONNECT),
    ],
)
def test_version_kinds_of_unusable_answers(kind: ErrorKind, version_kind: VersionErrorKind) -> None:
    """A version answer that cannot be parsed or is too large is `invalid_body`."""
    assert version_error_kind(Failure(kind, "x")) is version_kind


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(1023, False), (1024, True), (16 * 1024 * 1024, True), (16 * 1024 * 1024 + 1, False)],
)
def test_max_body_is_bounded(value: int, accepted: bool) -> None:
    """max_body defaults to 64 KiB and takes 1 KiB to 16 MiB."""
    fields = {"name": "api", "url": "http://api.test", "max_body": value}
    assert TargetConfig(name="api", url="http://api.test").max_body == 64 * 1024
    if accepted:
        assert TargetConfig.model_validate(fields).max_body == value
    else:
        with pytest.raises(ValidationError, match="max_body"):
            TargetConfig.model_validate(fields)


def test_a_lone_surrogate_in_a_body_never_makes_a_result_unpublishable() -> None:
    """A lone surrogate from a JSON body never makes a result that cannot be built.

    No UTF-8 result can carry one: the version is refused as unusable and an error text has
    it replaced (a result that cannot be built is a failure nobody hears of).
    """
    from probe.verdict import error_detail, parse_version
    from wire.result import ProbeResult

    assert parse_version(200, b'{"current":"1.0\\ud800"}', "current") == (
        None,
        VersionErrorKind.INVALID_BODY,
    )
    text = error_detail(b'{"error":"db \\ud800 down"}')
    assert text == "db ? down"
    ProbeResult(
        probe_id="p",
        region="r",
        target="t",
        boot_id="b" * 32,
        seq=1,
        scheduled_at=1.0,
        started_at=1.0,
        duration_ms=1.0,
        ok=False,
        status_code=503,
        error_kind=ErrorKind.HTTP_STATUS,
        error=text,
        consecutive_failures=1,
        consecutive_successes=0,
    )
