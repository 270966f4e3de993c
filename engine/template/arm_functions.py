"""ARM template functions that need nothing from Azure: string, array, object,
comparison, logical and numeric functions, computed as ARM documents them.

Each takes its evaluated arguments and returns a JSON value; a wrong argument raises
ArmError with the message ARM's own check would give in spirit. `guid` and
`uniqueString` give the very values Azure gives (UUID v5 in ARM's namespace; ARM's
64-bit Murmur hash in its base32 alphabet).
"""

from __future__ import annotations

import base64 as b64
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any


class ArmError(Exception):
    """A function called with arguments ARM would refuse."""


Function = Callable[..., Any]

# ARM's namespace for guid(): guid(a, b) is UUID v5 of "a-b" in it.
GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")
# ARM's own limits, and where it documents none, the template's: no value an expression
# makes may be larger than a template can be (4 MiB), so that no template text makes
# `validate` work or allocate without bound.
RANGE_MAX = 10000  # range(): "the count ... can't exceed 10000"
INT32_MAX = 2**31 - 1  # range(): startIndex + count
MAX_TEXT = 4 << 20  # characters in a string value
MAX_ITEMS = 1 << 20  # items in an array or object value
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
MASK32 = 0xFFFFFFFF


def text(value: Any) -> str:
    """A value as ARM turns it into text (concat, format, string)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _str(name: str, value: Any, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise ArmError(f"{name}() expects {what}, got {_kind(value)}")
    return value


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArmError(f"{name}() expects an integer, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "an object"
    )


def _count(name: str, args: tuple[Any, ...], low: int, high: int | None = None) -> None:
    if len(args) < low or (high is not None and len(args) > high):
        expected = str(low) if high == low else f"{low} or more" if high is None else f"{low} to {high}"
        raise ArmError(f"{name}() takes {expected} argument(s), got {len(args)}")


def _joined(name: str, args: tuple[Any, ...]) -> str:
    _count(name, args, 1)
    return "-".join(_str(name, a) for a in args)


# --- hashes ----------------------------------------------------------------------------


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & MASK32


def _fmix(h: int) -> int:
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & MASK32
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & MASK32
    return h ^ (h >> 16)


def murmur64(data: bytes) -> int:
    """ARM's 64-bit Murmur hash (two 32-bit lanes, seed 0), as uniqueString uses it."""
    c1, c2 = 0x239B961B, 0xAB0E9789
    h1 = h2 = 0
    end = len(data) - len(data) % 8
    for i in range(0, end, 8):
        k1 = int.from_bytes(data[i : i + 4], "little")
        k2 = int.from_bytes(data[i + 4 : i + 8], "little")
        h1 ^= (_rotl((k1 * c1) & MASK32, 15) * c2) & MASK32
        h1 = ((_rotl(h1, 19) + h2) * 5 + 0x561CCD1B) & MASK32
        h2 ^= (_rotl((k2 * c2) & MASK32, 17) * c1) & MASK32
        h2 = ((_rotl(h2, 13) + h1) * 5 + 0x0BCAA747) & MASK32
    tail = data[end:]
    if tail:
        h1 ^= (_rotl((int.from_bytes(tail[:4], "little") * c1) & MASK32, 15) * c2) & MASK32
        if len(tail) > 4:
            h2 ^= (_rotl((int.from_bytes(tail[4:], "little") * c2) & MASK32, 17) * c1) & MASK32
    h1 ^= len(data)
    h2 ^= len(data)
    h1 = (h1 + h2) & MASK32
    h2 = (h2 + h1) & MASK32
    h1, h2 = _fmix(h1), _fmix(h2)
    h1 = (h1 + h2) & MASK32
    h2 = (h2 + h1) & MASK32
    return (h2 << 32) | h1


def unique_string(*args: Any) -> str:
    value = murmur64(_joined("uniqueString", args).encode())
    # 13 characters of 5 bits from the top; the last one has the low 4 bits and a 0.
    return "".join(BASE32[((value << 5 * i) >> 59) & 31] for i in range(13))


def guid(*args: Any) -> str:
    return str(uuid.uuid5(GUID_NAMESPACE, _joined("guid", args)))


# --- strings -----------------------------------------------------------------------------


def concat(*args: Any) -> Any:
    if args and all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    return "".join(text(a) for a in args)


FORMAT_ITEM = re.compile(r" *(\d+) *(?:, *(-?\d+) *)?(?::(.*))?", re.DOTALL)


