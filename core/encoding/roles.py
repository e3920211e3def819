"""Token roles from character offsets, so any template and any tokenizer work.

A token's role says what it stands for in the wrapped string: a special token (BOS, the usual
attention sink), a token of the prompt template, or a token of the user's text: a content word,
a function word or punctuation.
"""

from __future__ import annotations

from enum import IntEnum

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS


class Role(IntEnum):
    SPECIAL = 0
    PROMPT = 1
    CONTENT = 2
    FUNCTION = 3
    PUNCT = 4
    # Method roles (core.encoding.methods): echo's first copy of the text, token prepending's placeholder.
    FIRST_COPY = 5
    PLACEHOLDER = 6


TEXT_ROLES = (Role.CONTENT, Role.FUNCTION, Role.PUNCT)
FUNCTION_WORDS = frozenset(ENGLISH_STOP_WORDS)


def token_roles(
    string: str,
    offsets: list[tuple[int, int]],
    special: list[bool],
    text_start: int,
    text_end: int,
    first_copy: tuple[int, int] | None = None,
    placeholder: tuple[int, int] | None = None,
) -> list[Role]:
    """One role per token.

    ``offsets`` are the tokenizer's character spans in ``string``; ``special`` marks special tokens.
    A token belongs to the text when its span overlaps ``[text_start, text_end)``; a token merged
    across the boundary (e.g. a quote glued to the first word) counts as text, as it carries text.
    ``first_copy`` (echo) and ``placeholder`` (token prepending) are further character spans whose
    tokens get the roles ``FIRST_COPY`` and ``PLACEHOLDER``.
    """
    roles = []
    for (start, end), is_special in zip(offsets, special, strict=True):
        if is_special or start == end:
            roles.append(Role.SPECIAL)
        elif start < text_end and end > text_start:
            roles.append(_text_role(string[max(start, text_start) : min(end, text_end)]))
        elif first_copy is not None and start < first_copy[1] and end > first_copy[0]:
            roles.append(Role.FIRST_COPY)
        elif placeholder is not None and start < placeholder[1] and end > placeholder[0]:
            roles.append(Role.PLACEHOLDER)
        else:
            roles.append(Role.PROMPT)
    return roles


def _text_role(piece: str) -> Role:
    word = piece.strip().lower()
    if not any(ch.isalnum() for ch in word):
        return Role.PUNCT
    return Role.FUNCTION if word.strip("'\".,;:!?()") in FUNCTION_WORDS else Role.CONTENT
