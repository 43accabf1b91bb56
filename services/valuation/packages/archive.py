"""The package archive: a byte-reproducible zip writer and a reader that trusts nothing.

Writing: entries sorted by path, timestamp 1980-01-01 00:00:00, mode 0644, no directory
entries, DEFLATE level 9, no extra fields and no comment — so the same files always give the
same bytes (with the same zlib).

Reading (`read_archive`): the archive is hostile until proven otherwise. Every entry is
checked before anything is decompressed (count, names, duplicates, symlinks, encryption,
compression method, declared sizes and ratio); then each is decompressed in pieces while the
bytes produced are counted against the caps, so a zip bomb whose headers lie stops at the
cap instead of filling memory. Nothing is ever written to disk: the result is path → bytes.
"""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from services.valuation.packages.report import Issue, PackageInvalid, error

FIXED_TIME: Final = (1980, 1, 1, 0, 0, 0)
_READ_PIECE: Final = 1 << 16


@dataclass(frozen=True)
class PackageLimits:
    """Caps on one package; all in bytes except the counts and the ratio."""

    max_archive_bytes: int = 64 << 20
    max_entries: int = 1000
    max_total_bytes: int = 256 << 20
    max_file_bytes: int = 128 << 20
    #: largest decompressed/compressed ratio of one entry (text tables compress ~10x)
    max_ratio: float = 200.0


def write_archive(files: Mapping[str, bytes]) -> bytes:
    """The zip of ``files`` (path → bytes), byte-reproducible."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(files):
            info = zipfile.ZipInfo(path, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so that the mode below means what it says
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, files[path], compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return out.getvalue()


def _name_problem(name: str) -> str | None:
    if not name or "\\" in name or "\0" in name:
        return "has an unsafe name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "escapes the package (..)"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' path segment"
    return None


def read_archive(data: bytes, limits: PackageLimits | None = None) -> dict[str, bytes]:
    """Safely unpack ``data`` into path → bytes; `PackageInvalid` lists every problem found."""
    limits = limits or PackageLimits()
    if len(data) > limits.max_archive_bytes:
        raise PackageInvalid([error("archive", f"is {len(data)} bytes; the cap is {limits.max_archive_bytes}")])
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError) as exc:
        raise PackageInvalid([error("archive", f"is not a zip archive: {exc}")]) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_entries:
            raise PackageInvalid([error("archive", f"has {len(infos)} entries; the cap is {limits.max_entries}")])
        issues: list[Issue] = []
        counts = Counter(i.filename for i in infos)
        issues += [error(name, f"appears {n} times in the archive") for name, n in counts.items() if n > 1]
        declared = 0
        wanted: list[zipfile.ZipInfo] = []
        for info in infos:
            name = info.filename
            problem = _name_problem(name)
            mode = info.external_attr >> 16
            if problem is not None:
                issues.append(error(repr(name) if problem == "has an unsafe name" else name, problem))
            elif stat.S_ISLNK(mode):
                issues.append(error(name, "is a symbolic link"))
            elif info.flag_bits & 0x1:
                issues.append(error(name, "is encrypted"))
            elif info.is_dir():
                continue  # directory entries carry no bytes; files are listed one by one
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no Unix type recorded (Windows tools)
                issues.append(error(name, "is not a regular file"))
            elif info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                issues.append(error(name, f"uses compression method {info.compress_type}; use DEFLATE or none"))
            elif info.file_size > limits.max_file_bytes:
                issues.append(
                    error(name, f"declares {info.file_size} bytes; the cap per file is {limits.max_file_bytes}")
                )
            elif info.file_size > limits.max_ratio * max(info.compress_size, 1) and info.file_size > _READ_PIECE:
                ratio = info.file_size / max(info.compress_size, 1)
                issues.append(error(name, f"expands {ratio:.0f}x; the cap is {limits.max_ratio:.0f}x"))
            else:
                declared += info.file_size
                wanted.append(info)
        if declared > limits.max_total_bytes:
            issues.append(error("archive", f"declares {declared} bytes in all; the cap is {limits.max_total_bytes}"))
        if issues:
            raise PackageInvalid(issues)
        files: dict[str, bytes] = {}
        total = 0
        for info in wanted:
            try:
                content, total = _read_entry(zf, info, total, limits)
            except _TooBig as exc:
                raise PackageInvalid([error(info.filename, str(exc))]) from None
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
                issues.append(error(info.filename, f"cannot be read: {exc}"))
                continue
            files[info.filename] = content
        if issues:
            raise PackageInvalid(issues)
        return files


class _TooBig(Exception):
    pass


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, total: int, limits: PackageLimits) -> tuple[bytes, int]:
    """One entry's bytes, counted as they are produced (headers may lie; zipfile checks the CRC)."""
    pieces: list[bytes] = []
    size = 0
    with zf.open(info) as f:
        while piece := f.read(_READ_PIECE):
            size += len(piece)
            total += len(piece)
            if size > info.file_size or size > limits.max_file_bytes:
                raise _TooBig(f"decompresses past its declared {info.file_size} bytes")
            if total > limits.max_total_bytes:
                raise _TooBig(f"the archive decompresses past the cap of {limits.max_total_bytes} bytes")
            if size > _READ_PIECE and size > limits.max_ratio * max(info.compress_size, 1):
                raise _TooBig(f"expands more than {limits.max_ratio:.0f}x")
            pieces.append(piece)
    return b"".join(pieces), total
