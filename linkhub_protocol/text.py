"""Text a person will read (device names, settings keys, descriptions): what
may be in it, and how to show what may not without acting on it."""

from __future__ import annotations

import re
import unicodedata

from linkhub_protocol.errors import ErrorCode, ProtocolError

_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
# Unicode's control (Cc: C0, DEL, C1, so ESC sequences and newlines) and format
# (Cf: bidi overrides and isolates, zero-width characters) categories. In a
# name or key they rewrite a terminal (`linkhub activity`), forge log lines, or
# show a person a different name than the one stored (Unicode TR #36 §2.4).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf"})


def hidden_character(text: str) -> str | None:
    """The first control or format character in `text`, as U+XXXX; None if there is none."""
    for char in text:
        if unicodedata.category(char) in _HIDDEN_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def escape_hidden(text: str) -> str:
    """`text` with each control or format character written as an escape (\\x1b,
    \\u202e): for terminals and log lines, which must show what was sent
    without acting on it."""
    if hidden_character(text) is None:
        return text
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in _HIDDEN_CATEGORIES else char for char in text
    )


def checked_text(value: object, name: str, max_len: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{name} must be a non-empty string")
    hidden = hidden_character(value)
    if hidden is not None:  # C0 controls and DEL included: they are Cc
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"{name} must not hold control or format characters (it holds {hidden}: a terminal "
            "escape, a line break, a bidi override or a zero-width character)",
        )
    if len(value) > max_len or not _PRINTABLE.fullmatch(value):
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, f"{name} must be at most {max_len} printable characters"
        )
    return value