def format_(template: Any, *args: Any) -> str:
    """.NET composite formatting: {index[,alignment][:format]}, with {{ and }} for braces."""
    out, i, source = [], 0, _str("format", template)
    while i < len(source):
        brace = min((at for at in (source.find("{", i), source.find("}", i)) if at >= 0), default=len(source))
        out.append(source[i:brace])
        if brace == len(source):
            break
        if source.startswith(("{{", "}}"), brace):
            out.append(source[brace])
            i = brace + 2
            continue
        if source[brace] == "}":
            raise ArmError("format(): a } with no { before it (write }} for a literal })")
        end = source.find("}", brace)
        if end < 0:
            raise ArmError("format(): a { with no } after it (write {{ for a literal {)")
        item = FORMAT_ITEM.fullmatch(source[brace + 1 : end])
        if item is None:
            raise ArmError(f"format(): {source[brace : end + 1]} is not a format item ({{index[,alignment][:format]}})")
        index = int(item[1])
        if index >= len(args):
            raise ArmError(f"format(): {{{index}}} names no argument ({len(args)} given)")
        value = _format_one(args[index], item[3] or "")
        if item[2]:
            width = int(item[2])
            if abs(width) > MAX_TEXT:
                raise ArmError(f"format(): an alignment of {width} is past what a template can hold")
            value = value.rjust(width) if width > 0 else value.ljust(-width)
        out.append(value)
        i = end + 1
    return "".join(out)


def _format_one(value: Any, spec: str) -> str:
    """One value under a .NET standard numeric format (D, X, N, F with a precision); other
    values and formats as ARM's string() gives them."""
    if spec and isinstance(value, int | float) and not isinstance(value, bool):
        kind, digits = spec[0].upper(), spec[1:]
        places = int(digits) if digits.isdigit() and len(digits) <= 2 else None
        if digits and places is None:
            return text(value)  # not a standard format: .NET would read it as a custom one
        if kind == "N":
            return f"{value:,.{2 if places is None else places}f}"
        if kind == "F":
            return f"{value:.{2 if places is None else places}f}"
        if kind == "D" and isinstance(value, int):
            sign = "-" if value < 0 else ""
            return sign + str(abs(value)).zfill(places or 0)
        if kind == "X" and isinstance(value, int):
            if value < 0:  # two's complement, as .NET shows a negative Int32 (Int64 beyond its range)
                value &= 0xFFFFFFFF if value >= -(2**31) else 0xFFFFFFFFFFFFFFFF
            formatted = f"{value:0{places or 0}x}"
            return formatted.upper() if spec[0] == "X" else formatted
    return text(value)


def substring(value: Any, start: Any, length: Any = None) -> str:
    string, begin = _str("substring", value), _int("substring", start)
    if begin < 0 or begin > len(string):
        raise ArmError(f"substring(): the start index {begin} is outside the string (length {len(string)})")
    if length is None:
        return string[begin:]
    count = _int("substring", length)
    if count < 0 or begin + count > len(string):
        raise ArmError(f"substring(): {begin}+{count} runs past the string (length {len(string)})")
    return string[begin : begin + count]


def replace(value: Any, old: Any, new: Any) -> str:
    old_text = _str("replace", old)
    if not old_text:
        raise ArmError("replace(): the string to replace is empty")
    return _str("replace", value).replace(old_text, _str("replace", new))


def split(value: Any, delimiter: Any) -> list[str]:
    string = _str("split", value)
    delimiters = delimiter if isinstance(delimiter, list) else [_str("split", delimiter)]
    parts = [string]
    for each in delimiters:
        parts = [piece for part in parts for piece in part.split(_str("split", each))]
    return parts


def index_of(value: Any, find: Any) -> int:
    if isinstance(value, list):
        return next((i for i, item in enumerate(value) if item == find), -1)
    return _str("indexOf", value).lower().find(_str("indexOf", find).lower())


def last_index_of(value: Any, find: Any) -> int:
    if isinstance(value, list):
        return next((i for i in range(len(value) - 1, -1, -1) if value[i] == find), -1)
    return _str("lastIndexOf", value).lower().rfind(_str("lastIndexOf", find).lower())


