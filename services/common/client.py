"""Client helpers every command-line client uses: channels, calls, errors, output.

- `call(address, service, stub_type, fn)` opens a channel, runs `fn(stub)` and turns any
  gRPC failure into a one-line `LivecalcError` (`RemoteError`, or `Unavailable` naming the
  service and address), which `services.cli.main` prints and maps to an exit code.
- `emit_json` prints one JSON document whose keys keep the order they were built in (so
  callers build them in schema order) and whose 64-bit integers stay integers.
- `write_out` / `emit_json` survive a reader that closes the pipe early (`... | head`):
  they raise `OutputClosed`, which the CLI ends quietly with the conventional status 141.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any, Final, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from services.common.errors import LivecalcError, Unavailable

T = TypeVar("T")
S = TypeVar("S")

#: Exit statuses of the `livecalc` command.
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
#: 128 + SIGPIPE: what a shell reports for a writer whose reader went away.
EXIT_BROKEN_PIPE: Final = 141

#: Clients accept answers up to this size (servers send at most 4 MiB per message).
MAX_RECEIVE_BYTES: Final = 16 << 20


class RemoteError(LivecalcError):
    """A service answered with an error status; `code` is that status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name.lower()}: {message}")
        self.remote_code = code


class OutputClosed(Exception):
    """stdout's reader went away (a closed pipe); nothing more can be printed."""


def open_channel(address: str) -> grpc.Channel:
    """A plaintext channel to HOST:PORT that accepts answers up to MAX_RECEIVE_BYTES."""
    return grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])


def rpc_error(exc: grpc.RpcError, service: str, address: str) -> LivecalcError:
    """The one-line error for a failed call (UNAVAILABLE names what could not be reached)."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(code.name)
    details = " ".join(details.split())  # one line, whatever the server sent
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"cannot reach the {service} service at {address}: {details}")
    return RemoteError(code, details)


def call(address: str, service: str, stub_type: Callable[[grpc.Channel], S], fn: Callable[[S], T]) -> T:
    """Run `fn` with a stub on a fresh channel; gRPC errors become one-line LivecalcErrors.

    `fn` passes its own `timeout=` (the deadline) to each RPC.
    """
    with open_channel(address) as channel:
        try:
            return fn(stub_type(channel))
        except grpc.RpcError as exc:
            raise rpc_error(exc, service, address) from None


def as_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready values in field order (int64 as the proto3 JSON strings)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _plain(value: Any) -> Any:
    # JSON has no NaN or infinities: spell them as proto3 JSON does.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def emit_json(document: Any) -> None:
    """Print one JSON document; keys in the order given, never sorted."""
    write_out(json.dumps(_plain(document), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_out(text: str) -> None:
    """Write to stdout; a closed pipe raises OutputClosed instead of an OSError."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        raise OutputClosed from None


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
