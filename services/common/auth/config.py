"""Typed, frozen security configuration: who may call, what is audited, how bytes travel.

Resolved from flags, then `LIVECALC_*` environment variables, then defaults (the `Setting`s
below), by `resolve_security_config`, which only a `main()` calls. Auth is off unless one of a JWKS,
an HS256 secret or the embedded dev secret is configured; then every RPC but health and
reflection needs a bearer JWT. Protected mode (`check_bind`): a service without auth binds
loopback only, unless `insecure` says otherwise.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.settings import Setting, data_dir, parse_bool

#: Issuer and audience of tokens signed with an HS256 secret unless configured otherwise.
DEV_ISSUER: Final = "livecalc-dev"
DEFAULT_AUDIENCE: Final = "livecalc"
#: The embedded HS256 secret, relative to the data dir (created on first use, mode 0600).
DEV_SECRET_FILE: Final = Path("auth") / "dev-secret"


@dataclass(frozen=True)
class AuthConfig:
    """How bearer JWTs are checked. Exactly the keys configured are trusted."""

    #: JWKS file path or http(s) URL: RS256/ES256 keys by `kid`.
    jwks: str | None = None
    #: HS256 shared secret (single machine); never printed.
    hs256_secret: bytes | None = field(default=None, repr=False)
    issuer: str | None = None
    audience: str = DEFAULT_AUDIENCE
    #: Clock skew allowed on `exp`/`nbf`/`iat`, seconds.
    leeway_seconds: float = 30.0
    #: A token naming an unknown `kid` reloads the JWKS at most this often (key rotation).
    jwks_refresh_seconds: float = 60.0
    #: Keys are reloaded at least this often even when every `kid` is known.
    jwks_max_age_seconds: float = 3600.0
    tenant_claim: str = "tenant"

    def __post_init__(self) -> None:
        if self.jwks is None and not self.hs256_secret:
            raise InvalidArgument("auth needs a JWKS (--auth-jwks) or an HS256 secret")
        if self.hs256_secret is not None and len(self.hs256_secret) < 32:
            raise InvalidArgument("the HS256 secret must be at least 32 bytes")
        if self.jwks is not None and not self.issuer:
            raise InvalidArgument("a JWKS needs the issuer to expect (--auth-issuer)")
        if not self.audience:
            raise InvalidArgument("the auth audience must not be empty")
        if self.leeway_seconds < 0 or self.leeway_seconds > 300:
            raise InvalidArgument("the auth leeway must be in 0..300 seconds")
        if self.jwks_refresh_seconds < 0:
            raise InvalidArgument("the JWKS refresh interval must be ≥ 0")

    @property
    def expected_issuer(self) -> str:
        return self.issuer or DEV_ISSUER


@dataclass(frozen=True)
class TlsConfig:
    """A server's certificate chain and private key (PEM files)."""

    cert_path: Path
    key_path: Path

    def load(self) -> tuple[bytes, bytes]:
        """(key, chain) as grpc.ssl_server_credentials wants them."""
        return self.key_path.read_bytes(), self.cert_path.read_bytes()


