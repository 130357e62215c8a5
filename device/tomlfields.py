"""Typed configuration files in TOML, with errors that name the file, line and field.

Scenario files and policy files are both read through here. A table is read into a dataclass:
the keys are the field names and the expected types come from the field annotations (``bool``,
``int``, ``float``, ``str``, an ``Enum``, a ``Literal``, ``tuple[T, ...]``, an aware
``datetime``, ``T | None`` for optional), with ``Annotated[..., Bounds(lo, hi)]`` for lengths and
ranges. So a new config field or timeline parameter is readable the moment it is declared.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
import os
import re
import tomllib
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from enum import Enum
from pathlib import Path as FilePath
from typing import (
    Annotated,
    Any,
    Final,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from device.errors import ConfigError
from device.tomllines import Path, key_lines, line_of

T = TypeVar("T")

_TIME: Final = re.compile(r"(\d{1,3}):([0-5]\d):([0-5]\d)(?:\.(\d{1,6}))?")
_TIME_FORMAT: Final = '"HH:MM:SS[.ffffff]" or a number of seconds'
# How the config classes word a failed check: "policy.pre_event_s must be ..., got 300.0".
_TOML_ERROR: Final = re.compile(r"(.*) \(at line (\d+), column (\d+)\)", re.DOTALL)
_CONFIG_MESSAGE: Final = re.compile(r"\w+\.(\w+):? (.*?)(, got .*)?", re.DOTALL)


class ConfigFileError(ConfigError):
    """A configuration file (scenario, policy) is wrong: ``FILE:LINE: FIELD: what was expected``.

    ``line`` is None only when the file could not be read at all; ``path`` is empty for syntax
    errors, which have no field.
    """

    def __init__(self, source: str, line: int | None, path: str, reason: str) -> None:
        self.source = source
        self.line = line
        self.path = path
        self.reason = reason
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {path}: {reason}" if path else f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[ConfigFileError], tuple[str, int | None, str, str]]:
        return (type(self), (self.source, self.line, self.path, self.reason))


class Problem(Exception):  # noqa: N818 - internal: becomes a ConfigFileError once placed
    """A value is wrong; ``subpath`` locates it inside the value (an array index)."""

    def __init__(self, reason: str, subpath: Path = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.subpath = subpath


@dataclass(frozen=True, slots=True)
class Bounds:
    """``Annotated`` metadata: text length, array length or number range, inclusive."""

    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class TimeSyntax:
    """``Annotated`` metadata: a ``float`` of seconds that may be written ``"HH:MM:SS"`` too."""


Label = Annotated[str, Bounds(1, 200)]
"""Free text chosen by a person: a reason, a note, a category (as ``protocol.vocabulary.Label``)."""


def format_path(path: Path) -> str:
    """``("timeline", 3, "do")`` -> ``timeline[3].do``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def format_time(seconds: float) -> str:
    """``36000.5`` -> ``10:00:00.5``: the file's own time notation."""
    whole = math.floor(seconds)
    hours, rest = divmod(whole, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    fraction = f"{seconds - whole:.6f}"[2:].rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def describe(value: object) -> str:
    """A value as the user wrote it, for "got ..." in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value)
        return "text " + (shown if len(shown) <= 60 else shown[:56] + '..."')
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return f"the date-time {value.isoformat()}"
    if isinstance(value, dt.date | dt.time):  # TOML's local date-time, date and time
        kind = "date-time" if isinstance(value, dt.datetime) else type(value).__name__
        return f"a local {kind} {value.isoformat()} (no UTC offset)"
    names: dict[type, str] = {list: "an array", tuple: "an array", dict: "a table"}
    return names.get(type(value), repr(value))


def parse_time(value: object) -> float:
    """A time or duration: ``"HH:MM:SS[.ffffff]"``, a TOML local time, or seconds (>= 0)."""
    if isinstance(value, str):
        match = _TIME.fullmatch(value)
        if match is None:
            raise Problem(f"must be a time {_TIME_FORMAT}, got {describe(value)}")
        hours, minutes, seconds, fraction = match.groups()
        whole = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
        return float(f"{whole}.{fraction or 0}")  # exact decimal, one rounding
    if isinstance(value, dt.time) and value.tzinfo is None:
        whole = value.hour * 3600 + value.minute * 60 + value.second
        return float(f"{whole}.{value.microsecond:06d}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not _is_number(value) or value < 0:
            raise Problem(f"must be a time {_TIME_FORMAT} (>= 0), got {describe(value)}")
        return float(value)
    raise Problem(f"must be a time {_TIME_FORMAT}, got {describe(value)}")


# -- typed values from annotations ----------------------------------------------------------------


def _split(hint: Any) -> tuple[Any, Bounds | None]:
    """The type under ``Annotated`` and its ``Bounds``, if any."""
    if get_origin(hint) is Annotated:
        base, *extras = get_args(hint)
        return base, next((e for e in extras if isinstance(e, Bounds)), None)
    return hint, None


def _time_syntax(hint: Any) -> bool:
    return get_origin(hint) is Annotated and any(
        isinstance(extra, TimeSyntax) for extra in get_args(hint)[1:]
    )


def _optional(hint: Any) -> Any:
    """``T`` for ``T | None``; ``hint`` otherwise."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond a float's range
        return False


_SCALARS: Final[dict[Any, tuple[str, Callable[[object], bool]]]] = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", _is_number),
    str: ("text", lambda v: isinstance(v, str)),
    dt.datetime: (
        "a date-time with a UTC offset, such as 2026-11-29T06:00:00Z (not quoted)",
        lambda v: isinstance(v, dt.datetime) and v.tzinfo is not None,
    ),
}
"""The scalar types a config field may have: how to describe them, and their type check."""


