"""`livecalc`: the one command-line entry point of LiveCalc Mesh.

Each command group lives beside the code it drives (`services.<svc>.cli`); this module only
assembles the parser, resolves configuration from flags and the environment, and turns
expected failures into one clear line on stderr with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

import anyio
from prometheus_client import CollectorRegistry, disable_created_metrics

from services.client.contexts import resolve_target, security_for
from services.common.auth.cli import (
    add_client_arguments,
    add_serve_arguments,
    channel_security_from_args,
    security_from_args,
)
from services.common.auth.config import check_bind
from services.common.client import (
    EXIT_BROKEN_PIPE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    ChannelSecurity,
    OutputClosed,
    silence_stdout,
    use_channel_security,
)
from services.common.config import (
    DEFAULT_PORTS,
    GRACE,
    HOST,
    metrics_port_setting,
    port_setting,
    resolve_server_config,
)
from services.common.errors import LivecalcError
from services.common.logs import configure_logging
from services.common.server import serve
from services.common.service import ServiceModule
from services.common.up import run_mesh

SERVICES = tuple(DEFAULT_PORTS)
Command = Callable[[argparse.Namespace], int]


def _service_module(name: str) -> ServiceModule:
    return cast(ServiceModule, importlib.import_module(f"services.{name}.server"))


def _cmd_serve(args: argparse.Namespace) -> int:
    env = os.environ
    configure_logging(
        args.service,
        level=args.log_level or env.get("LIVECALC_LOG_LEVEL", "info"),
        fmt=args.log_format or env.get("LIVECALC_LOG_FORMAT", "text"),
    )
    config = resolve_server_config(
        args.service, env, host=args.host, port=args.port, metrics_port=args.metrics_port, grace_seconds=args.grace
    )
    security = security_from_args(args, env)
    check_bind(config.host, security)  # before the service opens anything
    module = _service_module(args.service)
    # started by `livecalc up` (or `livecalc run`): stop when it is gone
    supervisor = int(env["LIVECALC_SUPERVISOR_PID"]) if env.get("LIVECALC_SUPERVISOR_PID", "").isdigit() else None

    async def run() -> None:
        registry = CollectorRegistry(auto_describe=True)
        parts = await module.build(args, env, registry)
        await serve(
            config,
            parts.bindings,
            registry=registry,
            on_stop=parts.on_stop,
            security=security,
            supervisor_pid=supervisor,
        )

    anyio.run(run, backend="asyncio")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    code: int = run_mesh(args)
    return code


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve_p = sub.add_parser("serve", help="run one service in the foreground")
    services = serve_p.add_subparsers(dest="service", required=True, metavar="SERVICE")
    for name in SERVICES:
        port = DEFAULT_PORTS[name][0]
        p = services.add_parser(name, help=f"run the {name} service (default port {port})")
        for setting in (HOST, port_setting(name), metrics_port_setting(name), GRACE):
            setting.add_argument(p)
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
        p.add_argument("--log-format", choices=["text", "json"])
        add_serve_arguments(p)
        _service_module(name).add_arguments(p)
        p.set_defaults(func=_cmd_serve)


def _add_up(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run data, engine and gateway on localhost in the foreground")
    p.add_argument("--data-dir", help="where datasets, packages and jobs live (default ./.livecalc)")
    p.add_argument("--engines", type=int, default=1, help="number of engine processes (default 1)")
    p.add_argument("--port-offset", type=int, default=0, help="added to every default port")
    p.add_argument(
        "--auth-dev",
        action="store_true",
        help="auth with the embedded dev secret (tokens: livecalc auth dev-token); needed to listen beyond "
        "loopback (LIVECALC_HOST)",
    )
    p.set_defaults(func=_cmd_up)


def _command_groups() -> Sequence[str]:
    """Command groups contributed by service packages (`register(sub)` in services.<x>.cli).

    Only modules that exist are listed: a missing one is an error, not silently skipped.
    """
    return (
        "services.data.cli",
        "services.engine.cli",
        "services.gateway.cli",
        "services.client.cli",
        "services.client.contexts",
        "services.client.demo",
        "services.bench.mesh.command",
        "services.bench.me.command",
        "services.gateway.bench_store",
        "services.common.auth.cli",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livecalc", description="LiveCalc Mesh: stochastic actuarial valuation")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_up(sub)
    bench = sub.add_parser("bench", help="benchmarks: print figures and ratios measured side by side")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="TARGET")
    for module_name in _command_groups():
        module = importlib.import_module(module_name)
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
        register_bench = getattr(module, "register_bench", None)
        if register_bench is not None:
            register_bench(bench_sub)
    _add_client_security(parser)
    return parser


def _add_client_security(parser: argparse.ArgumentParser) -> None:
    """`--token`/`--tls`/`--tls-ca` on every command that takes `--address` (a client command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_client_security(child)
    options = parser._option_string_actions
    if "--address" in options and "--token" not in options:
        add_client_arguments(parser)


def _client_security(args: argparse.Namespace) -> ChannelSecurity:
    """The channel security of this command; for a client command (one with `--address`) the
    address is resolved first: flag, else $LIVECALC_ADDRESS, else the current context, else
    the local gateway (services.client.contexts), and the context's token applies to its own
    address when neither --token nor LIVECALC_TOKEN gives one."""
    security = channel_security_from_args(args, os.environ)
    if "address" not in vars(args):
        return security
    target = resolve_target(args.address, os.environ)
    args.address = target.address
    return security_for(target, security)


def main(argv: Sequence[str] | None = None) -> int:
    disable_created_metrics()  # type: ignore[no-untyped-call]
    parser = build_parser()
    args = parser.parse_args(argv)
    func = cast(Command, args.func)
    try:
        use_channel_security(_client_security(args))
        return func(args)
    except (OutputClosed, BrokenPipeError):
        # `livecalc ... | head`: the reader has all it wanted; say nothing more.
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except LivecalcError as exc:
        print(f"livecalc: error: {exc.details()}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"livecalc: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
