from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp.abc import AbstractResolver, ResolveResult

from probe.app import checker_for
from probe.check import Checker, make_session
from probe.config import ProbeConfig, TargetConfig
from probe.lean import LeanClient


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StaticResolver(AbstractResolver):
    """A fixed table from host names to loopback ports, through aiohttp's resolver interface.

    Given to `make_session`, it sends a target such as `http://api.test` to a local server
    along the probe's own connector and trace hooks; a name not in the table fails as an
    unknown name does.
    """

    def __init__(self, hosts: dict[str, int] | None = None) -> None:
        self.hosts = dict(hosts or {})

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The table's loopback address for `host`, whatever port the URL named."""
        if host not in self.hosts:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: Name or service not known")
        address = ResolveResult(
            hostname=host,
            host="127.0.0.1",
            port=self.hosts[host],
            family=socket.AF_INET,
            proto=0,
            flags=socket.AI_NUMERICHOST,
        )
        return [address]

    async def close(self) -> None:
        """Nothing to release."""


@contextlib.asynccontextmanager
async def injected_checker(
    resolver: AbstractResolver, *, region: str = "eu-west", probe_id: str = "eu-west-1"
) -> AsyncIterator[Checker]:
    """A `Checker` on the probe's own sessions, with `resolver` injected in place of DNS."""
    async with (
        make_session(reuse_connections=False, resolver=resolver) as fresh,
        make_session(reuse_connections=True, resolver=resolver) as pooled,
        LeanClient(resolver) as lean,
    ):
        yield Checker(
            region=region,
            probe_id=probe_id,
            boot_id="1" * 32,
            fresh=fresh,
            pooled=pooled,
            lean=lean,
        )


@pytest.fixture
async def checker() -> AsyncIterator[Checker]:
    """A `Checker` as the probe builds it (`probe.app.checker_for`), for us-east-1."""
    config = ProbeConfig(
        region="us-east",
        probe_id="us-east-1",
        targets=[TargetConfig(name="any", url="http://127.0.0.1:1")],
    )
    async with checker_for(config, "0" * 32) as c:
        yield c
