"""`vigil check URL`: the first thing to run against a service, before writing probe.yaml.

It asks every health endpoint of every profile (probe/profiles.py) with the probe's own
`Checker`, prints what each answered, decides which profile fits, writes the `targets:` entry
for probe.yaml, loads that entry with the probe's config parser and checks the service once
more exactly as the probe will (health, endpoint and version), so what this command says is
what the probe will see.

The decision is pure (`choose`, `target_entry`, `exit_code`): it takes the answers observed
and returns the fit, the config entry and the exit code. `diagnose` does the I/O around it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from cli.demo import split_header
from probe.app import checker_for
from probe.check import Checker
from probe.config import ProbeConfig, TargetConfig, parse_config
from probe.profiles import PROFILES
from runtime.config import format_validation_error, parse_duration
from runtime.errors import ConfigError
from wire.result import NAME_PATTERN, ErrorKind, ProbeResult, VersionErrorKind

EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# Characters of each answer's body shown: enough to recognise it, short enough for one line.
EXCERPT_CHARS = 120
# The probe's defaults (probe/config.py TargetConfig); the entry states them only when it must.
DEFAULT_TIMEOUT = 5.0
DEFAULT_INTERVAL = 10.0
# Failures that mean the service was not reached at all (a TLS error means something answered).
UNREACHABLE_KINDS = frozenset({ErrorKind.CONNECT, ErrorKind.DNS, ErrorKind.TIMEOUT})
# Header names whose values are credentials: the entry refers to them as ${VAR}, never inline.
_SECRET_HEADER = re.compile(r"authorization|cookie|token|key|secret|session|password|auth", re.I)
# Headers that log a caller in: when the health endpoint answers without them, the entry
# sends them to the version endpoint only (`version_headers`), not with every health check.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie"})
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")

_VERSION_HINTS = {
    VersionErrorKind.AUTH: "it wants credentials: version_auth_header (an API key), "
    "version_headers (e.g. a Cookie) or version_login",
    VersionErrorKind.HTTP_STATUS: "it answered an error status; version_path: null skips "
    "the version check",
    VersionErrorKind.INVALID_BODY: "the answer has no readable version field",
}


@dataclass(frozen=True)
class Answer:
    """What one health endpoint of one profile answered.

    Attributes:
        profile: the profile the endpoint belongs to.
        path: the endpoint's path.
        primary: the profile's first endpoint (the one a target uses unless pinned).
        status: the HTTP status, None when no answer came.
        duration_ms: the whole request, as the probe times it.
        excerpt: the start of the body, one line, control characters removed.
        error_kind: why the probe would fail this answer; None: it passes.
        error: the probe's error text.
        shaped: the body is JSON carrying the endpoint's checked field: the service speaks
            this profile's language even when it is unhealthy.
    """

    profile: str
    path: str
    primary: bool
    status: int | None
    duration_ms: float
    excerpt: str
    error_kind: ErrorKind | None
    error: str | None
    shaped: bool

    def summary(self) -> str:
        """`200`, `401: Authentication required (AUTH_001)` or `connect: ...`."""
        if self.error_kind is None:
            return str(self.status)
        return self.error or str(self.error_kind)


@dataclass(frozen=True)
class Fit:
    """Which profile fits, on which endpoint, and why (or why none does)."""

    profile: str | None
    health_path: str | None
    reason: str
    healthy: bool = False
    unreachable: bool = False


@dataclass(frozen=True)
class Report:
    """Everything `vigil check` found, for the text and the JSON output."""

    url: str
    name: str
    timeout: float
    answers: tuple[Answer, ...]
    fit: Fit
    snippet: str | None
    env: tuple[str, ...]
    result: ProbeResult | None
    version_hint: str | None
    code: int


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of a body as one printable line of at most `limit` characters."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    # Control and format characters (escapes, bidi overrides) could rewrite the terminal.
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_shaped(body: bytes, json_field: str | None) -> bool:
    """True when `body` is a JSON object that has `json_field` (dotted) at all."""
    if json_field is None:
        return False
    try:
        value: Any = json.loads(body)
    except ValueError:
        return False
    for part in json_field.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _listing(answers: Sequence[Answer]) -> str:
    return ", ".join(f"{a.path} {a.summary()}" for a in answers)


def choose(answers: Sequence[Answer]) -> Fit:
    """Decide the profile and endpoint from the answers, in profile and endpoint order.

    The first endpoint that passes the probe's check fits. Without one, the first whose body
    has the profile's shape (e.g. `{"status":"error"}` with a 503) fits, unhealthy. Nothing
    reached on any endpoint is unreachable; anything else is no fit, with what was seen.
    """
    if not answers:
        return Fit(None, None, "no profile lists a health endpoint")
    if all(a.status is None and a.error_kind in UNREACHABLE_KINDS for a in answers):
        return Fit(None, None, answers[0].summary(), unreachable=True)
    passing = [a for a in answers if a.error_kind is None]
    shaped = [a for a in answers if a.shaped]
    if passing or shaped:
        found, healthy = (passing[0], True) if passing else (shaped[0], False)
        return Fit(
            found.profile,
            None if found.primary else found.path,
            _fit_reason(found, answers, healthy),
            healthy=healthy,
        )
    reason = f"no profile's endpoint answered as that profile does ({_listing(answers)})"
    if any(a.status in (401, 403) for a in answers):
        reason += "; a 401/403 wants credentials: pass them with --header"
    if all(a.status == 404 for a in answers):
        reason += "; for another service use profile: generic with its own health_path and body"
    return Fit(None, None, reason)


def _fit_reason(found: Answer, answers: Sequence[Answer], healthy: bool) -> str:
    state = "healthy" if healthy else f"unhealthy ({found.summary()})"
    if found.primary:
        return f"{found.profile} answered on its primary endpoint {found.path}: {state}"
    primary = next(a for a in answers if a.profile == found.profile and a.primary)
    return (
        f"{found.profile}: its primary endpoint {primary.path} answered {primary.summary()}, "
        f"{found.path} answered {state}; health_path pins the target there"
    )


def exit_code(fit: Fit, result_ok: bool | None) -> int:
    """0 fits and healthy, 3 unreachable, 1 anything else (unhealthy or no fit)."""
    if fit.unreachable:
        return EXIT_UNREACHABLE
    if fit.profile is not None and result_ok:
        return EXIT_OK
    return EXIT_UNHEALTHY


def env_name(header: str) -> str:
    """The environment variable the entry reads a credential header from."""
    return "VIGIL_" + re.sub(r"[^A-Z0-9]+", "_", header.upper()).strip("_")


def target_entry(
    name: str,
    url: str,
    fit: Fit,
    headers: Mapping[str, str],
    timeout: float,
    version_only: Collection[str] = (),
) -> tuple[dict[str, Any], dict[str, str]]:
    """The probe.yaml `targets:` entry for `fit`, and the ${VAR}s it reads (name to value).

    Credential headers go in as `${VIGIL_...}` so the entry can be pasted without a secret.
    Headers named in `version_only` go to `version_headers` (the version endpoint only)
    rather than `headers` (every request).
    """
    if fit.profile is None:
        raise ValueError("no profile fits: there is no entry to write")
    entry: dict[str, Any] = {"name": name, "url": url, "profile": fit.profile}
    if fit.health_path is not None:
        entry["health_path"] = fit.health_path
    if timeout != DEFAULT_TIMEOUT:
        entry["timeout"] = timeout
    if timeout >= DEFAULT_INTERVAL:
        entry["interval"] = timeout * 2
    env: dict[str, str] = {}
    written: dict[str, str] = {}
    version: dict[str, str] = {}
    for key, value in headers.items():
        if _SECRET_HEADER.search(key):
            env[env_name(key)] = value
            value = "${" + env_name(key) + "}"
        (version if key in version_only else written)[key] = value
    if written:
        entry["headers"] = written
    if version:
        entry["version_headers"] = version
    return entry, env


def snippet(entry: Mapping[str, Any]) -> str:
    """The entry as the `targets:` block of probe.yaml."""
    return yaml.safe_dump({"targets": [dict(entry)]}, sort_keys=False)


def parse_snippet(text: str, env: Mapping[str, str]) -> TargetConfig:
    """Load a `targets:` block with the probe's own config parser.

    Raises:
        ConfigError: the probe would refuse it.
    """
    config = parse_config(
        "region: check\nprobe_id: vigil-check\n" + text, source="vigil check", env=env
    )
    return config.targets[0]


def default_name(url: str) -> str:
    """A target name from the URL's host (e.g. `127.0.0.1`, `api.example.com`)."""
    host = urlsplit(url).hostname or ""
    name = _NAME_CHARS.sub("-", host).strip("-._")[:63]
    return name if re.match(NAME_PATTERN, name) else "target"


