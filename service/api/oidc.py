"""OIDC/JWT bearer tokens from the configured issuers (e.g. Microsoft Entra ID).

A token is accepted when its issuer is configured, its `kid` names one of that issuer's signing keys
(JWKS), its signature verifies with that key and an allowed algorithm, and `aud`, `exp` and `nbf`
hold. The keys are fetched in the background at start and when they age, so a request does not wait
for them; a token signed with a key we do not know yet (the issuer rotated) refetches them, at most
once per `jwks_min_refresh_seconds`, so made-up kids cannot make us hammer the issuer.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import jwt
import structlog

from service.auth import Principal
from service.config import TokenIssuer
from service.outbound.client import OutboundClient
from service.outbound.policy import AddressPolicy

log = structlog.get_logger("threadline.oidc")
MAX_JWKS_BYTES = 1 << 20
MAX_JWKS_KEYS = 100
FETCH_TIMEOUT = 10.0       # seconds for a JWKS fetch, all of it
FAILED_FETCH_RETRY_SECONDS = 10.0   # a failing issuer is retried in the background this often at most
TICK_SECONDS = 1.0


class TokenRejected(Exception):
    """The token is not accepted. `reason` may be shown and logged: it never holds the token."""

    def __init__(self, reason: str, issuer: str | None = None, kid: str | None = None):
        super().__init__(reason)
        self.reason, self.issuer, self.kid = reason, issuer, kid


class KeysUnavailable(Exception):
    """The issuer's keys have never been fetched (it is unreachable): the token cannot be judged."""


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS: three base64url parts, the first a JSON object. Threadline keys start `tl-`."""
    return credential.startswith("eyJ") and credential.count(".") == 2


class IssuerKeys:
    """One issuer's signing keys by kid, as last fetched from its JWKS URL."""

    def __init__(self, issuer: TokenIssuer, http: OutboundClient):
        self.issuer = issuer
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded = False
        self._attempted = -math.inf     # monotonic time of the last fetch started
        self._fetched = -math.inf       # ... and of the last one that succeeded
        self._fetching: asyncio.Task | None = None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        found = self._keys.get(kid)
        if found is not None:
            return found
        if time.monotonic() - self._attempted >= self.issuer.jwks_min_refresh_seconds:
            self.refresh()
        if self._fetching is not None:
            await asyncio.shield(self._fetching)     # a client that gives up must not cancel the fetch
        if not self._loaded:
            raise KeysUnavailable(self.issuer.label)
        return self._keys.get(kid)

    def due(self, now: float) -> bool:
        retry_after = max(self.issuer.jwks_min_refresh_seconds, FAILED_FETCH_RETRY_SECONDS)
        return now - self._fetched >= self.issuer.jwks_max_age_seconds and now - self._attempted >= retry_after

    def refresh(self) -> asyncio.Task:
        """Start a fetch unless one is under way; the fetch never raises."""
        if self._fetching is None:
            self._attempted = time.monotonic()
            self._fetching = asyncio.create_task(self._fetch())
        return self._fetching

    async def _fetch(self) -> None:
        url = self.issuer.jwks_url
        try:
            async with asyncio.timeout(FETCH_TIMEOUT), \
                    self._http.request("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
            keys = await asyncio.to_thread(parse_jwks, bytes(body))    # RSA/EC key loading: off the loop
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - an unreachable issuer keeps its old keys
            log.warning("jwks_fetch_failed", issuer=self.issuer.label, url=url, error=str(error)[:300])
        else:
            self._keys, self._loaded, self._fetched = keys, True, time.monotonic()
            log.info("jwks_fetched", issuer=self.issuer.label, keys=len(keys))
        finally:
            self._fetching = None


def parse_jwks(body: bytes) -> dict[str, jwt.PyJWK]:
    """The signing keys of a JWKS document by kid; ValueError when it has none usable."""
    document = json.loads(body)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys = {}
    for entry in entries[:MAX_JWKS_KEYS]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            keys[kid] = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue        # a key type or curve we cannot use: the others still count
    if not keys:
        raise ValueError("no usable signing key with a kid")
    return keys


class TokenVerifier:
    """Verifies bearer JWTs against the configured issuers; keeps their keys fresh meanwhile."""

    def __init__(self, issuers: tuple[TokenIssuer, ...]):
        self._issuers_config = issuers
        self._issuers: dict[str, IssuerKeys] = {}
        self._http: OutboundClient | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        # The issuers are the operator's configuration: any address they name may be reached.
        self._http = OutboundClient(AddressPolicy.anywhere())
        self._issuers = {issuer.issuer: IssuerKeys(issuer, self._http) for issuer in self._issuers_config}
        self._task = asyncio.create_task(self._keep_fresh())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for keys in self._issuers.values():
            if keys._fetching is not None:
                keys._fetching.cancel()
        if self._http is not None:
            await self._http.close()

    async def _keep_fresh(self) -> None:
        while True:
            now = time.monotonic()
            for keys in self._issuers.values():
                if keys.due(now):
                    keys.refresh()
            await asyncio.sleep(TICK_SECONDS)

    async def verify(self, token: str) -> Principal:
        """The principal the token stands for; TokenRejected or KeysUnavailable when there is none."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("the token is not a well-formed JWT") from None
        claimed = unverified.get("iss")
        claimed = claimed[:200] if isinstance(claimed, str) else None
        keys = self._issuers.get(claimed) if claimed else None
        if keys is None:
            raise TokenRejected("the token's issuer is not accepted", claimed)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("the token has no key id (kid)", claimed)
        kid = kid[:128]
        key = await keys.key(kid)
        if key is None:
            raise TokenRejected("the token's key id (kid) is not one of its issuer's signing keys", claimed, kid)
        issuer = keys.issuer
        try:
            claims = jwt.decode(token, key, algorithms=issuer.algorithms, audience=issuer.audience,
                                issuer=issuer.issuer, leeway=issuer.leeway_seconds,
                                options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as error:
            raise TokenRejected(_reason(error), claimed, kid) from None
        return Principal(key_id=f"jwt:{issuer.label}:{_subject(claims)}"[:200],
                         project=_project(issuer, claims, kid))


def _reason(error: jwt.PyJWTError) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf or iat is in the future)"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the token's audience (aud) is not accepted"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the token's issuer is not accepted"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "the token's algorithm (alg) is not accepted for its key"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token has no '{error.claim}' claim"
    return "the token is not valid"


def _subject(claims: dict) -> str:
    """Who the token speaks for, for the audit trail: Entra puts the caller's object id in `oid`."""
    for name in ("sub", "oid", "appid", "azp"):
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return "-"


def _project(issuer: TokenIssuer, claims: dict, kid: str) -> str:
    if issuer.project is not None:
        return issuer.project
    value = claims.get(issuer.project_claim)
    values = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)] \
        if isinstance(value, list) else []
    projects = {issuer.projects[v] for v in values if v in issuer.projects}
    if len(projects) != 1:
        raise TokenRejected(f"the token's '{issuer.project_claim}' claim maps to "
                            f"{'no project' if not projects else 'more than one project'}", issuer.issuer, kid)
    return projects.pop()
