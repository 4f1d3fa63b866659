"""JSON of large metadata objects, encoded and decoded a few hundred members at a time.

``json.dumps`` and ``json.loads`` run in C and hold the GIL for the whole call: the metadata
of 10 000 files (2-3 MB of JSON) takes 20-50 ms in one piece on a small VM, and during that
time the reactor thread cannot run, even though the call itself is on a pool thread. These
functions give the same results while letting the interpreter switch threads between pieces:

* :func:`dumps` returns exactly ``json.dumps(value)`` (default separators and options);
  objects of more than :data:`PIECE` members, at the top level or one level down (the
  ``missing``/``shared``/``extra`` maps of a push), are encoded :data:`PIECE` members at a time;
* :func:`loads` returns exactly ``json.loads(raw)``; a large top-level object (a worker's
  ``files_metadata.json``: path -> entry) is parsed member by member, each member's value by
  the C scanner. Anything it does not recognise is handed to ``json.loads``, which then
  returns the same value or raises the same error as it would have.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

#: Members of an object encoded in one ``json.dumps`` call.
PIECE = 500
#: Below this size a text is decoded in one ``json.loads`` call.
LOADS_PIECES_FROM = 256 * 1024

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
#: The decoder's value scanner (C when available) and string scanner: parse one value / the
#: rest of one string starting at an index, as ``json.loads`` does internally.
_SCAN_VALUE: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_SCAN_STRING: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def dumps(value: object) -> str:
    """``json.dumps(value)``, large objects encoded in pieces (see the module docstring)."""
    if isinstance(value, dict):
        if len(value) > PIECE:
            return _dumps_members(value)
        if all(isinstance(key, str) for key in value) and any(
                isinstance(member, dict) and len(member) > PIECE for member in value.values()):
            return "{" + ", ".join(f"{json.dumps(key)}: {dumps(member)}"
                                   for key, member in value.items()) + "}"
    return json.dumps(value)


def _dumps_members(value: dict[Any, Any]) -> str:
    parts = []
    members = iter(value.items())
    while piece := dict(itertools.islice(members, PIECE)):
        parts.append(json.dumps(piece)[1:-1])  # '{"a": 1, "b": 2}' -> '"a": 1, "b": 2'
    return "{" + ", ".join(parts) + "}"


def loads(raw: bytes | str) -> Any:
    """``json.loads(raw)``, a large top-level object parsed member by member."""
    if len(raw) < LOADS_PIECES_FROM:
        return json.loads(raw)
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return _loads_object(text)
    except (UnicodeDecodeError, ValueError, IndexError):
        return json.loads(raw)  # the same error (or value) as json.loads gives


def _skip(text: str, index: int) -> int:
    """The index of the first character at or after ``index`` that is not whitespace."""
    found = _WHITESPACE.match(text, index)
    assert found is not None  # the pattern matches the empty string
    return found.end()


def _loads_object(text: str) -> dict[str, Any]:
    """Parse ``{ "key": value, ... }`` with nothing after it; ValueError otherwise."""
    scan = _SCAN_VALUE
    index = _skip(text, 0)
    if text[index] != "{":
        raise ValueError("not an object")
    index = _skip(text, index + 1)
    result: dict[str, Any] = {}
    if text[index] == "}":
        index += 1
    else:
        while True:
            if text[index] != '"':
                raise ValueError("expected a key")
            key, index = _SCAN_STRING(text, index + 1)
            index = _skip(text, index)
            if text[index] != ":":
                raise ValueError("expected ':'")
            index = _skip(text, index + 1)
            try:
                value, index = scan(text, index)
            except StopIteration:
                raise ValueError("expected a value") from None
            result[key] = value
            index = _skip(text, index)
            if text[index] == ",":
                index = _skip(text, index + 1)
                continue
            if text[index] != "}":
                raise ValueError("expected ',' or '}'")
            index += 1
            break
    if _skip(text, index) != len(text):
        raise ValueError("extra data")
    return result
