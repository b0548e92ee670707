"""A check that fails for the probe's own reasons is inconclusive: it never counts as down."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from pydantic import ValidationError

from probe.config import TargetConfig
from tests.component.conftest import StaticResolver, injected_checker
from tests.conftest import Serve
from tests.rulekit import REGIONS, T0, RegionProbe, engine, verdict
from wire.result import ErrorKind, ProbeResult
from wire.state import Verdict


class BuggyResolver(StaticResolver):
    """Raises an error no network would raise while `broken`: a stand-in for a probe bug."""

    broken = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self.broken:
            raise RuntimeError("planted bug inside the probe")
        return await super().resolve(host, port, family)


async def test_a_probe_side_error_is_inconclusive_and_keeps_the_streak(serve: Serve) -> None:
    """An internal error gives an inconclusive result with the last real check's streak."""

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/api/health/ping", ok)
    port = int((await serve(app)).rsplit(":", 1)[1])
    resolver = BuggyResolver({"api.test": port})
    target = TargetConfig(name="api", url="http://api.test", version_path=None)
    async with injected_checker(resolver) as checker:
        first = await checker.run(target, T0)
        second = await checker.run(target, T0 + 10)
        resolver.broken = True
        bad = await checker.run(target, T0 + 20)
        resolver.broken = False
        third = await checker.run(target, T0 + 30)
    assert (first.consecutive_successes, second.consecutive_successes) == (1, 2)
    assert bad.inconclusive
    assert not bad.ok
    assert bad.error_kind is ErrorKind.INTERNAL
    assert "planted bug" in (bad.error or "")
    assert (bad.consecutive_failures, bad.consecutive_successes) == (0, 2)
    assert third.consecutive_successes == 3


def inconclusive(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "ok": False, "error_kind": "internal", "inconclusive": True}


def test_the_wire_model_keeps_inconclusive_results_honest() -> None:
    """An inconclusive result must be a failed internal check carrying one streak."""
    base = RegionProbe("us-east", successes=1).check(True, T0).model_dump(by_alias=True)
    assert ProbeResult.model_validate(inconclusive(base)).inconclusive
    with pytest.raises(ValidationError):
        ProbeResult.model_validate({**inconclusive(base), "error_kind": "timeout"})
    with pytest.raises(ValidationError):
        ProbeResult.model_validate({**inconclusive(base), "ok": True, "error_kind": None})
    both = {"consecutive_failures": 2, "consecutive_successes": 2}
    with pytest.raises(ValidationError):
        ProbeResult.model_validate({**inconclusive(base), **both})


def test_inconclusive_results_never_make_a_target_down() -> None:
    """Every region inconclusive for many checks, whatever streak they carry: never down."""
    e = engine()
    probes = [RegionProbe(r, successes=1) for r in REGIONS]
    for p in probes:
        e.apply_result(p.check(True, T0), T0)
    for i in range(1, 6):
        now = T0 + 10 * i
        for p in probes:
            doc = inconclusive(p.check(False, now).model_dump(by_alias=True))
            e.apply_result(ProbeResult.model_validate(doc), now)  # carries failures 1..5
        e.evaluate("api", now)
        assert verdict(e) is not Verdict.DOWN
    ev = e.judge("api", T0 + 50)
    assert ev.failing == frozenset()
    # Only inconclusive news for 50 s: as useless as silence, so stale, not fresh.
    assert ev.stale == frozenset(REGIONS)
