"""`livecalc package …`: build and check model packages locally, and upload them to the gateway.

Local commands (init, build, validate, inspect) need no service (``init --template c`` and
``build`` of a directory with ``src/*.c`` compile C with the ``ziglang`` package, via
`services.valuation.sdk`); upload (of an archive, or a directory built first), list and show
talk to the gateway's PackageService at the one client address (services.client.contexts);
show takes a package hash or a unique prefix of one. Errors and warnings are printed one per
line with their JSON path or file; `validate` exits 1 when there are errors.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from livecalc.gateway.v1 import package_pb2, package_service_pb2, package_service_pb2_grpc
from services.client.aio import package_archive
from services.client.contexts import ADDRESS_HELP
from services.common import client
from services.common.client import as_dict, emit_json, match_prefix, table, write_out
from services.common.errors import InvalidArgument
from services.valuation.packages.package import Package, build_directory, check_directory, verify_archive
from services.valuation.packages.reference import REFERENCE_PACKAGES, init_directory
from services.valuation.packages.report import Issue, PackageInvalid
from services.valuation.sdk.build import BuildError, ModelBuild, build_model, has_sources
from services.valuation.sdk.digest import digest_text
from services.valuation.sdk.template import TEMPLATES, init_c_template

UPLOAD_CHUNK: Final = 1 << 20
"""Below the 4 MiB message limit with room for the framing (the service accepts up to 4 MiB of payload)."""
T = TypeVar("T")
Stub = package_service_pb2_grpc.PackageServiceStub
_FULL_HASH: Final = re.compile(r"[0-9a-f]{64}")


def call(address: str, fn: Callable[[Stub], T]) -> T:
    return client.call(address, "gateway", Stub, fn)


def _issue_json(issue: Issue) -> dict[str, str]:
    return {"severity": issue.severity, "where": issue.where, "message": issue.message}


def _print_issues(issues: list[Issue]) -> None:
    for issue in issues:
        print(str(issue), file=sys.stderr if issue.severity == "error" else sys.stdout)


def cmd_init(args: argparse.Namespace) -> int:
    dest = Path(args.dir)
    if args.template == "reference":
        written = init_directory(dest, model=args.model)
        pipeline = "normals → savings" if args.model == "savings" else "esg → term_life"
        print(f"wrote the {args.model} reference package ({pipeline}) to {args.dir}: {len(written)} files")
        return 0
    if args.model != "term_life":
        raise InvalidArgument(f"--model {args.model} writes a reference package: leave out --template c")
    made = init_c_template(dest)
    print(f"wrote the C model template (an endowment; esg → wasm://model) to {args.dir}: {len(made.files)} files")
    if made.build is None:
        print(
            f"{dest / 'wasm' / 'model.wasm'} is not built: install the compiler (pip install 'livecalc-mesh[sdk]') "
            f"and run: livecalc package build {args.dir}",
            file=sys.stderr,
        )
        return 1
    _print_compiled(dest, made.build)
    print(f"next: read {dest / 'README.md'}; edit, then livecalc package build {args.dir}")
    return 0


def _print_compiled(root: Path, made: ModelBuild) -> None:
    if made.messages:
        print(made.messages, file=sys.stderr)
    print(
        f"compiled {root / 'src'}/*.c → {made.path} (node {made.node}, static data at {made.global_base}, "
        f"interface digest {digest_text(made.digest)})"
    )


def _source_date_epoch() -> int | None:
    text = os.environ.get("SOURCE_DATE_EPOCH", "")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"SOURCE_DATE_EPOCH must be an integer, got {text!r}") from None


def default_archive(root: Path) -> Path:
    """``DIR.zip`` beside the package directory ``DIR``."""
    resolved = root.resolve()
    return resolved.parent / f"{resolved.name}.zip"


def cmd_build(args: argparse.Namespace) -> int:
    """Compile ``src/*.c`` (when the directory has C sources), then archive and validate: every
    problem is printed, one per line, and the exit code is 1 when there is any error."""
    root = Path(args.dir)
    out = Path(args.out) if args.out else default_archive(root)
    log = sys.stderr if args.json else sys.stdout
    failed: str | None = None
    if root.is_dir() and has_sources(root):
        try:
            made = build_model(root)
        except PackageInvalid as exc:  # nothing to compile against: report it with everything else wrong
            found = list(exc.issues)
            return _refused(root, found + [i for i in check_directory(root) if i not in found], args)
        except BuildError as exc:
            if exc.output:
                print(exc.output, file=sys.stderr)
            print(f"error: {exc.message}", file=sys.stderr)
            failed = exc.target or "src"
        else:
            with contextlib.redirect_stdout(log):
                _print_compiled(root, made)
    try:
        archive, package = build_directory(root, source_date_epoch=_source_date_epoch())
    except PackageInvalid as exc:
        # after a failed compile the old binary's findings are stale news: the compiler's report says why
        return _refused(root, [i for i in exc.issues if failed is None or i.where != failed], args, compiled=failed)
    if failed is not None:
        return _refused(root, list(package.warnings), args, compiled=failed)
    out.write_bytes(archive)
    if args.json:
        emit_json({"out": str(out), **_summary(package, archive)})
        return 0
    _print_issues(list(package.warnings))
    print(f"built {out}: {len(archive):,} bytes, packageHash {package.package_hash}")
    return 0


def _refused(root: Path, issues: list[Issue], args: argparse.Namespace, *, compiled: str | None = None) -> int:
    errors = sum(1 for i in issues if i.severity == "error") + (compiled is not None)
    if args.json:
        found = [_issue_json(i) for i in issues]
        if compiled is not None:
            found.insert(0, {"severity": "error", "where": compiled, "message": "the C did not compile"})
        emit_json({"valid": False, "issues": found})
    else:
        _print_issues(issues)
        print(f"{root}: not built: {errors} error{'s' if errors != 1 else ''}", file=sys.stderr)
    return 1


def _check(path: Path) -> list[Issue]:
    if path.is_dir():
        return check_directory(path)
    try:
        return list(verify_archive(path.read_bytes()).warnings)
    except PackageInvalid as exc:
        return list(exc.issues)


def cmd_validate(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise InvalidArgument(f"{path}: no such file or directory")
    issues = _check(path)
    errors = sum(1 for i in issues if i.severity == "error")
    if args.json:
        emit_json({"valid": errors == 0, "issues": [_issue_json(i) for i in issues]})
    else:
        _print_issues(issues)
        verdict = "valid" if errors == 0 else f"invalid: {errors} error{'s' if errors != 1 else ''}"
        print(f"{path}: {verdict}, {len(issues) - errors} warning(s)")
    return 0 if errors == 0 else 1


def _summary(package: Package, archive: bytes) -> dict[str, Any]:
    m = package.manifest
    return {
        "package_hash": m.package_hash,
        "name": package.config.get("name"),
        "version": package.config.get("version"),
        "created_at": m.created_at,
        "archive_sha256": hashlib.sha256(archive).hexdigest(),
        "size_bytes": len(archive),
        "assets": [a.as_json() for a in m.assets],
        "pipeline": package.config.get("pipeline"),
        "scenarios": package.config.get("scenarios"),
        "warnings": [_issue_json(i) for i in package.warnings],
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    archive = Path(args.file).read_bytes()
    package = verify_archive(archive)
    summary = _summary(package, archive)
    if args.json:
        emit_json(summary)
        return 0
    lines = [
        f"package   {summary['name']} {summary['version']}",
        f"hash      {summary['package_hash']}",
        f"archive   {summary['size_bytes']:,} bytes, sha256 {summary['archive_sha256']}",
        f"created   {summary['created_at']}",
        "pipeline",
    ]
    for node in package.config.get("pipeline") or []:
        lines.append(
            f"  {node['id']:<12} {node['engine']:<20} {', '.join(node['inputs'])} → {', '.join(node['outputs'])}"
        )
    lines.append("assets")
    lines += [f"  {a.path:<28} {a.size:>9,}  {a.type:<10} {a.sha256}" for a in package.manifest.assets]
    lines += [f"warning: {i.where}: {i.message}" for i in package.warnings]
    write_out("\n".join(lines) + "\n")
    return 0


def upload_requests(archive: bytes) -> Iterator[package_service_pb2.UploadPackageRequest]:
    header = package_service_pb2.PackageUploadHeader(
        size_bytes=len(archive), sha256=hashlib.sha256(archive).hexdigest()
    )
    yield package_service_pb2.UploadPackageRequest(header=header)
    for start in range(0, len(archive), UPLOAD_CHUNK):
        yield package_service_pb2.UploadPackageRequest(chunk=archive[start : start + UPLOAD_CHUNK])


def _line(p: package_pb2.Package) -> str:
    when = p.upload_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    return f"{p.package_hash}  {p.name} {p.version}  {p.size_bytes:,} bytes  {when}"


#: `package list`'s header; `_row` gives a package's row.
PACKAGE_HEADER: Final = ("PACKAGE", "NAME", "VERSION", "BYTES", "UPLOADED")


def _row(p: package_pb2.Package) -> list[str]:
    when = p.upload_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    return [p.package_hash, p.name, p.version, f"{p.size_bytes:,}", when]


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        raise InvalidArgument(f"{path}: no such package file or directory")
    archive = package_archive(path)  # a directory is built first, as `package build` builds it
    reply = call(args.address, lambda s: s.UploadPackage(upload_requests(archive), timeout=args.timeout))
    if args.json:
        emit_json(as_dict(reply))
    else:
        state = "already stored" if reply.already_existed else "uploaded"
        print(f"{state}: {_line(reply.package)}")
    return 0


def _list(args: argparse.Namespace, page_size: int = 100) -> list[package_pb2.Package]:
    packages: list[package_pb2.Package] = []
    token = ""
    while True:
        request = package_service_pb2.ListPackagesRequest(page_size=page_size, page_token=token)
        reply = call(args.address, lambda s, r=request: s.ListPackages(r, timeout=args.timeout))  # type: ignore[misc]
        packages += reply.packages
        token = reply.next_page_token
        if not token:
            return packages


def cmd_list(args: argparse.Namespace) -> int:
    packages = _list(args, args.page_size)
    if args.json:
        emit_json({"packages": [as_dict(p) for p in packages]})
    else:
        write_out(table([PACKAGE_HEADER, *(_row(p) for p in packages)]))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    package_hash = args.package_hash.lower()
    if not _FULL_HASH.fullmatch(package_hash):  # a unique prefix of one of the caller's packages
        package_hash = match_prefix(package_hash, [p.package_hash for p in _list(args)], "package hash")
    request = package_service_pb2.GetPackageRequest(package_hash=package_hash)
    reply = call(args.address, lambda s: s.GetPackage(request, timeout=args.timeout))
    p = reply.package
    if args.json:
        emit_json(as_dict(p))
        return 0
    lines = [_line(p), f"archive sha256 {p.archive_sha256}, default scenarios {p.default_scenario_count}", ""]
    nodes = [["NODE", "ENGINE", "INPUTS", "OUTPUTS"]]
    nodes += [[n.id, n.engine, ", ".join(n.inputs), ", ".join(n.outputs)] for n in p.pipeline]
    assets = [["ASSET", "BYTES", "SHA256"]]
    assets += [[a.path, f"{a.size_bytes:,}", a.sha256] for a in p.assets]
    write_out("\n".join(lines) + "\n" + table(nodes) + "\n" + table(assets))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `package` command group to the top-level parser."""
    group = sub.add_parser("package", help="model packages: init, build, validate, inspect, upload, list, show")
    cmds = group.add_subparsers(dest="package_command", required=True, metavar="COMMAND")
    p = cmds.add_parser("init", help="write an editable model package directory (docs/model-authoring.md)")
    p.add_argument("dir")
    p.add_argument(
        "--template",
        choices=TEMPLATES,
        default="reference",
        help="reference: the shipped term-life model (esg → term_life); c: a C model to edit, an endowment "
        "(src/model.c, built with ziglang). Default reference",
    )
    p.add_argument(
        "--model",
        choices=REFERENCE_PACKAGES,
        default="term_life",
        help="--template reference: term_life (default; esg → term_life) or savings (lifelib's CashValue_ME; "
        "normals → savings)",
    )
    p.set_defaults(func=cmd_init)
    p = cmds.add_parser(
        "build",
        help="compile src/*.c (when present) into the projection's wasm/NAME.wasm, then build and validate the "
        "archive (byte-reproducible)",
    )
    p.add_argument("dir")
    p.add_argument("--out", help="archive path to write (default DIR.zip beside the directory)")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_build)
    p = cmds.add_parser("validate", help="every error and warning of a package file or directory (exit 1 on errors)")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_validate)
    p = cmds.add_parser("inspect", help="manifest, pipeline, sizes, hashes and warnings of a package file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_inspect)
    for name, help_text, func in (
        ("upload", "upload a package archive, or a package directory (built first), to the gateway", cmd_upload),
        ("list", "list the stored packages, newest first", cmd_list),
        ("show", "a stored package's record (PACKAGE_HASH: the hash or a unique prefix)", cmd_show),
    ):
        p = cmds.add_parser(name, help=help_text)
        p.add_argument("--address", help=ADDRESS_HELP)
        p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
        p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer (default 120)")
        p.set_defaults(func=func)
        if name == "upload":
            p.add_argument("file", metavar="FILE|DIR")
        elif name == "show":
            p.add_argument("package_hash")
        else:
            p.add_argument("--page-size", type=int, default=100, help="packages per request (default 100)")
