"""One address for every client command, and saved contexts (`livecalc config …`, like kubectl).

Every client command talks to one address, the gateway's (it serves jobs and packages, and
forwards the dataset calls to its data service). The address is, first found:

1. ``--address HOST:PORT``;
2. the environment variable ``LIVECALC_ADDRESS``;
3. the current context of the config file (`livecalc config use-context NAME`);
4. ``127.0.0.1:50051``, the local gateway.

A context names an address and, optionally, a bearer token and TLS roots; the config file is
``$LIVECALC_CONFIG``, else ``$XDG_CONFIG_HOME/livecalc/config.json``, else
``~/.config/livecalc/config.json`` (written with mode 0600: it may hold tokens). A context's
token and TLS roots are used only for the context's own address, and only where ``--token`` /
``LIVECALC_TOKEN`` (``--tls-ca`` / ``LIVECALC_TLS_CA``) give none: an address named by flag or
environment that is not the context's never receives the context's token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from services.common.auth.config import TOKEN
from services.common.client import ChannelSecurity, emit_json, table, write_out
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument, NotFound

DEFAULT_ADDRESS: Final = f"127.0.0.1:{DEFAULT_PORTS['gateway'][0]}"
ADDRESS_ENV: Final = "LIVECALC_ADDRESS"
CONFIG_ENV: Final = "LIVECALC_CONFIG"
ADDRESS_HELP: Final = (
    f"the gateway's HOST:PORT (default: ${ADDRESS_ENV}, else the current context's address "
    f"(livecalc config use-context), else {DEFAULT_ADDRESS})"
)


@dataclass(frozen=True)
class Context:
    """A saved target: the gateway's address, and how to authenticate to it."""

    name: str
    address: str
    token: str | None = None
    tls_ca: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"address": self.address}
        if self.token:
            doc["token"] = self.token
        if self.tls_ca:
            doc["tls_ca"] = self.tls_ca
        return doc


