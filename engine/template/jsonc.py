"""JSON with comments, as ARM takes it: one lexer, by regular expressions, for reading a
template (comments blanked out) and for locating its JSON paths (engine.template.locations).

Both walk the text once with the regular-expression engine, never a character at a time
in Python, so that a file as large as a template may be (4 MiB) is read in well under a
second."""

from __future__ import annotations

import re

# A string literal, its quotes included (the closing one may be missing at the end of the text).
STRING = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"?', re.DOTALL)
# Whitespace and comments between tokens.
BLANK = re.compile(r"(?:[ \t\r\n\ufeff]+|//[^\n]*|/\*.*?(?:\*/|\Z))*", re.DOTALL)
# What strip_comments looks at: strings (kept) and comments (blanked).
_LEXEME = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|//[^\n]*|/\*.*?(?:\*/|\Z)', re.DOTALL)
_NOT_NEWLINE = re.compile(r"[^\n]")


def strip_comments(text: str) -> str:
    """`text` with its `//` and `/* */` comments (outside strings) turned into spaces, so that
    lines and columns stay where they were; ValueError for a /* that is not closed."""

    def blank(found: re.Match[str]) -> str:
        lexeme = found.group()
        if lexeme.startswith('"'):
            return lexeme
        if lexeme.startswith("/*") and (len(lexeme) < 4 or not lexeme.endswith("*/")):
            raise ValueError("a /* comment is not closed")
        return _NOT_NEWLINE.sub(" ", lexeme)

    return _LEXEME.sub(blank, text)
