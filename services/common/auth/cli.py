"""`livecalc auth dev-token`, and the security flags of `livecalc serve` and client commands.

The dev token is HS256-signed with the embedded secret: LIVECALC_AUTH_HS256_SECRET, else
`<data dir>/auth/dev-secret` (created on first use, mode 0600), the same secret a service
started with `--auth-dev` checks. It is for one machine; production uses a JWKS.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from services.common.auth.config import (
    CLIENT_SETTINGS,
    DEFAULT_AUDIENCE,
    DEV_ISSUER,
    SERVE_SETTINGS,
    TLS,
    TLS_CA,
    TOKEN,
    SecurityConfig,
    dev_secret,
    resolve_security_config,
)
from services.common.auth.roles import Role
from services.common.auth.tokens import mint_hs256
from services.common.client import ChannelSecurity, write_out
from services.common.errors import InvalidArgument


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Auth, audit, TLS and protected-mode flags of `livecalc serve SERVICE`."""
    g = p.add_argument_group("security (auth is off unless a JWKS, a secret or --auth-dev is given)")
    for setting in SERVE_SETTINGS:
        setting.add_argument(g)


def security_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> SecurityConfig:
    return resolve_security_config(
        env,
        jwks=args.auth_jwks,
        hs256_secret_file=args.auth_hs256_secret_file,
        dev=args.auth_dev,
        issuer=args.auth_issuer,
        audience=args.auth_audience,
        leeway_seconds=args.auth_leeway,
        jwks_refresh_seconds=args.auth_jwks_refresh,
        audit_log=args.audit_log,
        audit_stdout=args.audit_stdout,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        insecure=args.insecure,
    )


def add_client_arguments(p: argparse.ArgumentParser) -> None:
    """`--token`, `--tls`, `--tls-ca` for a command that talks to a service."""
    for setting in CLIENT_SETTINGS:
        setting.add_argument(p)


def channel_security_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ChannelSecurity:
    ca = TLS_CA.read(args, env)
    return ChannelSecurity(
        token=TOKEN.read(args, env), tls=TLS.read(args, env) or ca is not None, tls_ca=Path(ca) if ca else None
    )


def cmd_dev_token(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.data_dir:
        env["LIVECALC_DATA_DIR"] = args.data_dir
    roles = sorted({r.strip() for value in args.role for r in value.split(",") if r.strip()})
    unknown = set(roles) - {r.value for r in Role}
    if unknown:
        raise InvalidArgument(f"unknown role(s) {sorted(unknown)}; expected {[r.value for r in Role]}")
    if args.ttl <= 0:
        raise InvalidArgument("--ttl must be positive")
    token = mint_hs256(
        dev_secret(env, create=True),
        subject=args.subject,
        tenant=args.tenant,
        roles=roles,
        ttl_seconds=args.ttl,
        issuer=env.get("LIVECALC_AUTH_ISSUER") or DEV_ISSUER,
        audience=env.get("LIVECALC_AUTH_AUDIENCE") or DEFAULT_AUDIENCE,
    )
    write_out(token + "\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    auth = sub.add_parser("auth", help="authentication helpers")
    cmds = auth.add_subparsers(dest="auth", required=True, metavar="COMMAND")
    p = cmds.add_parser("dev-token", help="print a token signed with the embedded HS256 dev secret")
    p.add_argument("--tenant", required=True, help="the tenant claim")
    p.add_argument("--role", action="append", required=True, help="read, submit, upload or admin (repeat or comma)")
    p.add_argument("--subject", default="dev", help="the sub claim (default dev)")
    p.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds (default 3600)")
    p.add_argument("--data-dir", help="where the dev secret lives (env LIVECALC_DATA_DIR; default ./.livecalc)")
    p.set_defaults(func=cmd_dev_token)