@dataclass
class Config:
    """The config file's contents: contexts by name and the current one."""

    path: Path
    contexts: dict[str, Context]
    current: str | None = None

    def current_context(self) -> Context | None:
        return self.contexts.get(self.current) if self.current else None

    def save(self) -> None:
        """Write the file atomically, readable by its owner only (it may hold tokens)."""
        doc = {
            "current_context": self.current,
            "contexts": {name: c.as_json() for name, c in sorted(self.contexts.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=2) + "\n")
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def config_path(env: Mapping[str, str]) -> Path:
    """$LIVECALC_CONFIG, else $XDG_CONFIG_HOME/livecalc/config.json, else ~/.config/livecalc/config.json."""
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "livecalc" / "config.json"


def load_config(env: Mapping[str, str]) -> Config:
    """The config file (an empty config when there is none); a broken file is an error naming it."""
    path = config_path(env)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config(path, {})
    except OSError as exc:
        raise InvalidArgument(f"cannot read the livecalc config {path}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
        contexts = {
            str(name): Context(
                str(name),
                str(c["address"]),
                str(c["token"]) if c.get("token") else None,
                str(c["tls_ca"]) if c.get("tls_ca") else None,
            )
            for name, c in dict(doc.get("contexts") or {}).items()
        }
        current = doc.get("current_context") or None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidArgument(f"the livecalc config {path} is not valid ({exc}); fix or remove it") from None
    return Config(path, contexts, str(current) if current else None)


@dataclass(frozen=True)
class Target:
    """The address a client command talks to, where it came from, and the context behind it."""

    address: str
    source: str
    context: Context | None = None


def resolve_target(flag: str | None, env: Mapping[str, str]) -> Target:
    """--address, else $LIVECALC_ADDRESS, else the current context's address, else the default.

    The current context is returned alongside whenever one is set (its token applies when the
    address is its own: `security_for`)."""
    context = load_config(env).current_context()
    if flag:
        return Target(flag, "--address", context)
    if env.get(ADDRESS_ENV):
        return Target(env[ADDRESS_ENV], f"${ADDRESS_ENV}", context)
    if context is not None:
        return Target(context.address, f"context {context.name}", context)
    return Target(DEFAULT_ADDRESS, "default", None)


def security_for(target: Target, security: ChannelSecurity) -> ChannelSecurity:
    """`security` (from flags and environment) completed with the context's token and TLS
    roots, when the target is the context's address and the flags and environment give none."""
    context = target.context
    if context is None or context.address != target.address:
        return security
    if security.token is None and context.token:
        security = replace(security, token=context.token)
    if security.tls_ca is None and context.tls_ca:
        security = replace(security, tls=True, tls_ca=Path(context.tls_ca))
    return security


# ---- livecalc config … ---------------------------------------------------------------------


def cmd_set_context(args: argparse.Namespace) -> int:
    config = load_config(os.environ)
    old = config.contexts.get(args.name)
    address = args.context_address or (old.address if old else None)
    if not address:
        raise InvalidArgument(f"context {args.name!r} is new: give its --address HOST:PORT")
    token = old.token if old else None
    if args.context_token is not None:
        token = args.context_token or None  # --token '' removes it
    tls_ca = old.tls_ca if old else None
    if args.context_tls_ca is not None:
        tls_ca = str(Path(args.context_tls_ca).resolve()) if args.context_tls_ca else None
    config.contexts[args.name] = Context(args.name, address, token, tls_ca)
    if args.use:
        config.current = args.name
    config.save()
    state = "modified" if old else "created"
    write_out(f'context "{args.name}" {state}: {address}\n')
    if config.current != args.name:
        print(f"use it: livecalc config use-context {args.name}", file=sys.stderr)
    return 0


def cmd_use_context(args: argparse.Namespace) -> int:
    config = load_config(os.environ)
    if args.name not in config.contexts:
        raise NotFound(f"no context {args.name!r} in {config.path} (livecalc config get-contexts)")
    config.current = args.name
    config.save()
    write_out(f'switched to context "{args.name}" ({config.contexts[args.name].address})\n')
    return 0


def cmd_delete_context(args: argparse.Namespace) -> int:
    config = load_config(os.environ)
    if config.contexts.pop(args.name, None) is None:
        raise NotFound(f"no context {args.name!r} in {config.path}")
    if config.current == args.name:
        config.current = None
    config.save()
    write_out(f'deleted context "{args.name}"\n')
    return 0


def cmd_get_contexts(args: argparse.Namespace) -> int:
    config = load_config(os.environ)
    contexts = sorted(config.contexts.values(), key=lambda c: c.name)
    if args.json:
        emit_json(
            {
                "current_context": config.current,
                "contexts": [
                    {"name": c.name, "address": c.address, "token": bool(c.token), "tls_ca": c.tls_ca} for c in contexts
                ],
            }
        )
        return 0
    rows = [["CURRENT", "NAME", "ADDRESS", "TOKEN", "TLS-CA"]]
    rows += [
        ["*" if c.name == config.current else "", c.name, c.address, "yes" if c.token else "-", c.tls_ca or "-"]
        for c in contexts
    ]
    write_out(table(rows))
    return 0


def cmd_current_context(args: argparse.Namespace) -> int:
    config = load_config(os.environ)
    if config.current is None:
        raise NotFound(f"no current context (livecalc config use-context NAME; config file {config.path})")
    write_out(config.current + "\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The address client commands use now, and where it comes from."""
    target = resolve_target(None, os.environ)
    token = security_for(target, ChannelSecurity(token=TOKEN.resolve(os.environ))).token
    if args.json:
        emit_json(
            {
                "address": target.address,
                "source": target.source,
                "context": target.context.name if target.context else None,
                "token": bool(token),
                "config": str(config_path(os.environ)),
            }
        )
        return 0
    lines = [
        f"address  {target.address}  (from {target.source})",
        f"context  {target.context.name if target.context else '-'}",
        f"token    {'yes' if token else '-'}",
        f"config   {config_path(os.environ)}",
    ]
    write_out("\n".join(lines) + "\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `config` command group (saved contexts) to the top-level parser."""
    group = sub.add_parser(
        "config",
        help="saved contexts: the gateway address (and token) every client command uses",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    cmds = group.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    p = cmds.add_parser("set-context", help="create or change a context (only the options given change)")
    p.add_argument("name")
    p.add_argument("--address", dest="context_address", metavar="HOST:PORT", help="the gateway's address")
    p.add_argument("--token", dest="context_token", help="bearer token sent to this address ('' removes it)")
    p.add_argument("--tls-ca", dest="context_tls_ca", help="PEM roots to trust for this address ('' removes it)")
    p.add_argument("--use", action="store_true", help="make it the current context too")
    p.set_defaults(func=cmd_set_context)
    p = cmds.add_parser("use-context", help="make a context the current one")
    p.add_argument("name")
    p.set_defaults(func=cmd_use_context)
    p = cmds.add_parser("get-contexts", help="list the contexts (* marks the current one)")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_get_contexts)
    p = cmds.add_parser("current-context", help="print the current context's name")
    p.set_defaults(func=cmd_current_context)
    p = cmds.add_parser("delete-context", help="remove a context")
    p.add_argument("name")
    p.set_defaults(func=cmd_delete_context)
    p = cmds.add_parser("show", help="the address client commands use now, and where it comes from")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_show)
