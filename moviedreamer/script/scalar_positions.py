"""Where a character of a text value sits in its YAML file, so that a message about one word of a descriptor can
point at that word's own `file:line:col`, not only at the start of the value.

A scalar's value is its source with quotes, escapes, block headers, indentation and line folding taken out; none of
those add a non-space character that the value does not have (an escape counts as the one character it stands for).
So the value's non-space characters, matched in order against the source's (unescaped) characters from the scalar's
start, land exactly on the characters they came from, for plain, quoted, literal (`|`) and folded (`>`) scalars alike.
"""

from __future__ import annotations

from bisect import bisect_right

from moviedreamer.script.yaml_positions import Located

_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
            "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}
_HEX = {"x": 2, "u": 4, "U": 8}


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts += [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    return starts


def _source_units(text: str, start: int):
    """(character of the value, its offset in `text`) from a scalar starting at `start`, in order; quoted scalars end
    at their closing quote, others run to the end of the text (the caller stops once the value is matched)."""
    first = text[start:start + 1]
    if first in ("|", ">"):  # block scalar: the content starts on the line after the header
        nl = text.find("\n", start)
        for i in range(len(text) if nl < 0 else nl + 1, len(text)):
            yield text[i], i
        return
    if first == "'":
        i = start + 1
        while i < len(text):
            if text[i] == "'":
                if text[i + 1:i + 2] != "'":
                    return
                yield "'", i
                i += 2
                continue
            yield text[i], i
            i += 1
        return
    if first == '"':
        i = start + 1
        while i < len(text):
            ch = text[i]
            if ch == '"':
                return
            if ch == "\\" and i + 1 < len(text):
                code = text[i + 1]
                if code in _HEX:
                    digits = text[i + 2:i + 2 + _HEX[code]]
                    try:
                        yield chr(int(digits, 16)), i
                    except ValueError:
                        pass
                    i += 2 + _HEX[code]
                    continue
                if code in _ESCAPES:
                    yield _ESCAPES[code], i
                i += 2  # an escaped line break (or an unknown escape) adds nothing
                continue
            yield ch, i
            i += 1
        return
    for i in range(start, len(text)):
        yield text[i], i


def value_offsets(text: str, start: int, value: str) -> list[int | None]:
    """Offset in `text` of each character of `value`, the scalar starting at offset `start`; None for white space and,
    should the source not match (a value that is not this scalar's), for every character from there on."""
    out: list[int | None] = []
    units = _source_units(text, start)
    for ch in value:
        if ch.isspace():
            out.append(None)
            continue
        for got, offset in units:
            if got == ch:
                out.append(offset)
                break
        else:
            return out + [None] * (len(value) - len(out))
    return out


def position_in_value(located: Located, path: tuple, offset: int) -> tuple[int, int]:
    """(line, col), both 1-based, of character `offset` of the text value at `path`; the value's own position when
    the file's text is not at hand or the offset cannot be placed."""
    line, col = located.where(path)
    value = _value_at(located.data, path)
    text = located.text
    if not text or not isinstance(value, str) or not 0 <= offset < len(value):
        return line, col
    starts = _line_starts(text)
    if line - 1 >= len(starts):
        return line, col
    found = value_offsets(text, starts[line - 1] + col - 1, value[:offset + 1])[offset]
    if found is None:
        return line, col
    at = bisect_right(starts, found) - 1
    return at + 1, found - starts[at] + 1


def _value_at(data, path: tuple):
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data