def version_hint(target: TargetConfig, result: ProbeResult) -> str | None:
    """Where the version came from, or why it could not be read."""
    endpoint = next(e for e in target.health_endpoints if e.path == result.health_path)
    where = (
        f"the body of {result.health_path}"
        if endpoint.version_field is not None
        else f"{target.version_path}"
    )
    if result.version is not None:
        return f"from {where}"
    if result.version_error is None:
        return "no version check (version_path: null)"
    why = _VERSION_HINTS.get(result.version_error, "the request failed")
    kind = str(result.version_error)
    if result.version_status is not None:
        kind += f" ({result.version_status})"
    return f"{kind} from {where}: {why}"


async def observe(checker: Checker, base: Mapping[str, Any]) -> list[Answer]:
    """Ask every health endpoint of every profile once, concurrently, with the real checks."""
    jobs = []
    for profile_name, profile in PROFILES.items():
        target = TargetConfig.model_validate({**base, "profile": profile_name})
        for index, endpoint in enumerate(profile.endpoints):
            # The checker keeps a body only for an endpoint that carries the version; naming a
            # field keeps it for the excerpt and changes nothing in how the answer is judged.
            kept = dataclasses.replace(endpoint, version_field=endpoint.version_field or "-")
            jobs.append((profile_name, index == 0, endpoint, checker.health(target, kept)))
    outcomes = await asyncio.gather(*(job[3] for job in jobs))
    return [
        Answer(
            profile=profile_name,
            path=endpoint.path,
            primary=primary,
            status=out.status_code,
            duration_ms=out.duration_ms,
            excerpt=excerpt(out.body),
            error_kind=out.failure.kind if out.failure else None,
            error=out.failure.error if out.failure else None,
            shaped=is_shaped(out.body, endpoint.json_field),
        )
        for (profile_name, primary, endpoint, _), out in zip(jobs, outcomes, strict=True)
    ]


