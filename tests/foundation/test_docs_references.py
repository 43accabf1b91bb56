"""Every file the repository's text sends a reader to is a file the repository has.

Scanned: the tracked files (``git ls-files``) named ``Makefile`` or ``Dockerfile`` or ending in
``.md``, ``.py``, ``.pyi``, ``.yaml``, ``.yml``, ``.toml``, ``.json``, ``.c``, ``.h`` or
``.proto`` (this file excepted: its docstring shows examples). A *reference* is one of:

1. a Markdown link or image target, ``[text](target)``, in a ``.md`` file, outside fenced code
   blocks and inline code; URLs (``scheme:…``) and in-page anchors (``#…``) are not files, and
   a target's ``#anchor`` or ``?query`` is cut off;
2. a path beginning ``docs/`` that starts a word (not inside a longer path or a URL):
   ``docs/model.md``, ``docs/images/plot.png``;
3. a Markdown file whose name is written in capitals, the convention of the project's own
   documents (``README.md``, ``BENCHMARKS.md``), alone or at the end of a path. When the path
   has directories and the first is neither ``.`` / ``..`` nor a top-level entry of the
   repository, it names a file outside the repository (``endowment/README.md``: a package the
   authoring guide generates) and is not checked. Lower-case names (a test's ``notes.md``
   literal) are references only in forms 1 and 2;
4. any path into the sibling directory ``shared`` above the repository (the team's private
   notes): never in the repository, so always reported.

A reference resolves when, taken relative to the referencing file's directory or to the
repository root, it stays inside the repository and names a tracked file or a directory that
holds tracked files. Trailing sentence punctuation (``.``, ``,``, ``:``, ``;``) is not part of
a path.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT

SUFFIXES = frozenset({".md", ".py", ".pyi", ".yaml", ".yml", ".toml", ".json", ".c", ".h", ".proto"})
NAMES = frozenset({"Makefile", "Dockerfile"})
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()

_PATH_CHARS = r"[\w./-]"
MARKDOWN_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")
DOCS_PATH = re.compile(rf"(?<!{_PATH_CHARS})(docs/{_PATH_CHARS}*)")
CAPITAL_MD = re.compile(rf"(?<!{_PATH_CHARS})((?:[\w.-]+/)*[A-Z][A-Z0-9_-]*\.md)(?![\w-])")
SHARED = re.compile(r"(?<![\w.-])((?:\.\./)+shared(?:/[\w./-]*)?)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`+[^`\n]*`+")


@dataclass(frozen=True)
class Reference:
    """A path the text at ``source``:``line`` sends a reader to (``kind``: which form, 1–4)."""

    source: str
    line: int
    target: str
    kind: str


def tracked_files() -> list[str]:
    done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [p for p in done.stdout.decode("utf-8").split("\0") if p]


def scanned(path: str) -> bool:
    name = posixpath.basename(path)
    return path != SELF and (name in NAMES or posixpath.splitext(name)[1] in SUFFIXES)


def _clean(target: str) -> str:
    return target.rstrip(".,:;")


def references(source: str, text: str, top_level: frozenset[str]) -> Iterator[Reference]:
    """The references (forms 1–4 of the module docstring) in ``text``, the content of ``source``."""
    markdown = source.endswith(".md")
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if markdown and FENCE.match(line):
            fenced = not fenced
            continue
        if markdown and not fenced:
            for match in MARKDOWN_LINK.finditer(INLINE_CODE.sub("", line)):
                target = match.group(1)
                if SCHEME.match(target) or target.startswith("#"):
                    continue
                target = target.split("#", 1)[0].split("?", 1)[0]
                if target:
                    yield Reference(source, number, target, "markdown link")
        for match in DOCS_PATH.finditer(line):
            yield Reference(source, number, _clean(match.group(1)), "docs/ path")
        for match in CAPITAL_MD.finditer(line):
            target = match.group(1)
            first = target.split("/", 1)[0]
            if "/" in target and first not in (".", "..") and first not in top_level:
                continue
            if target.startswith("docs/"):
                continue  # form 2 already
            yield Reference(source, number, target, "document name")
        for match in SHARED.finditer(line):
            yield Reference(source, number, _clean(match.group(1)), "../shared path")


def resolves(ref: Reference, files: frozenset[str], directories: frozenset[str]) -> bool:
    """The target, from the source's directory or from the root, is a tracked file or directory."""
    bases = (posixpath.dirname(ref.source), "")
    for base in bases:
        path = posixpath.normpath(posixpath.join(base, ref.target))
        if path.startswith("../") or path == ".." or posixpath.isabs(path):
            continue  # outside the repository
        if path in files or path in directories:
            return True
    return False


