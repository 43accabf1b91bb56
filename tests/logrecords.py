"""Service logs read as records, so a test matches one event, not two substrings of the whole log.

Services log one record per line (services/common/logs.py): JSON objects with `--log-format
json`, else `HH:MM:SS level service message key=<json> …`. `records()` reads either back into
`Record`s (the message and its structured fields); `matching()` keeps those whose message is
the event and whose fields hold the given values, so "the requeue of the victim's chunk" is one
record naming both, never a requeue of another engine beside the victim's address in a startup
line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: `HH:MM:SS level service message`, then the fields (TextFormatter).
_TEXT_HEAD = re.compile(r"^\d\d:\d\d:\d\d (?P<level>\w+) +(?P<service>\w+) +(?P<rest>.*)$")
_FIELD = re.compile(r" (?P<key>[A-Za-z_][A-Za-z0-9_]*)=")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Record:
    level: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def _text_record(line: str) -> Record | None:
    head = _TEXT_HEAD.match(line)
    if head is None:
        return None
    rest = head["rest"]
    # The message ends where a run of ` key=<json>` pairs reaching the end of the line begins.
    for start in (m.start() for m in _FIELD.finditer(rest)):
        fields = _fields_from(rest, start)
        if fields is not None:
            return Record(head["level"], rest[:start], fields)
    return Record(head["level"], rest)


def _fields_from(text: str, at: int) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    while at < len(text):
        key = _FIELD.match(text, at)
        if key is None:
            return None
        try:
            value, at = _DECODER.raw_decode(text, key.end())
        except json.JSONDecodeError:
            return None
        fields[key["key"]] = value
    return fields


def records(log: str) -> Iterator[Record]:
    """Every record of a service's log, JSON or text; lines of neither kind (tracebacks) are skipped."""
    for line in log.splitlines():
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            level, message = str(doc.pop("level", "")), str(doc.pop("msg", ""))
            for key in ("ts", "service", "logger", "exc"):
                doc.pop(key, None)
            yield Record(level, message, doc)
        elif (record := _text_record(line)) is not None:
            yield record


def matching(log: str, message: str, **fields: Any) -> list[Record]:
    """The records whose message is `message` and whose fields include every one of `fields`."""
    return [
        r
        for r in records(log)
        if r.message == message and all(k in r.fields and r.fields[k] == v for k, v in fields.items())
    ]
