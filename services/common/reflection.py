"""Server reflection that serves the proto comments too.

grpcio-reflection rebuilds file descriptors from the runtime pool, which has no source
info, so `grpcurl describe` would show bare messages. `make protos` also writes a
descriptor set with source info (gen/livecalc/descriptors.binpb); for the files in it this
servicer returns those descriptors, comments included. Other files (health, reflection,
well-known types) come from the runtime pool as usual.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

DESCRIPTOR_SET = "descriptors.binpb"


def load_documented_files() -> dict[str, bytes]:
    """File name → serialized FileDescriptorProto with source info, from the generated set."""
    raw = resources.files("livecalc").joinpath(DESCRIPTOR_SET).read_bytes()
    fds = descriptor_pb2.FileDescriptorSet.FromString(raw)
    return {f.name: f.SerializeToString() for f in fds.file}


class DocumentedReflectionServicer(ReflectionServicer):  # type: ignore[misc]
    """grpc.reflection.v1alpha with comments for LiveCalc's own protos."""

    def __init__(self, service_names: Iterable[str], documented: dict[str, bytes]) -> None:
        super().__init__(tuple(service_names))
        self._documented = documented

    def _serialized(self, file: FileDescriptor) -> bytes:
        documented = self._documented.get(file.name)
        if documented is not None:
            return documented
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        return proto.SerializeToString()

    def _response(self, file: FileDescriptor, request: Any) -> Any:
        files: dict[str, FileDescriptor] = {}
        pending = [file]
        while pending:
            current = pending.pop()
            if current.name in files:
                continue
            files[current.name] = current
            pending.extend(current.dependencies)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[self._serialized(f) for f in files.values()]
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            file = self._pool.FindFileByName(filename)
        except KeyError:
            return super()._file_by_filename(request, filename)
        return self._response(file, request)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            file = self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            return super()._file_containing_symbol(request, fully_qualified_name)
        return self._response(file, request)
