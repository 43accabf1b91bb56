"""Credentials of the mesh's own calls: gateway → data/engines, engines → data/gateway.

A service authenticates to its peers with a *service token*, sent as `authorization`
metadata on each call (never baked into the channel, so a token can be renewed):

- `--service-token-file F` (`LIVECALC_SERVICE_TOKEN_FILE`) or `LIVECALC_SERVICE_TOKEN`: a
  token issued elsewhere (the JWKS case); the file is re-read when it changes, so a rotated
  (projected) token is picked up without a restart.
- otherwise, when the service itself checks HS256 tokens (`--auth-dev` or a secret file), it
  mints a short-lived token with that secret: subject `livecalc-<service>`, role `admin`.

A call made for a job names the job's tenant in `x-livecalc-tenant` metadata (only `admin`
may), so the engine, the data service and the package store see that tenant's objects only.
- otherwise (auth off) no token is sent, as before.

Engines take RunChunk only with `admin` (roles.py), which only service tokens carry: engines
accept work from the gateway alone. Channels are opened with `open_aio_channel` and the
`ChannelSecurity` of `internal_channel_security` (TLS when LIVECALC_TLS / LIVECALC_TLS_CA say
so), never with the CLI's default security (that would forward a user's LIVECALC_TOKEN).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from services.common.auth.config import (
    SERVICE_TOKEN,
    SERVICE_TOKEN_FILE,
    TLS,
    TLS_CA,
    SecurityConfig,
    resolve_security_config,
)
from services.common.auth.roles import ACT_FOR_TENANT, Role
from services.common.auth.tokens import mint_hs256
from services.common.client import ChannelSecurity
from services.common.errors import InvalidArgument

#: Lifetime of a minted service token, and how long before its expiry a new one is minted.
SERVICE_TOKEN_TTL_SECONDS: Final = 300.0
SERVICE_TOKEN_RENEW_SECONDS: Final = 60.0
#: The tenant a minted service token names; calls for a job act for the job's tenant instead.
SERVICE_TENANT: Final = "livecalc-mesh"

Metadata = tuple[tuple[str, str], ...]


@dataclass
class ServiceCredentials:
    """The bearer token of a service's outgoing calls (none when auth is off)."""

    subject: str = "livecalc-service"
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    secret: bytes | None = field(default=None, repr=False)
    issuer: str = ""
    audience: str = ""
    ttl_seconds: float = SERVICE_TOKEN_TTL_SECONDS
    _minted: tuple[float, str] | None = field(default=None, repr=False)
    _file_state: tuple[float, str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.token_file or self.secret)

    def metadata(self, tenant: str = "") -> Metadata:
        """`authorization` metadata for one call, acting for `tenant` when one is named.

        The token is the service's own (tenant SERVICE_TENANT when minted); the tenant a call
        acts for travels as `x-livecalc-tenant` (roles.ACT_FOR_TENANT), which the receiving
        service honours because the token carries `admin`. So an issued token (JWKS) serves
        every tenant's jobs just like a minted one.
        """
        token = self._current()
        if not token:
            return ()
        auth = ("authorization", f"Bearer {token}")
        return (auth, (ACT_FOR_TENANT, tenant)) if tenant else (auth,)

    def _current(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file is not None:
            return self._from_file(self.token_file)
        if self.secret is None:
            return None
        now = time.time()
        with self._lock:
            if self._minted is not None and self._minted[0] - now > SERVICE_TOKEN_RENEW_SECONDS:
                return self._minted[1]
            token = mint_hs256(
                self.secret,
                subject=self.subject,
                tenant=SERVICE_TENANT,
                roles=[Role.ADMIN.value],
                ttl_seconds=self.ttl_seconds,
                issuer=self.issuer,
                audience=self.audience,
                now=now,
            )
            self._minted = (now + self.ttl_seconds, token)
            return token

    def _from_file(self, path: Path) -> str:
        mtime = path.stat().st_mtime
        with self._lock:
            if self._file_state is None or self._file_state[0] != mtime:
                self._file_state = (mtime, path.read_text().strip())
            return self._file_state[1]


def service_credentials(service: str, args: argparse.Namespace, env: Mapping[str, str]) -> ServiceCredentials:
    """Flags, then LIVECALC_SERVICE_TOKEN(_FILE), then minting with the HS256 secret, else none."""
    subject = f"livecalc-{service}"
    path = SERVICE_TOKEN_FILE.read(args, env)
    if path:
        if not os.path.isfile(path):
            raise InvalidArgument(f"--service-token-file: no file at {path}")
        return ServiceCredentials(subject=subject, token_file=Path(path))
    token = SERVICE_TOKEN.resolve(env)
    if token:
        return ServiceCredentials(subject=subject, token=token)
    auth = _security(args, env).auth
    if auth is not None and auth.hs256_secret:
        return ServiceCredentials(
            subject=subject, secret=auth.hs256_secret, issuer=auth.expected_issuer, audience=auth.audience
        )
    return ServiceCredentials(subject=subject)


def _security(args: argparse.Namespace, env: Mapping[str, str]) -> SecurityConfig:
    """The service's own auth settings (as `livecalc serve` resolved them for its server)."""

    def flag(name: str) -> Any:
        return getattr(args, name, None)

    return resolve_security_config(
        env,
        jwks=flag("auth_jwks"),
        hs256_secret_file=flag("auth_hs256_secret_file"),
        dev=flag("auth_dev"),
        issuer=flag("auth_issuer"),
        audience=flag("auth_audience"),
    )


def internal_channel_security(args: argparse.Namespace, env: Mapping[str, str]) -> ChannelSecurity:
    """TLS of the mesh's own channels (`--tls-ca`/LIVECALC_TLS_CA, `--tls`/LIVECALC_TLS); no token."""
    ca = TLS_CA.read(args, env)
    return ChannelSecurity(token=None, tls=TLS.read(args, env) or ca is not None, tls_ca=Path(ca) if ca else None)
