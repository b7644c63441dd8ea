"""Idempotency-Key: a retried POST gets the original response back and creates nothing again.

A POST that carries the header claims (project, key) in `idempotency_keys` before its handler runs,
then stores the response it produced. A later request with the same key in the same project:

- same request (method, path without its mount prefix, query without `api-version`, body):
  the stored response, byte for byte, with `Idempotent-Replayed: true`;
- a different request: 400 `idempotency_key_reused`;
- while the first one still runs: 409 `idempotency_key_in_use`.

What is stored: every response below 500 except the transient refusals (408, 409, 425, 429), so a
request that failed validation fails the same way when retried. A 5xx, an exception or a streamed
response (`text/event-stream`, or any response written while it was produced) releases the claim
instead, and a retry runs the request again. For streams this means the key protects nothing: a
retried streaming request runs again.

File uploads are streamed (up to 512 MB), so their body is not part of the comparison: the key
alone identifies the upload, and reusing it for a different file returns the first file.

A claimed request runs to its end even if the client hangs up (aiohttp would otherwise cancel it),
so the client's retry gets the stored response rather than a second execution. (A streaming
handler whose client hung up stops at its next write, which fails.)

Keys live 24 hours. Rows older than that are ignored (a new request may take the key) and deleted
by a sweep that runs at most once a minute per process.

The window that remains: if the process dies after the handler committed and before the response
was stored (or storing it fails), the claim has no response. A retry then gets 409 until the claim
is ABANDONED_AFTER old; after that the request runs again, and whatever the first run created
exists twice. The same holds for a 5xx whose work committed anyway (a connection lost during
COMMIT): the claim is released, so a retry runs again.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Awaitable, Callable

import msgspec
import structlog
from aiohttp import web

from service.api.errors import ApiError, domain_error_response
from service.api.http import CTX, services
from service.api.routes import PREFIXES, ROUTES
from service.domain.errors import DomainError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255
KEY_TTL = timedelta(hours=24)
# Longer than any request that is not a stream takes (a 512 MB upload at 0.6 MB/s included).
ABANDONED_AFTER = timedelta(minutes=15)
SWEEP_EVERY_SECONDS = 60.0
# Refusals that say "not now" rather than "not like this": a retry deserves a fresh attempt.
_TRANSIENT = frozenset({408, 409, 425, 429})
_MOUNTS = tuple(p for p in PREFIXES if p)   # the "" mount serves routes at their own paths
_STREAMED_BODIES = frozenset(r.path for r in ROUTES if r.multipart)

log = structlog.get_logger("threadline.idempotency")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CLAIM = """
    INSERT INTO idempotency_keys AS k (project, key, request_hash) VALUES ($1, $2, $3)
    ON CONFLICT (project, key) DO UPDATE
        SET request_hash = EXCLUDED.request_hash, status = NULL, content_type = NULL, body = NULL,
            created_at = now()
        WHERE k.created_at < now() - $4::interval
           OR (k.status IS NULL AND k.created_at < now() - $5::interval)
    RETURNING created_at"""
_EXISTING = "SELECT request_hash, status, content_type, body FROM idempotency_keys WHERE project = $1 AND key = $2"
# created_at identifies the claim: a claim taken over after being abandoned has a newer one, and the
# abandoned request must then neither store into nor release the new claim.
_STORE = """UPDATE idempotency_keys SET status = $4, content_type = $5, body = $6
            WHERE project = $1 AND key = $2 AND created_at = $3 AND status IS NULL"""
_RELEASE = "DELETE FROM idempotency_keys WHERE project = $1 AND key = $2 AND created_at = $3 AND status IS NULL"
_SWEEP = "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval"


@dataclass(frozen=True, slots=True)
class Claim:
    project: str
    key: str
    claimed_at: datetime


def applies(request: web.Request) -> bool:
    """A POST to an existing route that names a key (authenticated already, so its project is known)."""
    return request.method == "POST" and HEADER in request.headers and request.match_info.http_exception is None


def once(handler: Handler) -> Handler:
    """`handler`, run at most once per Idempotency-Key and project."""
    async def run_once(request: web.Request) -> web.StreamResponse:
        return await _run_once(request, handler)
    return run_once


_running: set[asyncio.Task] = set()   # keeps detached runs referenced until they finish
_next_sweep = 0.0


async def _run_once(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = _valid_key(request.headers[HEADER])
    fingerprint = await _fingerprint(request)
    db = services(request).db
    await _sweep_now_and_then(db)
    claim_or_replay = await _claim(db, request[CTX].project, key, fingerprint)
    if isinstance(claim_or_replay, web.Response):
        return claim_or_replay
    run = asyncio.ensure_future(_run_and_record(request, handler, claim_or_replay))
    _running.add(run)
    run.add_done_callback(_running.discard)
    try:
        return await asyncio.shield(run)
    except asyncio.CancelledError:
        if not run.done():
            run.add_done_callback(_log_detached_failure)
        raise


def _valid_key(raw: str) -> str:
    key = raw.strip()
    if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        raise ApiError(400, f"Invalid '{HEADER}' header: a key is 1 to {MAX_KEY_CHARS} printable ASCII characters.",
                       code="invalid_idempotency_key")
    return key


async def _fingerprint(request: web.Request) -> bytes:
    """The same logical request hashes the same under every mount prefix and `api-version`."""
    template, path = _unmounted(request)
    query = sorted((k, v) for k, v in request.query.items() if k != "api-version")
    sha = hashlib.sha256(msgspec.json.encode([request.method, path, query]))
    if template not in _STREAMED_BODIES:
        sha.update(await request.read())   # aiohttp keeps it: the handler reads the same bytes again
    return sha.digest()


def _unmounted(request: web.Request) -> tuple[str, str]:
    """(route template, concrete path), both without the mount prefix (/v1, /openai, /api/projects/{p})."""
    template, path = request.match_info.route.resource.canonical, request.path
    for mount in _MOUNTS:
        if template.startswith(mount + "/"):
            depth = mount.count("/")   # {project} is one segment, in the template and in the path
            return template[len(mount):], "/" + path.split("/", depth + 1)[depth + 1]
    return template, path


async def _sweep_now_and_then(db) -> None:
    global _next_sweep
    if time.monotonic() < _next_sweep:
        return
    _next_sweep = time.monotonic() + SWEEP_EVERY_SECONDS
    await db.execute(_SWEEP, KEY_TTL)


async def _claim(db, project: str, key: str, fingerprint: bytes) -> Claim | web.Response:
    """Claim the key, or answer from what it already holds."""
    # A row can vanish between the two statements (its request released it): then claim again.
    for _ in range(3):
        claimed_at = await db.fetchval(_CLAIM, project, key, fingerprint, KEY_TTL, ABANDONED_AFTER)
        if claimed_at is not None:
            return Claim(project, key, claimed_at)
        row = await db.fetchrow(_EXISTING, project, key)
        if row is None:
            continue
        if row["request_hash"] != fingerprint:
            raise ApiError(400, "Keys for idempotent requests can only be used with the same parameters they were "
                                f"first used with. Try using a key other than '{key}' if you meant to execute a "
                                "different request.", code="idempotency_key_reused")
        if row["status"] is None:
            break
        headers = {REPLAYED_HEADER: "true"}
        if row["content_type"]:
            headers["Content-Type"] = row["content_type"]
        return web.Response(status=row["status"], body=row["body"], headers=headers)
    raise ApiError(409, f"A request with this {HEADER} is still being processed; retry later.",
                   code="idempotency_key_in_use")


async def _run_and_record(request: web.Request, handler: Handler, claim: Claim) -> web.StreamResponse:
    db = services(request).db
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    except DomainError as exc:
        response = domain_error_response(exc)
    except asyncio.CancelledError:
        raise   # only at shutdown: whether the work committed is unknown, so the claim stays
    except Exception:
        await _release(db, claim)
        raise
    if _replayable(response):
        try:
            await db.execute(_STORE, claim.project, claim.key, claim.claimed_at, response.status,
                             response.headers.get("Content-Type"), bytes(response.body))
        except Exception:  # noqa: BLE001 - the work is done; the client still gets its answer
            log.warning("idempotent_response_not_stored", key=claim.key, exc_info=True)
    else:
        await _release(db, claim)
    return response


def _replayable(response: web.StreamResponse) -> bool:
    return (isinstance(response, web.Response) and not response.prepared
            and isinstance(response.body, (bytes, bytearray))
            and response.content_type != "text/event-stream"
            and response.status < 500 and response.status not in _TRANSIENT)


async def _release(db, claim: Claim) -> None:
    try:
        await db.execute(_RELEASE, claim.project, claim.key, claim.claimed_at)
    except Exception:  # noqa: BLE001 - the claim is then abandoned after ABANDONED_AFTER
        log.warning("idempotency_claim_not_released", key=claim.key, exc_info=True)


def _log_detached_failure(run: asyncio.Task) -> None:
    """A run whose client hung up has nobody to report a failure to but the log."""
    if not run.cancelled() and (exc := run.exception()) is not None:
        log.error("idempotent_request_failed_after_disconnect", exc_info=exc)
