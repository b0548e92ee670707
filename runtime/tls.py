"""Building TLS client contexts: the one place a CA bundle or client certificate is loaded."""

from __future__ import annotations

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