def _scalar(base: Any) -> tuple[str, Callable[[object], bool]]:
    if base not in _SCALARS:
        raise TypeError(f"no config file syntax for {base!r}")
    return _SCALARS[base]


def _choices(base: Any) -> tuple[object, ...] | None:
    """The allowed values of an ``Enum`` or ``Literal``; None for other types."""
    if isinstance(base, type) and issubclass(base, Enum):
        return tuple(member.value for member in base)
    if get_origin(base) is Literal:
        return get_args(base)
    return None


def expected(hint: Any) -> str:
    """What a value of type ``hint`` looks like in a file, for "must be ..." in messages."""
    base, bounds = _split(_optional(hint))
    if _time_syntax(_optional(hint)) and bounds:
        return f"a time {_TIME_FORMAT} from {format_time(bounds.lo)} to {format_time(bounds.hi)}"
    choices = _choices(base)
    if choices is not None:
        return "one of " + ", ".join(json.dumps(choice) for choice in choices)
    if get_origin(base) is tuple:
        return f"an array{_count(bounds)} of {expected(get_args(base)[0])}"
    text = _scalar(base)[0]
    if bounds and base is str:
        return f"{text} of {bounds.lo:g} to {bounds.hi:g} characters"
    return f"{text} from {bounds.lo:g} to {bounds.hi:g}" if bounds else text


def _count(bounds: Bounds | None) -> str:
    """`` of 2``, `` of 3 to 1000``, `` of at most 20`` items, for an array's description."""
    if bounds is None:
        return ""
    if bounds.lo == bounds.hi:
        return f" of {bounds.lo:g}"
    if bounds.lo > 0:
        return f" of {bounds.lo:g} to {bounds.hi:g}"
    return f" of at most {bounds.hi:g}"


def convert(hint: Any, value: object) -> Any:
    """``value`` as parsed by tomllib, checked against ``hint`` and normalised; else ``Problem``."""
    base, bounds = _split(_optional(hint))
    if _time_syntax(_optional(hint)) and not isinstance(value, bool):
        value = parse_time(value)
    if not _matches(base, value):
        raise Problem(f"must be {expected(hint)}, got {describe(value)}")
    if get_origin(base) is tuple:
        assert isinstance(value, list | tuple)
        item = get_args(base)[0]
        converted = tuple(_convert_item(item, index, v) for index, v in enumerate(value))
        if bounds and not bounds.lo <= len(converted) <= bounds.hi:
            raise Problem(f"must be {expected(hint)}, got {len(converted)} items")
        return converted
    if isinstance(base, type) and issubclass(base, Enum):
        return base(value)
    if base is float:
        assert isinstance(value, int | float)
        value = float(value)
    if bounds and not _within(bounds, len(value) if isinstance(value, str) else value):
        raise Problem(f"must be {expected(hint)}, got {describe(value)}")
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return value


def _within(bounds: Bounds, size: object) -> bool:
    return isinstance(size, int | float) and bounds.lo <= size <= bounds.hi


def _convert_item(hint: Any, index: int, value: object) -> Any:
    try:
        return convert(hint, value)
    except Problem as problem:
        raise Problem(problem.reason, (index, *problem.subpath)) from None


def _matches(base: Any, value: object) -> bool:
    """Whether ``value`` has the right type for ``base`` (bounds are checked later)."""
    choices = _choices(base)
    if choices is not None:
        return isinstance(value, str) and value in choices
    if get_origin(base) is tuple:
        return isinstance(value, list | tuple)
    return _scalar(base)[1](value)


# -- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file and where its keys are: makes errors that point at a line."""

    source: str
    lines: dict[Path, int]

    def line(self, path: Path) -> int:
        """The line ``path`` (or its deepest written parent) is on."""
        return line_of(self.lines, path)

    def error(self, path: Path, reason: str) -> ConfigFileError:
        """A ``ConfigFileError`` about ``path``, on the line it (or its deepest parent) is on."""
        return ConfigFileError(self.source, self.line(path), format_path(path), reason)

    def table(self, path: Path, value: object) -> dict[str, Any]:
        """``value`` if it is a table, else an error."""
        if not isinstance(value, dict):
            raise self.error(path, f"must be a table, got {describe(value)}")
        return value

    def check_keys(
        self, path: Path, table: Mapping[str, object], allowed: Iterable[str], what: str = "key"
    ) -> None:
        """Refuse any key of ``table`` not in ``allowed``: typos must not be silently ignored."""
        names = list(allowed)
        for key in table:
            if key not in names:
                raise self.error((*path, key), unknown(key, names, what))

    def convert(self, path: Path, hint: Any, value: object) -> Any:
        """``convert`` with the problem placed at ``path``."""
        try:
            return convert(hint, value)
        except Problem as problem:
            raise self.error((*path, *problem.subpath), problem.reason) from None

    def time(self, path: Path, value: object) -> float:
        """``parse_time`` with the problem placed at ``path``."""
        try:
            return parse_time(value)
        except Problem as problem:
            raise self.error(path, problem.reason) from None


