"""Building TLS client contexts: the one place a CA bundle or client certificate is loaded."""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path


def client_context(
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """A client TLS context: system CAs or `ca_file`, an optional client certificate.

    `insecure` turns off hostname and chain verification (self-signed lab setups only).

    Raises:
        OSError, ssl.SSLError: a file cannot be loaded.
    """
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _stamp(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _problem(key: str, path: Path | None, exc: OSError | ssl.SSLError) -> ValueError:
    if isinstance(exc, ssl.SSLError):
        return ValueError(f"{key}: cannot load {path}: {exc.reason or exc}")
    return ValueError(f"{key}: cannot read {path}: {exc.strerror or exc}")


@functools.lru_cache(maxsize=64)
def _cached(
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    insecure: bool,
    _stamps: tuple[tuple[int, int] | None, ...],
) -> ssl.SSLContext:
    try:
        ctx = client_context(ca_file=ca_file, insecure=insecure)
    except (OSError, ssl.SSLError) as exc:
        raise _problem("ca_file", ca_file, exc) from None
    if cert_file is not None:
        if key_file is not None:
            try:
                key_file.read_bytes()
            except OSError as exc:
                raise _problem("key_file", key_file, exc) from None
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise _problem("cert_file", cert_file, exc) from None
    return ctx


def checked_context(
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    insecure: bool = False,
) -> ssl.SSLContext:
    """`client_context` for config validation: loaded once per set of files and reused.

    Ten thousand targets naming one CA bundle load it once (a load costs tens of ms); a file
    changed on disk (another mtime or size) is loaded afresh. The context is built while the
    config is validated, so a bad file is a config error at start, never a failed check later.

    Raises:
        ValueError: "ca_file: cannot read /path: reason" (or cert_file, key_file).
    """
    if key_file is not None and cert_file is None:
        raise ValueError("key_file: set cert_file too (the key belongs to a certificate)")
    stamps = (_stamp(ca_file), _stamp(cert_file), _stamp(key_file))
    return _cached(ca_file, cert_file, key_file, insecure, stamps)
