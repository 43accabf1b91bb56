"""Client helpers every command-line client uses: channels, calls, errors, output.

- `open_channel` / `open_aio_channel` carry the caller's `ChannelSecurity`: a bearer token
  (`authorization` metadata on every call) and TLS. The `livecalc` command sets the default
  from `--token`/`LIVECALC_TOKEN` and `--tls-ca`/`LIVECALC_TLS_CA` once, in `main()`, with
  `use_channel_security`; library callers pass their own.
- `call(address, service, stub_type, fn)` opens a channel, runs `fn(stub)` and turns any
  gRPC failure into a one-line `LivecalcError` (`RemoteError`, or `Unavailable` naming the
  service and address), which `services.cli.main` prints and maps to an exit code.
- `emit_json` prints one JSON document whose keys keep the order they were built in (so
  callers build them in schema order) and whose 64-bit integers stay integers (`as_dict`
  writes a message's int64 fields as integers too, in every command).
- `table` lays out a table under its header row; `match_prefix` finds the one id a unique
  prefix (or ``START…END``) names, for every command that takes a job id or a package hash.
- `write_out` / `emit_json` survive a reader that closes the pipe early (`... | head`):
  they raise `OutputClosed`, which the CLI ends quietly with the conventional status 141.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, TypeVar, cast

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# the client's channel settings live in the client distribution; re-exported for the services
from livecalc_client.channels import MAX_RECEIVE_BYTES as MAX_RECEIVE_BYTES  # noqa: PLC0414
from livecalc_client.channels import ChannelSecurity as ChannelSecurity  # noqa: PLC0414
from livecalc_client.channels import channel_security as channel_security  # noqa: PLC0414
from livecalc_client.channels import open_aio_channel as open_aio_channel  # noqa: PLC0414
from livecalc_client.channels import use_channel_security as use_channel_security  # noqa: PLC0414
from services.common.errors import InvalidArgument, LivecalcError, NotFound, Unavailable

T = TypeVar("T")
S = TypeVar("S")

#: Exit statuses of the `livecalc` command.
EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
#: 128 + SIGPIPE: what a shell reports for a writer whose reader went away.
EXIT_BROKEN_PIPE: Final = 141


class RemoteError(LivecalcError):
    """A service answered with an error status; `code` is that status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name.lower()}: {message}")
        self.remote_code = code


class OutputClosed(Exception):
    """stdout's reader went away (a closed pipe); nothing more can be printed."""


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncBearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a sync channel."""

    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def _details(self, d: Any) -> Any:
        return _Details(
            d.method, d.timeout, [*(d.metadata or ()), *self._metadata], d.credentials, d.wait_for_ready, d.compression
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


def positive_count(text: str) -> int:
    """An argparse ``type`` for a count flag: a whole number ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return value


def open_channel(address: str, security: ChannelSecurity | None = None) -> grpc.Channel:
    """A channel to HOST:PORT (TLS and a bearer token as `security` says, by default the
    CLI's) that accepts answers up to MAX_RECEIVE_BYTES."""
    security = security if security is not None else channel_security()
    options = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
    creds = security.credentials()
    channel = (
        grpc.secure_channel(address, creds, options=options)
        if creds is not None
        else grpc.insecure_channel(address, options=options)
    )
    metadata = security.metadata()
    return grpc.intercept_channel(channel, _SyncBearer(metadata)) if metadata else channel


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
    """A message as JSON-ready values in field order, its 64-bit integers as JSON integers (not
    the proto3 JSON strings), as every `--json` document writes them."""
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _integers(cast(Descriptor, message.DESCRIPTOR), doc)


_INT64: Final = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})


def _integers(descriptor: Descriptor, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` (MessageToDict of a `descriptor` message) with int64/uint64 values as ints."""
    for f in descriptor.fields:
        if f.name not in doc:
            continue
        value = doc[f.name]
        kind = f.message_type
        if kind is not None and kind.GetOptions().map_entry:
            inner = kind.fields_by_name["value"]
            if inner.cpp_type in _INT64:
                doc[f.name] = {k: int(v) for k, v in value.items()}
            elif inner.message_type is not None and not _well_known(inner.message_type):
                doc[f.name] = {k: _integers(inner.message_type, v) for k, v in value.items()}
        elif f.cpp_type in _INT64:
            doc[f.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif kind is not None and not _well_known(kind):
            doc[f.name] = [_integers(kind, v) for v in value] if isinstance(value, list) else _integers(kind, value)
    return doc


def _well_known(descriptor: Descriptor) -> bool:
    """Timestamps, durations and the like have their own JSON forms (strings): kept as they are."""
    return descriptor.full_name.startswith("google.protobuf.")


def table(rows: Sequence[Sequence[str]]) -> str:
    """A table as text: the first row is the header; columns left-aligned, two spaces apart."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in rows)


#: How an id may be shortened in the middle, as `298d13d2…6032` (the README prints hashes so).
ELLIPSES: Final = ("…", "...")


def match_prefix(text: str, candidates: Sequence[str], what: str) -> str:
    """The one candidate `text` names: itself, a unique prefix of it, or ``START…END`` (a
    unique prefix and suffix). Several matches are an error listing them; none is NotFound.

    Callers pass the ids the caller may see (a tenant's own, from a list RPC), so a prefix
    never reaches another tenant's object."""
    if not text:
        raise InvalidArgument(f"an empty {what}")
    if text in candidates:
        return text
    head, tail = text, ""
    for mark in ELLIPSES:
        if mark in text:
            head, _, tail = text.partition(mark)
            break
    found = [c for c in candidates if c.startswith(head) and c.endswith(tail) and len(c) >= len(head) + len(tail)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"no {what} matches {text!r}")
    shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
    raise InvalidArgument(f"{text!r} matches {len(found)} {what}s: {shown}; give more of it")


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
