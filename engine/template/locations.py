"""Where each JSON path is written in a template file (JSON with comments): line and column,
so that findings point at the line (`template.json:14:9: error: ...`, SARIF regions).

Paths are spelled as findings spell them (`properties.customize[0].scriptUri`,
`tags["a b"]`); an object member is located at its key, an array item at its value. A
path that is not in the file (a missing field) is located at its nearest ancestor.
"""

from __future__ import annotations

import bisect
import re

from engine.errors import key_path
from engine.template.jsonc import BLANK, STRING

Position = tuple[int, int]  # 1-based line and column
MAX_DEPTH = 200  # deeper than any template: a nesting bomb is located no further


ESCAPE = re.compile(r"\\(.)", re.DOTALL)
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
SCALAR = re.compile(r"[^,}\] \t\r\n/]*")


class _Scanner:
    """One pass over the text by regular expressions: the cursor is an index, and a line and
    column are worked out only for what is recorded (from the offsets of the newlines)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.found: dict[str, Position] = {}

    def here(self) -> Position:
        line = bisect.bisect_left(self.newlines, self.i)
        return line + 1, self.i - (self.newlines[line - 1] if line else -1)

    def blank(self) -> None:
        """Skip whitespace and comments."""
        self.i = BLANK.match(self.text, self.i).end()  # type: ignore[union-attr]  # matches empty text too

    def string(self) -> str:
        """A string at the cursor (its quotes included); its value."""
        found = STRING.match(self.text, self.i)
        assert found is not None  # the cursor is at a quote
        self.i = found.end()
        return ESCAPE.sub(lambda m: ESCAPES.get(m[1], m[1]), found[1])

    def value(self, path: str, depth: int = 0) -> None:
        self.blank()
        text = self.text
        if self.i >= len(text) or depth > MAX_DEPTH:
            self.i = len(text)
            return
        char = text[self.i]
        if char == "{":
            self.i += 1
            while True:
                self.blank()
                if self.i >= len(text) or text[self.i] == "}":
                    self.i += 1
                    return
                if text[self.i] == ",":
                    self.i += 1
                    continue
                if text[self.i] != '"':
                    return  # not JSON: the loader says why
                at = self.here()
                key = self.string()
                member = key_path(path, key)
                self.found.setdefault(member, at)
                self.blank()
                if self.i < len(text) and text[self.i] == ":":
                    self.i += 1
                self.value(member, depth + 1)
        elif char == "[":
            self.i += 1
            index = 0
            while True:
                self.blank()
                if self.i >= len(text) or text[self.i] == "]":
                    self.i += 1
                    return
                if text[self.i] == ",":
                    self.i += 1
                    continue
                item = f"{path}[{index}]"
                self.found.setdefault(item, self.here())
                self.value(item, depth + 1)
                index += 1
        elif char == '"':
            self.string()
        else:
            self.i = max(SCALAR.match(text, self.i).end(), self.i + 1)  # type: ignore[union-attr]


def locate(text: str) -> dict[str, Position]:
    """Every JSON path of the document in `text`, with the line and column it starts at."""
    scanner = _Scanner(text)
    scanner.found[""] = (1, 1)
    scanner.value("")
    return scanner.found


def position(found: dict[str, Position], path: str) -> Position:
    """Where `path` is written, else its nearest written ancestor (1, 1 at worst)."""
    while path:
        if path in found:
            return found[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return found.get("", (1, 1))
