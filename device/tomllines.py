"""Where each key of a TOML document is: line numbers for error messages.

``tomllib`` says where a syntax error is but not where a key or table was written. This scanner
walks a document that ``tomllib`` has already accepted and records the line of every table
header, array-of-tables entry and key, under the same path the parsed data has: ``("policy",
"pre_event_s")``, ``("timeline", 3)``, ``("timeline", 3, "do")``, ``("media", "x", 0)`` for the
first element of an inline array. It only finds positions; values are never interpreted.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from typing import Final

Path = tuple[str | int, ...]
"""A position in the parsed document: table names, keys and array indices."""

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_BLANK: Final = " \t"
_SCALAR_END: Final = ",]}\n\r#"


def key_lines(text: str) -> dict[Path, int]:
    """Map every path written in ``text`` (valid TOML) to the 1-based line it first appears on."""
    return _Scanner(text).run()


def line_of(lines: dict[Path, int], path: Path) -> int:
    """The line of ``path``, or of its deepest written parent; 1 when nothing of it is written."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1


class _Scanner:
    """A recursive-descent walk over valid TOML that notes positions instead of building values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[Path, int] = {}
        self._newlines = [i for i, char in enumerate(text) if char == "\n"]
        self._last_index: dict[Path, int] = {}  # array-of-tables path -> index of its last entry

    def run(self) -> dict[Path, int]:
        table: Path = ()
        while True:
            self._skip_space(newlines=True)
            if self._at_end():
                return self.lines
            if self.text.startswith("[[", self.pos):
                table = self._array_table_header()
            elif self.text[self.pos] == "[":
                table = self._table_header()
            else:
                self._key_value(table)

    # -- structure ------------------------------------------------------------------------------

    def _table_header(self) -> Path:
        line = self._line()
        self.pos += 1
        path = self._resolve(self._key())
        self._skip_space()
        self.pos += 1  # "]"
        self._note(path, line)
        return path

    def _array_table_header(self) -> Path:
        line = self._line()
        self.pos += 2
        keys = self._key()
        self._skip_space()
        self.pos += 2  # "]]"
        array = (*self._resolve(keys[:-1]), keys[-1])
        index = self._last_index.get(array, -1) + 1
        self._last_index[array] = index
        self._note((*array, index), line)
        return (*array, index)

    def _resolve(self, keys: Path) -> Path:
        """A header's path, with the current entry's index after every array of tables in it."""
        path: Path = ()
        for key in keys:
            path = (*path, key)
            if path in self._last_index:
                path = (*path, self._last_index[path])
        return path

    def _key_value(self, table: Path) -> None:
        line = self._line()
        path = (*table, *self._key())
        self._note(path, line)
        self._skip_space()
        self.pos += 1  # "="
        self._skip_space()
        self._value(path)

    def _value(self, path: Path) -> None:
        char = self.text[self.pos]
        if char == "[":
            self._array(path)
        elif char == "{":
            self._inline_table(path)
        elif char in "\"'":
            self._string()
        else:
            while not self._at_end() and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1

    def _array(self, path: Path) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_space(newlines=True)
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self.lines.setdefault((*path, index), self._line())
            self._value((*path, index))
            self._skip_space(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1
                index += 1

    def _inline_table(self, path: Path) -> None:
        self.pos += 1
        while True:
            self._skip_space(newlines=True)
            char = self.text[self.pos]
            self.pos += 1
            if char == "}":
                return
            if char != ",":
                self.pos -= 1
                self._key_value(path)

    # -- tokens ---------------------------------------------------------------------------------

    def _key(self) -> Path:
        """A dotted key; each part decoded exactly as tomllib decodes it."""
        parts: list[str | int] = []
        while True:
            self._skip_space()
            start = self.pos
            if self.text[self.pos] in "\"'":
                self._string()
                parts.append(tomllib.loads(f"k = {self.text[start : self.pos]}")["k"])
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                self.pos = match.end() if match else self.pos + 1
                parts.append(self.text[start : self.pos])
            self._skip_space()
            if self._at_end() or self.text[self.pos] != ".":
                return tuple(parts)
            self.pos += 1

    def _string(self) -> None:
        quote = self.text[self.pos]
        if self.text.startswith(quote * 3, self.pos):
            self.pos += 3
            self._until_closing(quote * 3, escapes=quote == '"')
            while self.pos < len(self.text) and self.text[self.pos] == quote:  # up to 2 more
                self.pos += 1
        else:
            self.pos += 1
            self._until_closing(quote, escapes=quote == '"')

    def _until_closing(self, delimiter: str, *, escapes: bool) -> None:
        while not self._at_end():
            if escapes and self.text[self.pos] == "\\":
                self.pos += 2
            elif self.text.startswith(delimiter, self.pos):
                self.pos += len(delimiter)
                return
            else:
                self.pos += 1

    def _skip_space(self, *, newlines: bool = False) -> None:
        while not self._at_end():
            char = self.text[self.pos]
            if char == "#":
                while not self._at_end() and self.text[self.pos] != "\n":
                    self.pos += 1
            elif char in _BLANK or (newlines and char in "\r\n"):
                self.pos += 1
            else:
                return

    # -- positions ------------------------------------------------------------------------------

    def _at_end(self) -> bool:
        return self.pos >= len(self.text)

    def _line(self) -> int:
        return bisect.bisect_left(self._newlines, self.pos) + 1

    def _note(self, path: Path, line: int) -> None:
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], line)