async def credentials_for_version_only(
    checker: Checker, base: Mapping[str, Any], fit: Fit
) -> frozenset[str]:
    """The credential headers the fitted health endpoint answers without (none or all).

    The endpoint is asked once more without Authorization and Cookie; when it answers as it
    did with them (passing, or in the profile's shape when unhealthy), they are needed only
    for the version endpoint.
    """
    headers: Mapping[str, str] = base.get("headers", {})
    credentials = frozenset(k for k in headers if k.lower() in CREDENTIAL_HEADERS)
    if fit.profile is None or not credentials:
        return frozenset()
    endpoints = PROFILES[fit.profile].endpoints
    path = fit.health_path or endpoints[0].path
    endpoint = next(e for e in endpoints if e.path == path)
    bare = {k: v for k, v in headers.items() if k not in credentials}
    target = TargetConfig.model_validate({**base, "profile": fit.profile, "headers": bare})
    kept = dataclasses.replace(endpoint, version_field=endpoint.version_field or "-")
    out = await checker.health(target, kept)
    if fit.healthy:
        answered = out.failure is None
    else:
        shaped = is_shaped(out.body, endpoint.json_field)
        answered = shaped and out.status_code not in (401, 403)
    return credentials if answered else frozenset()


async def diagnose(
    url: str, name: str, headers: Mapping[str, str], request_timeout: float
) -> Report:
    """Observe, choose, write the entry, load it, and check the service as the probe will.

    Raises:
        ValueError: the URL, name or a header is not one the probe accepts.
    """
    timeout = request_timeout
    base: dict[str, Any] = {
        "name": name,
        "url": url,
        "timeout": timeout,
        "interval": max(DEFAULT_INTERVAL, timeout * 2),
        "headers": dict(headers),
        "version_path": None,
    }
    # Validated before any request, so a bad URL is a usage error and not "unreachable".
    TargetConfig.model_validate(base)
    config = ProbeConfig(
        region="check", probe_id="vigil-check", targets=[TargetConfig.model_validate(base)]
    )
    async with checker_for(config, "0" * 32) as checker:
        answers = tuple(await observe(checker, base))
        fit = choose(answers)
        if fit.profile is None:
            return Report(
                url, name, timeout, answers, fit, None, (), None, None, exit_code(fit, None)
            )
        version_only = await credentials_for_version_only(checker, base, fit)
        entry, env = target_entry(name, url.rstrip("/"), fit, headers, timeout, version_only)
        text = snippet(entry)
        target = parse_snippet(text, env)
        result = await checker.run(target, time.time())
    return Report(
        url,
        name,
        timeout,
        answers,
        fit,
        text,
        tuple(env),
        result,
        version_hint(target, result),
        exit_code(fit, result.ok),
    )