@dataclass(frozen=True)
class SecurityConfig:
    """Everything security a server needs; the default is auth off, no audit, plaintext."""

    auth: AuthConfig | None = None
    #: Append-only JSON-lines audit log; None disables the file.
    audit_path: Path | None = None
    audit_stdout: bool = False
    tls: TlsConfig | None = None
    #: Allow binding a non-loopback address without auth.
    insecure: bool = False

    @property
    def audit_enabled(self) -> bool:
        return self.audit_path is not None or self.audit_stdout


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; everything else (0.0.0.0, [::], names) is not."""
    name = host.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, security: SecurityConfig) -> None:
    """Protected mode: without auth, refuse any non-loopback bind unless insecure."""
    if security.auth is None and not security.insecure and not is_loopback(host):
        raise FailedPrecondition(
            f"refusing to listen on {host} without authentication: configure --auth-jwks, "
            "--auth-hs256-secret-file or --auth-dev, or pass --insecure (env LIVECALC_INSECURE=1)"
        )


def dev_secret(env: Mapping[str, str], *, create: bool) -> bytes:
    """The embedded HS256 secret: LIVECALC_AUTH_HS256_SECRET, else `<data dir>/auth/dev-secret`.

    The file is created (mode 0600, 32 random bytes as hex) on first use when `create`.
    """
    raw = env.get("LIVECALC_AUTH_HS256_SECRET")
    if raw:
        return raw.encode()
    path = data_dir(env) / DEV_SECRET_FILE
    if not path.exists():
        if not create:
            raise FailedPrecondition(f"no dev secret at {path}; start a service with --auth-dev first")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process won the race: use its secret
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


#: The security settings `livecalc serve` reads; services.common.auth.cli declares their flags.
JWKS: Setting[str | None] = Setting(
    "LIVECALC_AUTH_JWKS", str, None, flag="--auth-jwks", help="JWKS file or URL of RS256/ES256 keys"
)
HS256_SECRET_FILE: Setting[str | None] = Setting(
    "LIVECALC_AUTH_HS256_SECRET_FILE", str, None, flag="--auth-hs256-secret-file", help="file with an HS256 secret"
)
DEV: Setting[bool] = Setting(
    "LIVECALC_AUTH_DEV",
    parse_bool,
    False,
    flag="--auth-dev",
    help="HS256 with the embedded dev secret under the data dir",
)
ISSUER: Setting[str | None] = Setting(
    "LIVECALC_AUTH_ISSUER", str, None, flag="--auth-issuer", help="expected iss", shown=f"{DEV_ISSUER} with HS256"
)
AUDIENCE = Setting("LIVECALC_AUTH_AUDIENCE", str, DEFAULT_AUDIENCE, flag="--auth-audience", help="expected aud")
LEEWAY = Setting("LIVECALC_AUTH_LEEWAY_SECONDS", float, 30.0, flag="--auth-leeway", help="clock skew allowed, s")
JWKS_REFRESH = Setting(
    "LIVECALC_AUTH_JWKS_REFRESH",
    float,
    60.0,
    flag="--auth-jwks-refresh",
    help="reload the JWKS for an unknown kid at most this often, seconds",
)
AUDIT_LOG: Setting[str | None] = Setting(
    "LIVECALC_AUDIT_LOG",
    str,
    None,
    flag="--audit-log",
    help="audit JSON lines file",
    shown="DATA_DIR/audit.log with auth",
)
AUDIT_STDOUT: Setting[bool] = Setting(
    "LIVECALC_AUDIT_STDOUT", parse_bool, False, flag="--audit-stdout", help="also print audit lines on stdout"
)
TLS_CERT: Setting[str | None] = Setting(
    "LIVECALC_TLS_CERT", str, None, flag="--tls-cert", help="PEM certificate chain: serve TLS"
)
TLS_KEY: Setting[str | None] = Setting(
    "LIVECALC_TLS_KEY", str, None, flag="--tls-key", help="PEM private key of --tls-cert"
)
INSECURE: Setting[bool] = Setting(
    "LIVECALC_INSECURE", parse_bool, False, flag="--insecure", help="allow a non-loopback --host without auth"
)
#: How a command or a service dials: PEM roots to trust (implies TLS), TLS on, a bearer token.
TLS_CA: Setting[str | None] = Setting(
    "LIVECALC_TLS_CA", str, None, flag="--tls-ca", help="PEM roots to trust; implies --tls"
)
TLS: Setting[bool] = Setting("LIVECALC_TLS", parse_bool, False, flag="--tls", help="connect with TLS")
TOKEN: Setting[str | None] = Setting("LIVECALC_TOKEN", str, None, flag="--token", help="bearer token for the service")
#: The bearer token a service sends its peers: a file (re-read when it changes), or the token itself.
SERVICE_TOKEN_FILE: Setting[str | None] = Setting(
    "LIVECALC_SERVICE_TOKEN_FILE",
    str,
    None,
    flag="--service-token-file",
    help="bearer token this service sends to its peers",
    shown="minted with an HS256 secret",
)
SERVICE_TOKEN: Setting[str | None] = Setting("LIVECALC_SERVICE_TOKEN", str, None)
#: The flags of `livecalc serve`, in the order its help lists them.
SERVE_SETTINGS: tuple[Setting[Any], ...] = (
    JWKS,
    HS256_SECRET_FILE,
    DEV,
    ISSUER,
    AUDIENCE,
    LEEWAY,
    JWKS_REFRESH,
    AUDIT_LOG,
    AUDIT_STDOUT,
    TLS_CERT,
    TLS_KEY,
    SERVICE_TOKEN_FILE,
    INSECURE,
)
#: The flags of a command that talks to a service.
CLIENT_SETTINGS: tuple[Setting[Any], ...] = (TOKEN, TLS, TLS_CA)


def resolve_security_config(
    env: Mapping[str, str],
    *,
    jwks: str | None = None,
    hs256_secret_file: str | None = None,
    dev: bool | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    leeway_seconds: float | None = None,
    jwks_refresh_seconds: float | None = None,
    audit_log: str | None = None,
    audit_stdout: bool | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    insecure: bool | None = None,
) -> SecurityConfig:
    """Flags win over LIVECALC_AUTH_* / LIVECALC_AUDIT_* / LIVECALC_TLS_* variables, then defaults.

    With auth on and no `--audit-log`, the audit log is `<data dir>/audit.log`.
    """
    jwks = JWKS.resolve(env, jwks)
    secret_file = HS256_SECRET_FILE.resolve(env, hs256_secret_file)
    secret: bytes | None = None
    if secret_file:
        secret = Path(secret_file).read_bytes().strip()
    elif DEV.resolve(env, dev) or env.get("LIVECALC_AUTH_HS256_SECRET"):
        secret = dev_secret(env, create=True)
    auth: AuthConfig | None = None
    if jwks or secret:
        auth = AuthConfig(
            jwks=jwks,
            hs256_secret=secret,
            issuer=ISSUER.resolve(env, issuer),
            audience=AUDIENCE.resolve(env, audience),
            leeway_seconds=LEEWAY.resolve(env, leeway_seconds),
            jwks_refresh_seconds=JWKS_REFRESH.resolve(env, jwks_refresh_seconds),
        )
    audit = AUDIT_LOG.resolve(env, audit_log)
    audit_path = Path(audit) if audit else (data_dir(env) / "audit.log" if auth is not None else None)
    cert, key = TLS_CERT.resolve(env, tls_cert), TLS_KEY.resolve(env, tls_key)
    if bool(cert) != bool(key):
        raise InvalidArgument("TLS needs both --tls-cert and --tls-key")
    return SecurityConfig(
        auth=auth,
        audit_path=audit_path,
        audit_stdout=AUDIT_STDOUT.resolve(env, audit_stdout),
        tls=TlsConfig(Path(cert), Path(key)) if cert and key else None,
        insecure=INSECURE.resolve(env, insecure),
    )