def index(paths: list[str]) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """Tracked files present on disk, the directories holding them, and the top-level entries."""
    files = frozenset(p for p in paths if (ROOT / p).is_file())
    directories = {"."}
    for p in files:
        parent = posixpath.dirname(p)
        while parent:
            directories.add(parent)
            parent = posixpath.dirname(parent)
    top = frozenset(p.split("/", 1)[0] for p in files)
    return files, frozenset(directories), top


def broken_references() -> list[str]:
    paths = tracked_files()
    files, directories, top = index(paths)
    found = []
    for source in sorted(files):
        if not scanned(source):
            continue
        text = (ROOT / source).read_text(encoding="utf-8", errors="replace")
        for ref in references(source, text, top):
            if not resolves(ref, files, directories):
                found.append(f"{ref.source}:{ref.line}: {ref.kind} {ref.target!r} is not a file of the repository")
    return found


def test_every_referenced_file_exists() -> None:
    broken = broken_references()
    assert not broken, "references to files the repository does not have:\n" + "\n".join(broken)


# --- the matcher itself: what it takes for a reference, and what it leaves alone

TOP = frozenset({"docs", "services", "README.md", "tests"})
FILES = frozenset({"README.md", "docs/model.md", "docs/images/plot.png", "services/x.py"})
DIRS = frozenset({".", "docs", "docs/images", "services"})


def found(source: str, text: str) -> list[tuple[str, str]]:
    return [(r.kind, r.target) for r in references(source, text, TOP)]


def test_markdown_links_resolve_from_the_file_and_from_the_root() -> None:
    text = (
        "See [the model](model.md#outputs), ![plot](images/plot.png), [root](../README.md), [web](https://x.org/a.md)."
    )
    refs = [r for r in references("docs/guide.md", text, TOP) if r.kind == "markdown link"]
    assert [r.target for r in refs] == ["model.md", "images/plot.png", "../README.md"]
    assert all(resolves(r, FILES, DIRS) for r in refs)
    missing = list(references("docs/guide.md", "[gone](gone.md) and [anchor](#here)", TOP))
    assert [r.target for r in missing] == ["gone.md"]
    assert not resolves(missing[0], FILES, DIRS)


def test_fenced_code_and_inline_code_hold_no_links() -> None:
    text = "```python\nx = table[0](1)\n[a](missing.md)\n```\n`[b](also-missing.md)` and [c](model.md)"
    assert found("docs/guide.md", text) == [("markdown link", "model.md")]


def test_docs_paths_and_capital_names_anywhere() -> None:
    text = 'ROOT / "docs" / "x.md"; see docs/model.md. Also PLAN.md, README.md, open("notes.md"), https://h/docs/a.md'
    assert found("services/x.py", text) == [
        ("docs/ path", "docs/model.md"),
        ("document name", "PLAN.md"),
        ("document name", "README.md"),
    ]


def test_paths_outside_the_repository_are_not_checked_but_shared_always_is() -> None:
    assert found("docs/guide.md", "endowment/README.md is written by `package init`") == []
    refs = list(references("services/x.py", "as ../shared/PLAN.md says", TOP))
    assert [(r.kind, r.target) for r in refs] == [
        ("document name", "../shared/PLAN.md"),
        ("../shared path", "../shared/PLAN.md"),
    ]
    assert not any(resolves(r, FILES, DIRS) for r in refs)
