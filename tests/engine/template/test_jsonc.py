"""JSON with comments: one lexer reads templates and locates their paths."""

from __future__ import annotations

import json

import pytest

from engine.template.jsonc import strip_comments
from engine.template.locations import locate

TEXT = """{ // a comment with "quotes"
  "a": "// not a comment", /* a block
  comment */ "b": "a \\" quote, then /* no comment */",
  "c": [1, /**/ 2]
}"""


def test_comments_become_spaces_and_strings_stay_as_written() -> None:
    stripped = strip_comments(TEXT)
    assert json.loads(stripped) == {"a": "// not a comment", "b": 'a " quote, then /* no comment */', "c": [1, 2]}
    assert [len(line) for line in stripped.splitlines()] == [len(line) for line in TEXT.splitlines()]


def test_where_a_path_is_written_is_where_it_is_after_the_comments_go() -> None:
    found, stripped = locate(TEXT), strip_comments(TEXT).splitlines()
    for path, key in (("a", '"a"'), ("b", '"b"'), ("c", '"c"')):
        line, column = found[path]
        assert stripped[line - 1][column - 1 :].startswith(key)


@pytest.mark.parametrize("text", ["{} /* open", "/*/", "{} /*"])
def test_an_unclosed_block_comment_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not closed"):
        strip_comments(text)


def test_a_lone_slash_is_left_for_the_json_reader_to_refuse() -> None:
    assert strip_comments('{"a": 1} /') == '{"a": 1} /'
