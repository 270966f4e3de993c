"""Where each JSON path is written in a template file (JSON with comments): line and column,
so that findings point at the line (`template.json:14:9: error: ...`, SARIF regions).

Paths are spelled as findings spell them (`properties.customize[0].scriptUri`,
`tags["a b"]`); an object member is located at its key, an array item at its value. A
path that is not in the file (a missing field) is located at its nearest ancestor.
"""

from __future__ import annotations

from engine.errors import key_path

Position = tuple[int, int]  # 1-based line and column
MAX_DEPTH = 200  # deeper than any template: a nesting bomb is located no further


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.line = 1
        self.col = 1
        self.found: dict[str, Position] = {}

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.i < len(self.text) and self.text[self.i] == "\n":
                self.line, self.col = self.line + 1, 1
            else:
                self.col += 1
            self.i += 1

    def blank(self) -> None:
        """Skip whitespace and comments."""
        text = self.text
        while self.i < len(text):
            if text[self.i] in " \t\r\n\ufeff":
                self.advance()
            elif text.startswith("//", self.i):
                while self.i < len(text) and text[self.i] != "\n":
                    self.advance()
            elif text.startswith("/*", self.i):
                end = text.find("*/", self.i + 2)
                self.advance((len(text) if end < 0 else end + 2) - self.i)
            else:
                return

    def string(self) -> str:
        """A string at the cursor (its quotes included); its value."""
        out: list[str] = []
        self.advance()  # the opening quote
        while self.i < len(self.text) and self.text[self.i] != '"':
            if self.text[self.i] == "\\" and self.i + 1 < len(self.text):
                escaped = self.text[self.i + 1]
                out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/"}.get(escaped, escaped))
                self.advance(2)
            else:
                out.append(self.text[self.i])
                self.advance()
        self.advance()  # the closing quote
        return "".join(out)

    def value(self, path: str, depth: int = 0) -> None:
        self.blank()
        if self.i >= len(self.text) or depth > MAX_DEPTH:
            self.i = len(self.text)
            return
        char = self.text[self.i]
        if char == "{":
            self.advance()
            while True:
                self.blank()
                if self.i >= len(self.text) or self.text[self.i] == "}":
                    self.advance()
                    return
                if self.text[self.i] == ",":
                    self.advance()
                    continue
                if self.text[self.i] != '"':
                    return  # not JSON: the loader says why
                at = (self.line, self.col)
                key = self.string()
                member = key_path(path, key)
                self.found.setdefault(member, at)
                self.blank()
                if self.i < len(self.text) and self.text[self.i] == ":":
                    self.advance()
                self.value(member, depth + 1)
        elif char == "[":
            self.advance()
            index = 0
            while True:
                self.blank()
                if self.i >= len(self.text) or self.text[self.i] == "]":
                    self.advance()
                    return
                if self.text[self.i] == ",":
                    self.advance()
                    continue
                item = f"{path}[{index}]"
                self.found.setdefault(item, (self.line, self.col))
                self.value(item, depth + 1)
                index += 1
        elif char == '"':
            self.string()
        else:
            while self.i < len(self.text) and self.text[self.i] not in ",}] \t\r\n/":
                self.advance()


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