def pad_left(value: Any, total: Any, pad: Any = " ") -> str:
    string = text(value) if isinstance(value, int) else _str("padLeft", value)
    char = _str("padLeft", pad)
    if len(char) != 1:
        raise ArmError("padLeft(): the padding must be one character")
    width = _int("padLeft", total)
    if width > MAX_TEXT:
        raise ArmError(f"padLeft(): a total length of {width} is past what a template can hold ({MAX_TEXT} characters)")
    return string.rjust(width, char)


def base64(value: Any) -> str:
    return b64.b64encode(_str("base64", value).encode()).decode()


def base64_to_string(value: Any) -> str:
    try:
        return b64.b64decode(_str("base64ToString", value), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ArmError("base64ToString(): not base64-encoded UTF-8 text") from None


def data_uri(value: Any) -> str:
    return "data:text/plain;charset=utf8;base64," + b64.b64encode(text(value).encode()).decode()


def data_uri_to_string(value: Any) -> str:
    head, sep, data = _str("dataUriToString", value).partition(",")
    if not head.startswith("data:") or not sep:
        raise ArmError("dataUriToString(): not a data URI")
    if head.endswith(";base64"):
        return base64_to_string(data)
    return urllib.parse.unquote(data)


def uri(base: Any, relative: Any) -> str:
    start = _str("uri", base)
    parts = urllib.parse.urlsplit(start)
    if not parts.scheme or not (parts.netloc or parts.scheme == "file"):
        raise ArmError(f"uri(): {start!r} is not an absolute URI")
    return urllib.parse.urljoin(start, _str("uri", relative))


def json_(value: Any) -> Any:
    try:
        return json.loads(_str("json", value))
    except json.JSONDecodeError as exc:
        raise ArmError(f"json(): not valid JSON ({exc.msg})") from None


def string(value: Any) -> str:
    return value if isinstance(value, str) else text(value)


# --- collections -----------------------------------------------------------------------


def _sized(name: str, value: Any) -> Any:
    if not isinstance(value, str | list | dict):
        raise ArmError(f"{name}() expects a string, an array or an object, got {_kind(value)}")
    return value


def length(value: Any) -> int:
    return len(_sized("length", value))


def empty(value: Any) -> bool:
    return value is None or len(_sized("empty", value)) == 0


def _sequence(name: str, value: Any) -> Any:
    """A string or an array: what ARM's first, last, take and skip accept (not objects)."""
    if not isinstance(value, str | list):
        raise ArmError(f"{name}() expects a string or an array, got {_kind(value)}")
    return value


def first(value: Any) -> Any:
    items = _sequence("first", value)
    return items[0] if items else (None if isinstance(items, list) else "")


def last(value: Any) -> Any:
    items = _sequence("last", value)
    return items[-1] if items else (None if isinstance(items, list) else "")


def contains(container: Any, item: Any) -> bool:
    if isinstance(container, dict):
        key = _str("contains", item).lower()
        return any(k.lower() == key for k in container)
    if isinstance(container, list):
        return item in container
    return text(item) in _str("contains", container, "a string, an array or an object")


def take(value: Any, count: Any) -> Any:
    return _sequence("take", value)[: max(0, _int("take", count))]


def skip(value: Any, count: Any) -> Any:
    return _sequence("skip", value)[max(0, _int("skip", count)) :]


def _same_kind(name: str, args: tuple[Any, ...]) -> type:
    _count(name, args, 1)
    kinds = {list if isinstance(a, list) else dict if isinstance(a, dict) else None for a in args}
    if len(kinds) != 1 or None in kinds:
        raise ArmError(f"{name}() expects arrays or objects, all of one kind")
    return kinds.pop()  # type: ignore[return-value]


def union(*args: Any) -> Any:
    if _same_kind("union", args) is list:
        out: list[Any] = []
        for items in args:
            out += [item for item in items if item not in out]
        return out
    merged: dict[str, Any] = {}
    for obj in args:
        for key, value in obj.items():
            nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
            merged[key] = union(merged[key], value) if nested else value  # arrays are replaced
    return merged


def intersection(*args: Any) -> Any:
    if _same_kind("intersection", args) is list:
        out: list[Any] = []
        for item in args[0]:
            if item not in out and all(item in other for other in args[1:]):
                out.append(item)
        return out
    return {k: v for k, v in args[0].items() if all(k in o and o[k] == v for o in args[1:])}


def create_object(*args: Any) -> dict[str, Any]:
    if len(args) % 2:
        raise ArmError("createObject() takes key, value pairs")
    return {_str("createObject", args[i]): args[i + 1] for i in range(0, len(args), 2)}


def items(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, dict):
        raise ArmError(f"items() expects an object, got {_kind(value)}")
    return [{"key": k, "value": value[k]} for k in sorted(value, key=str.lower)]


def flatten(value: Any) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(v, list) for v in value):
        raise ArmError("flatten() expects an array of arrays")
    return [item for inner in value for item in inner]


