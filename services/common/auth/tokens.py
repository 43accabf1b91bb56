"""Bearer JWT validation: a token in, a `Principal` out, or `TokenRejected`.

Keys and algorithms are pinned: an RSA key verifies RS256 only, a P-256 key ES256 only, the
HS256 secret HS256 only, so `alg: none` and HS/RS confusion (an HS256 token "signed" with a
public key) never verify. JWKS keys are cached by `kid`; a token naming an unknown `kid`
reloads the JWKS at most once per `jwks_refresh_seconds` (key rotation without a restart,
and no reload storm from garbage tokens).

The reason in `TokenRejected` is for the server log; clients only learn "invalid token".
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import anyio
import jwt

from services.common.auth.config import AuthConfig

log = logging.getLogger(__name__)

#: The one algorithm each kind of key may verify.
_ALGORITHM_BY_KEY: Final[Mapping[tuple[str, str | None], str]] = {
    ("RSA", None): "RS256",
    ("EC", "P-256"): "ES256",
}
_REQUIRED_CLAIMS: Final = ["exp", "iss", "aud", "sub"]


class TokenRejected(Exception):
    """The token does not authenticate anyone; `reason` is for the server log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject, tenant and roles (scopes count as roles)."""

    subject: str
    tenant: str
    roles: frozenset[str]


ANONYMOUS: Final = Principal(subject="anonymous", tenant="", roles=frozenset())


def principal_of(claims: Mapping[str, Any], tenant_claim: str) -> Principal:
    """Subject, tenant and roles from verified claims: `roles` (list) plus `scope`/`scp`."""
    subject, tenant = claims.get("sub"), claims.get(tenant_claim)
    if not isinstance(subject, str) or not subject:
        raise TokenRejected("no subject")
    if not isinstance(tenant, str) or not tenant:
        raise TokenRejected(f"no {tenant_claim} claim")
    roles: set[str] = set()
    listed = claims.get("roles", [])
    if isinstance(listed, str):
        listed = listed.split()
    if isinstance(listed, list):
        roles.update(r for r in listed if isinstance(r, str))
    for key in ("scope", "scp"):
        scopes = claims.get(key)
        if isinstance(scopes, str):
            roles.update(scopes.split())
    return Principal(subject=subject, tenant=tenant, roles=frozenset(roles))


def _load_jwks(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=5) as response:
            document: Any = json.loads(response.read())
    else:
        document = json.loads(Path(source).read_text())
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    return document


@dataclass(frozen=True)
class _Key:
    key: Any
    algorithm: str


def _parse_keys(document: Mapping[str, Any]) -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        algorithm = _ALGORITHM_BY_KEY.get((entry.get("kty", ""), entry.get("crv")))
        if algorithm is None or entry.get("alg", algorithm) != algorithm:
            continue  # a key type (or a pinned alg) we do not accept
        try:
            keys[entry["kid"]] = _Key(jwt.PyJWK(entry, algorithm).key, algorithm)
        except jwt.PyJWTError as exc:
            log.warning("skipping JWKS key", extra={"fields": {"kid": entry["kid"], "error": str(exc)}})
    return keys


class TokenVerifier:
    """Verifies bearer tokens against one `AuthConfig`; safe to share by all RPCs of a server."""

    def __init__(self, config: AuthConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._loaded_at: float | None = None
        self._lock = anyio.Lock()

    async def _refresh(self, *, unknown_kid: bool) -> None:
        """Reload the JWKS if it is stale, or (rate-limited) because a `kid` was unknown."""
        assert self.config.jwks is not None
        async with self._lock:
            now = self._clock()
            age = None if self._loaded_at is None else now - self._loaded_at
            if age is not None:
                limit = self.config.jwks_refresh_seconds if unknown_kid else self.config.jwks_max_age_seconds
                if age < limit:
                    return
            try:
                document = await anyio.to_thread.run_sync(_load_jwks, self.config.jwks)
                self._keys = _parse_keys(document)
            except (OSError, ValueError) as exc:
                # Keep the keys we had: a JWKS endpoint hiccup must not lock everyone out.
                log.warning("cannot load the JWKS", extra={"fields": {"source": self.config.jwks, "error": str(exc)}})
            self._loaded_at = now

    async def _key_for(self, header: Mapping[str, Any]) -> _Key:
        alg = header.get("alg")
        if alg == "HS256":
            if not self.config.hs256_secret:
                raise TokenRejected("HS256 token but no HS256 secret is configured")
            return _Key(self.config.hs256_secret, "HS256")
        if self.config.jwks is None:
            raise TokenRejected(f"algorithm {alg!r} not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenRejected("no kid in the token header")
        await self._refresh(unknown_kid=False)
        if kid not in self._keys:
            await self._refresh(unknown_kid=True)
        key = self._keys.get(kid)
        if key is None:
            raise TokenRejected(f"unknown kid {kid!r}")
        if alg != key.algorithm:
            raise TokenRejected(f"algorithm {alg!r} does not match the key's {key.algorithm}")
        return key

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; TokenRejected otherwise."""
        cfg = self.config
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key_for(header)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=cfg.audience,
                issuer=cfg.expected_issuer,
                leeway=cfg.leeway_seconds,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"{type(exc).__name__}: {exc}") from None
        return principal_of(claims, cfg.tenant_claim)


def mint_hs256(
    secret: bytes,
    *,
    subject: str,
    tenant: str,
    roles: list[str],
    ttl_seconds: float,
    issuer: str,
    audience: str,
    now: float | None = None,
) -> str:
    """An HS256 token for the embedded secret (`livecalc auth dev-token`, tests)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "tenant": tenant,
        "roles": roles,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_seconds),
    }
    return jwt.encode(claims, secret, algorithm="HS256")