def unknown(name: str, choices: list[str], what: str) -> str:
    """``unknown key 'x'; expected one of ...`` with a suggestion for a near miss."""
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; expected one of {', '.join(choices)}"


def build(
    doc: Document,
    path: Path,
    cls: type[T],
    given: Mapping[str, object],
    *,
    keys: Mapping[str, str] | None = None,
    make: Callable[..., T] | None = None,
    **fixed: object,
) -> T:
    """Read the table ``given`` at ``path`` into ``cls``, every key checked against its annotation.

    ``keys`` maps the file's key names to field names (default: the same names); ``make`` builds
    the object (default ``cls``, e.g. a ``dataclasses.replace`` of a preset); ``fixed`` are field
    values the file does not set. A ``ConfigError`` from the class's own checks is placed on the
    line of the key it names.
    """
    keys = keys if keys is not None else {f.name: f.name for f in fields(cls)}  # type: ignore[arg-type]
    doc.check_keys(path, given, keys)
    hints = get_type_hints(cls, include_extras=True)
    kwargs = dict(fixed)
    for key, value in given.items():
        kwargs[keys[key]] = doc.convert((*path, key), hints[keys[key]], value)
    if make is None:
        for key, name in keys.items():
            if name not in kwargs and _required(cls, name):
                raise doc.error((*path, key), f"missing; expected {expected(hints[name])}")
    try:
        return (make or cls)(**kwargs)
    except ConfigError as error:
        raise _placed(doc, path, error, given, keys) from error


def check_fields(obj: object, owner: str) -> None:
    """Check a dataclass made in code against its annotations, as a file's values are checked.

    For ``__post_init__``: raises ``ConfigError("owner.field must be ...")``.
    """
    hints = get_type_hints(type(obj), include_extras=True)
    for field in fields(obj):  # type: ignore[arg-type]
        hint, value = hints[field.name], getattr(obj, field.name)
        if value is None and _optional(hint) is not hint:
            continue
        try:
            convert(hint, value)
        except Problem as problem:
            raise ConfigError(f"{owner}.{field.name} {problem.reason}") from None


def _required(cls: type, name: str) -> bool:
    field = next(f for f in fields(cls) if f.name == name)
    return field.default is MISSING and field.default_factory is MISSING


def _placed(
    doc: Document,
    path: Path,
    error: ConfigError,
    given: Mapping[str, object],
    keys: Mapping[str, str],
) -> ConfigFileError:
    """A config class's error moved onto the key it is about, showing the value as written."""
    match = _CONFIG_MESSAGE.fullmatch(str(error))
    by_field = {name: key for key, name in keys.items()}
    if match is None or match[1] not in by_field:
        return doc.error(path, str(error))
    key = by_field[match[1]]
    if key in given:
        # The class's own message may not be about the value's form ("names ['x'], which
        # covered also lists"): only a "got ..." message gets the value as written.
        got = f", got {describe(given[key])}" if match[3] else ""
        return doc.error((*path, key), f"{match[2]}{got}")
    return doc.error((*path, key), f"{match[2]}{match[3] or ''} (its default)")


# -- files ----------------------------------------------------------------------------------------


def read_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(text, source)`` of the UTF-8 file at ``path``; ``source`` names it as given."""
    source = os.fspath(path)
    try:
        raw = FilePath(source).read_bytes()
    except OSError as error:
        raise ConfigFileError(
            source, None, "", f"cannot read: {error.strerror or error}"
        ) from error
    try:
        return raw.decode("utf-8"), source
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ConfigFileError(source, line, "", "not UTF-8 text") from error


def parse_document(text: str, source: str) -> tuple[dict[str, Any], Document]:
    """Parse TOML ``text``; its data, and the ``Document`` that places errors on its lines."""
    text = text.removeprefix("\ufeff")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = _TOML_ERROR.fullmatch(message)
        if match:
            reason, line, column = match[1], int(match[2]), match[3]
            reason = f"{reason} (column {column})"
        else:
            reason = message.replace(" (at end of document)", "")
            line = max(1, len(text.splitlines()))
        raise ConfigFileError(source, line, "", f"invalid TOML: {reason}") from error
    except RecursionError:
        raise ConfigFileError(source, 1, "", "invalid TOML: nested too deeply") from None
    try:
        return data, Document(source, key_lines(text))
    except RecursionError:
        raise ConfigFileError(source, 1, "", "invalid TOML: nested too deeply") from None