def join(value: Any, delimiter: Any) -> str:
    if not isinstance(value, list):
        raise ArmError(f"join() expects an array, got {_kind(value)}")
    return _str("join", delimiter).join(text(v) for v in value)


def range_(start: Any, count: Any) -> list[int]:
    begin, n = _int("range", start), _int("range", count)
    if n < 0:
        raise ArmError("range(): the count must not be negative")
    if n > RANGE_MAX:
        raise ArmError(f"range(): the count must be at most {RANGE_MAX}, as in ARM (got {n})")
    if begin + n > INT32_MAX:
        raise ArmError(f"range(): startIndex + count must be at most {INT32_MAX}, as in ARM")
    return list(range(begin, begin + n))


def _numbers(name: str, args: tuple[Any, ...]) -> list[Any]:
    values = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
    if not values:
        raise ArmError(f"{name}() needs at least one value")
    for v in values:
        _int(name, v)
    return values


def coalesce(*args: Any) -> Any:
    return next((a for a in args if a is not None), None)


# --- comparison, logic, numbers ----------------------------------------------------------


def _ordered(name: str, a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return _int(name, a), _int(name, b)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArmError(f"{name}() expects booleans, got {_kind(value)}")
    return value


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ArmError(f"bool() cannot convert {value!r}")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ArmError("int() cannot convert a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    try:
        return int(_str("int", value).strip())
    except ValueError:
        raise ArmError(f"int() cannot convert {value!r}") from None


def div(a: Any, b: Any) -> int:
    x, y = _int("div", a), _int("div", b)
    if y == 0:
        raise ArmError("div(): division by zero")
    quotient = abs(x) // abs(y)
    return quotient if (x >= 0) == (y > 0) else -quotient  # .NET truncates toward zero


def mod(a: Any, b: Any) -> int:
    x, y = _int("mod", a), _int("mod", b)
    if y == 0:
        raise ArmError("mod(): division by zero")
    return x - y * div(x, y)


# The name (lower case) -> the function, with its argument count checked where it matters.
FUNCTIONS: dict[str, tuple[Function, int, int | None]] = {
    # string
    "base64": (base64, 1, 1),
    "base64tostring": (base64_to_string, 1, 1),
    "base64tojson": (lambda v: json_(base64_to_string(v)), 1, 1),
    "concat": (concat, 0, None),
    "contains": (contains, 2, 2),
    "datauri": (data_uri, 1, 1),
    "datauritostring": (data_uri_to_string, 1, 1),
    "empty": (empty, 1, 1),
    "endswith": (lambda s, e: _str("endsWith", s).lower().endswith(_str("endsWith", e).lower()), 2, 2),
    "first": (first, 1, 1),
    "format": (format_, 1, None),
    "guid": (guid, 1, None),
    "indexof": (index_of, 2, 2),
    "join": (join, 2, 2),
    "json": (json_, 1, 1),
    "last": (last, 1, 1),
    "lastindexof": (last_index_of, 2, 2),
    "length": (length, 1, 1),
    "padleft": (pad_left, 2, 3),
    "replace": (replace, 3, 3),
    "skip": (skip, 2, 2),
    "split": (split, 2, 2),
    "startswith": (lambda s, p: _str("startsWith", s).lower().startswith(_str("startsWith", p).lower()), 2, 2),
    "string": (string, 1, 1),
    "substring": (substring, 2, 3),
    "take": (take, 2, 2),
    "tolower": (lambda v: _str("toLower", v).lower(), 1, 1),
    "toupper": (lambda v: _str("toUpper", v).upper(), 1, 1),
    "trim": (lambda v: _str("trim", v).strip(), 1, 1),
    "uniquestring": (unique_string, 1, None),
    "uri": (uri, 2, 2),
    "uricomponent": (lambda v: urllib.parse.quote(_str("uriComponent", v), safe="-_.~"), 1, 1),
    "uricomponenttostring": (lambda v: urllib.parse.unquote(_str("uriComponentToString", v)), 1, 1),
    # array and object
    "array": (lambda v: v if isinstance(v, list) else [v], 1, 1),
    "createarray": (lambda *a: list(a), 0, None),
    "createobject": (create_object, 0, None),
    "flatten": (flatten, 1, 1),
    "intersection": (intersection, 2, None),
    "items": (items, 1, 1),
    "null": (lambda: None, 0, 0),
    "range": (range_, 2, 2),
    "union": (union, 2, None),
    "coalesce": (coalesce, 1, None),
    # comparison
    "equals": (lambda a, b: type(a) is type(b) and a == b, 2, 2),
    "greater": (lambda a, b: _ordered("greater", a, b)[0] > _ordered("greater", a, b)[1], 2, 2),
    "greaterorequals": (
        lambda a, b: _ordered("greaterOrEquals", a, b)[0] >= _ordered("greaterOrEquals", a, b)[1],
        2,
        2,
    ),
    "less": (lambda a, b: _ordered("less", a, b)[0] < _ordered("less", a, b)[1], 2, 2),
    "lessorequals": (lambda a, b: _ordered("lessOrEquals", a, b)[0] <= _ordered("lessOrEquals", a, b)[1], 2, 2),
    # logical
    "and": (lambda *a: all(_bool("and", v) for v in a), 2, None),
    "or": (lambda *a: any(_bool("or", v) for v in a), 2, None),
    "not": (lambda v: not _bool("not", v), 1, 1),
    "bool": (to_bool, 1, 1),
    "true": (lambda: True, 0, 0),
    "false": (lambda: False, 0, 0),
    # numeric
    "add": (lambda a, b: _int("add", a) + _int("add", b), 2, 2),
    "sub": (lambda a, b: _int("sub", a) - _int("sub", b), 2, 2),
    "mul": (lambda a, b: _int("mul", a) * _int("mul", b), 2, 2),
    "div": (div, 2, 2),
    "mod": (mod, 2, 2),
    "int": (to_int, 1, 1),
    "float": (lambda v: float(v) if isinstance(v, int | float | str) and not isinstance(v, bool) else to_int(v), 1, 1),
    "min": (lambda *a: min(_numbers("min", a)), 1, None),
    "max": (lambda *a: max(_numbers("max", a)), 1, None),
}


def call(name: str, args: list[Any]) -> Any:
    """Call the pure function `name` (any case); ArmError when there is none."""
    if name.lower() not in FUNCTIONS:
        raise ArmError(f"{name}() is not an ARM template function")
    fn, low, high = FUNCTIONS[name.lower()]
    _count(name, tuple(args), low, high)
    return fn(*args)


# --- utcNow ------------------------------------------------------------------------------

_STANDARD = {"u": "yyyy-MM-dd HH:mm:ssZ", "s": "yyyy-MM-ddTHH:mm:ss", "o": "yyyy-MM-ddTHH:mm:ss.fffffffZ"}
_TOKENS = (
    ("yyyy", "%Y"),
    ("yy", "%y"),
    ("MMMM", "%B"),
    ("MMM", "%b"),
    ("MM", "%m"),
    ("dddd", "%A"),
    ("ddd", "%a"),
    ("dd", "%d"),
    ("HH", "%H"),
    ("hh", "%I"),
    ("mm", "%M"),
    ("ss", "%S"),
    ("tt", "%p"),
)


def format_time(moment: datetime, pattern: str = "yyyyMMddTHHmmssZ") -> str:
    """A UTC time in a .NET date format (utcNow's default is yyyyMMddTHHmmssZ)."""
    if pattern == "d":
        return f"{moment.month}/{moment.day}/{moment.year}"
    pattern = _STANDARD.get(pattern, pattern)
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] in "'\"":
            end = pattern.find(pattern[i], i + 1)
            end = len(pattern) if end < 0 else end
            out.append(pattern[i + 1 : end])
            i = end + 1
            continue
        if pattern[i] == "f":
            n = len(pattern) - len(pattern[i:].lstrip("f"))
            out.append(f"{moment.microsecond:06d}0"[:n])
            i += n
            continue
        for token, code in _TOKENS:
            if pattern.startswith(token, i):
                out.append(moment.strftime(code))
                i += len(token)
                break
        else:
            single = {"M": moment.month, "d": moment.day, "H": moment.hour, "h": (moment.hour % 12) or 12}
            out.append(str(single.get(pattern[i], pattern[i])) if pattern[i] in single else pattern[i])
            i += 1
    return "".join(out)