def render_text(report: Report) -> str:
    """The report for a terminal."""
    lines = [f"vigil check {report.url} (timeout {report.timeout:g}s)", ""]
    width = max([len(a.path) for a in report.answers] + [8])
    lines.append(f"  {'profile':<10} {'endpoint':<{width}}  {'answer':<12} {'time':>8}  body")
    for a in report.answers:
        answer = str(a.status) if a.status is not None else str(a.error_kind)
        lines.append(
            f"  {a.profile:<10} {a.path:<{width}}  {answer:<12} {a.duration_ms:>5.0f} ms  "
            f"{a.excerpt or '-'}"
        )
    lines.append("")
    fit, result = report.fit, report.result
    if fit.profile is None:
        lines.append(("unreachable: " if fit.unreachable else "no profile fits: ") + fit.reason)
    else:
        lines.append(f"profile: {fit.profile} ({fit.reason})")
    if result is not None:
        health = "ok" if result.ok else f"failing: {result.error}"
        lines.append(f"health as the probe checks it: {health} (on {result.health_path})")
        lines.append(f"version: {result.version or 'unknown'} ({report.version_hint})")
    if report.snippet is not None:
        lines += ["", "probe.yaml:", report.snippet.rstrip()]
        for var in report.env:
            lines.append(
                f"# set {var} in the probe's environment (a credential, kept out of the file)"
            )
    lines.append(f"\nexit {report.code}")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    """The report for machines."""
    result = report.result
    doc = {
        "url": report.url,
        "name": report.name,
        "exit_code": report.code,
        "answers": [
            {
                "profile": a.profile,
                "path": a.path,
                "status": a.status,
                "duration_ms": round(a.duration_ms, 1),
                "excerpt": a.excerpt,
                "error_kind": a.error_kind,
                "error": a.error,
            }
            for a in report.answers
        ],
        "profile": report.fit.profile,
        "health_path": result.health_path if result else None,
        "reason": report.fit.reason,
        "unreachable": report.fit.unreachable,
        "healthy": result.ok if result else False,
        "error": result.error if result else None,
        "version": result.version if result else None,
        "version_error": result.version_error if result else None,
        "version_status": result.version_status if result else None,
        "version_hint": report.version_hint,
        "snippet": report.snippet,
        "env": list(report.env),
    }
    return json.dumps(doc, indent=2) + "\n"


def run(
    url: str,
    name: str | None,
    header_texts: Sequence[str],
    timeout_text: str,
    as_json: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """`vigil check`: print the report and return its exit code (2 for a usage error)."""
    try:
        timeout = parse_duration(timeout_text)
        headers = dict(split_header(h) for h in header_texts)
        report = asyncio.run(diagnose(url, name or default_name(url), headers, timeout))
    except ValidationError as exc:
        # Without the input values: a header may hold a secret.
        err.write(f"vigil check: {format_validation_error(exc)}\n")
        return EXIT_USAGE
    except (ValueError, ConfigError) as exc:
        err.write(f"vigil check: {exc}\n")
        return EXIT_USAGE
    out.write(render_json(report) if as_json else render_text(report))
    return report.code
