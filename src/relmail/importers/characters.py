"""Windows-1252 characters that arrived as C1 control characters, and their repair.

A shop database that once stored Windows-1252 text as Latin-1 (old MySQL
tables, Excel round trips) exports ’ as U+0092, € as U+0080, – as U+0096:
invisible control characters in every mail program, and Gmail shows an
e-mail holding one as "[Message clipped]" whatever its size. Browsers read
these code points as their Windows-1252 characters (the WHATWG HTML
standard's table for numeric character references); relmail does the same
wherever text enters the store, and the template check warns where one is
still rendered.
"""

from __future__ import annotations

import re

#: C1 control characters, U+0080 to U+009F.
C1_CONTROL = re.compile("[\x80-\x9f]")
#: The same characters encoded as UTF-8 (lead byte 0xC2): a line whose bytes hold no 0xC2 holds none.
C1_CONTROL_UTF8 = re.compile(b"\xc2[\x80-\x9f]")

#: Each C1 code point to the Windows-1252 character its byte stands for; the five bytes
#: Windows-1252 leaves undefined (0x81, 0x8d, 0x8f, 0x90, 0x9d) have none and stay as they are.
WINDOWS_1252 = {byte: char for byte in range(0x80, 0xA0) if (char := bytes([byte]).decode("cp1252", "ignore"))}


def repaired(text: str) -> str:
    """``text`` with each C1 control character that Windows-1252 defines read as that character."""
    return text.translate(WINDOWS_1252)


#: A JSON escape of a C1 control character (``\u0092``, as ``json.dumps`` writes it by default), not itself escaped.
C1_JSON_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u00([89][0-9a-fA-F])")


def _json_escape(found: re.Match) -> str:
    char = WINDOWS_1252.get(int(found.group(2), 16))
    return found.group(0) if char is None else f"{found.group(1)}\\u{ord(char):04x}"


def repaired_json(text: str) -> str:
    """A JSON text with each escaped C1 control character that Windows-1252 defines escaped as that character."""
    return C1_JSON_ESCAPE.sub(_json_escape, text)

