"""What counts as text: no control characters, and "present" means something a person can see.

Pure. Every text field that arrives from outside (webhook bodies, Slack inputs, slash commands)
goes through `control_character` before it is stored: PostgreSQL refuses NUL outright and the
other C0/C1 controls only confuse readers of the audit trail. Required text (a change ticket, a
rejection or break-glass reason) is judged by `visible`: zero-width and other invisible
characters (Unicode format characters, category Cf) and whitespace do not make a reason.
"""

from __future__ import annotations

import unicodedata

_ALLOWED_CONTROLS = frozenset("\t\n\r")


def control_character(text: str) -> str | None:
    """A description of the first control character in `text` (e.g. "U+0000 at position 3"),
    or None when there is none. Tab, newline and carriage return are ordinary text."""
    for position, char in enumerate(text):
        if char in _ALLOWED_CONTROLS:
            continue
        if unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X} at position {position}"
    return None


def control_character_message(text: str) -> str | None:
    """The sentence for a field holding a control character, or None."""
    found = control_character(text)
    return None if found is None else f"must not contain control characters ({found})"


def visible(text: str) -> str:
    """`text` without invisible characters (format characters such as U+200B, U+200D, U+FEFF,
    U+2060, and bidirectional marks), with surrounding whitespace removed."""
    kept = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return kept.strip()


def is_blank(text: str | None) -> bool:
    """True when nothing a reader could see is left: None, "", spaces, zero-width characters."""
    return text is None or not visible(text)


def control_character_refusal(what: str, text: str | None) -> str | None:
    """The sentence refusing Slack input `what` (e.g. "The reason") for a control character,
    such as "The reason must not contain control characters (U+0000 at position 3); nothing was
    changed.", or None when `text` has none."""
    problem = None if text is None else control_character_message(text)
    return None if problem is None else f"{what} {problem}; nothing was changed."
