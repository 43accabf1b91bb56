"""Settings, each declared once and resolved the one way: flag, else environment, else default.

A `Setting` names everything about one knob in one place: its command-line flag, its
`LIVECALC_*` variable, its default, how the variable's text is parsed and what values are valid,
and the help text the flag shows. `Setting.resolve` is the only code that turns the three
sources into a value, so every service reads its configuration with the same rules:

- a flag counts when it was given: not None, not an empty string, not a `store_true` left False
  (a flag of 0 counts: ``--metrics-port 0`` picks a free port);
- an environment variable counts when it is set and not empty;
- otherwise the default, which may be None when the caller derives the value from others
  (an engine's piece size defaults to 4 · its threads);
- text that does not parse, and a value its check refuses, raise `InvalidArgument` naming the
  variable or setting, so a typo in a deployment fails at start with a clear message.

Resolvers run only from a `main()` (or `build()`) with the environment passed in; everything
below receives frozen config objects.

    THREADS = Setting("LIVECALC_ENGINE_THREADS", int, None, flag="--threads", help="worker threads")
    THREADS.add_argument(parser)            # --threads, type=int, "… (env LIVECALC_ENGINE_THREADS)"
    threads = THREADS.read(args, env)       # flag, else environment, else default

`data_dir` is the data directory every service and command derives its default paths from.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from services.common.errors import InvalidArgument

T = TypeVar("T")

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def parse_bool(text: str) -> bool:
    """1/true/yes or 0/false/no, any case; anything else is a ValueError."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(text)


#: What each parser accepts, for the error a bad variable raises.
_KINDS: Mapping[object, str] = {int: "an integer", float: "a number", parse_bool: "1 or 0"}


def given(value: object) -> bool:
    """A flag's value counts unless argparse left it unset (None, "", or a store_true's False)."""
    return value is not None and value != "" and value is not False


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: its variable, parser, default, flag, validity rule and help, declared once."""

    #: The environment variable, `LIVECALC_*`.
    env: str
    #: Turns the variable's text into a value; raises ValueError on bad text.
    parse: Callable[[str], T]
    #: The value when neither flag nor variable is given; None lets the caller derive one.
    default: T
    #: The command-line flag (``--threads``); None for a setting only the environment sets.
    flag: str | None = None
    #: The flag's help, without the ``(env …; default …)`` suffix `help_text` appends.
    help: str = ""
    #: The default as the help shows it; None shows `default` itself (floats as ``%g``).
    shown: str | None = None
    #: A value is valid when `check` holds; `rule` says what it demands (``≥ 1``).
    check: Callable[[T], bool] | None = None
    rule: str = ""
    #: The setting's name in a validity error (``chunk attempts``); the variable's by default.
    what: str | None = None

    @property
    def dest(self) -> str | None:
        """The attribute argparse stores the flag under."""
        return None if self.flag is None else self.flag.lstrip("-").replace("-", "_")

    @property
    def help_text(self) -> str:
        """The flag's help: what it is, its variable, and its default when it has one to show."""
        shown = self.shown
        if shown is None and self.default is not None and self.default is not False:
            shown = format(self.default, "g") if isinstance(self.default, float) else str(self.default)
        tail = f"; default {shown}" if shown else ""
        variable = f"{self.env}=1" if self.parse is parse_bool else self.env  # a switch: how to turn it on
        return f"{self.help} (env {variable}{tail})"

    def add_argument(self, parser: argparse._ActionsContainer, **kwargs: Any) -> None:
        """Declare the flag on `parser` (or an argument group): parsed by `parse` (a bool: ``store_true``),
        unset by default."""
        assert self.flag is not None, f"{self.env} has no flag"
        if self.parse is parse_bool:
            kwargs.setdefault("action", "store_true")
        else:  # the flag's text is parsed as the variable's is, so `resolve` sees typed values only
            kwargs.setdefault("type", self.parse)
        parser.add_argument(self.flag, help=self.help_text, **kwargs)

    def resolve(self, env: Mapping[str, str], flag: T | None = None) -> T:
        """The flag's value when given, else the variable's parsed text, else the default; checked."""
        if given(flag):
            value: T = flag  # type: ignore[assignment]  # given() excludes None
        else:
            text = env.get(self.env, "")
            if text == "":
                return self.default
            try:
                value = self.parse(text)
            except ValueError:
                kind = _KINDS.get(self.parse, "valid")
                raise InvalidArgument(f"environment variable {self.env} must be {kind}, got {text!r}") from None
        if self.check is not None and not self.check(value):
            raise InvalidArgument(f"{self.what or self.env} must be {self.rule}, got {value}")
        return value

    def read(self, args: argparse.Namespace, env: Mapping[str, str]) -> T:
        """`resolve` with the flag argparse parsed into `args` (absent attributes count as not given)."""
        return self.resolve(env, getattr(args, self.dest, None) if self.dest else None)


#: Where datasets, packages, jobs, the audit log and the dev secret live by default.
DATA_DIR: Setting[Path] = Setting("LIVECALC_DATA_DIR", Path, Path(".livecalc"), flag="--data-dir")


def data_dir(env: Mapping[str, str], flag: str | None = None) -> Path:
    """The data dir: the flag, else LIVECALC_DATA_DIR, else ./.livecalc (relative, as given)."""
    return DATA_DIR.resolve(env, Path(flag) if flag else None)
