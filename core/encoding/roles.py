"""Token roles from character offsets, so any template and any tokenizer work.

A token's role says what it stands for in the wrapped string: a special token (BOS, the usual
attention sink), a token of the prompt template, or a token of the user's text: a content word,
a function word or punctuation.

Function words are English's closed classes (determiners, pronouns, prepositions, conjunctions, auxiliaries
and modals, particles, negation, wh-words, quantifiers, degree adverbs): a word outside them is content. A token
takes the role of the whole word it lies in, so a subword piece ("in" of "information") is content when its word is.
"""

from __future__ import annotations

from enum import IntEnum


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
# Closed-class English words. Not a retrieval stop list: those also hold content words ("interest", "system",
# "fire", "bill", "show", "move", "part", "side", "call", "name", "find", "thick", "thin").
FUNCTION_WORDS = frozenset(
    """
    a an the this that these those my your his her its our their whose which what whatever whichever
    i me you he him she it we us they them myself yourself himself herself itself ourselves yourselves
    themselves mine yours hers ours theirs oneself who whom whoever whomever
    someone somebody something anyone anybody anything everyone everybody everything noone nobody nothing
    none no nor not neither either both each every all any some several few fewer many much more most less
    least such other another own same enough
    about above across after against along amid among amongst around as at before behind below beneath
    beside besides between beyond but by despite down during except for from in inside into of off
    on onto out outside over per since than through throughout till to toward towards under underneath
    unlike until unto up upon via with within without
    and or so yet because although though while whereas if unless whether once lest
    be am is are was were been being have has had having do does did doing
    can could may might must shall should will would ought
    there here then thus hence therefore however also too very quite rather just only even
    when where why how whenever wherever wherein whereby
    ll ve re s d m t
    """.split()  # noqa: SIM905 - a line per word class reads better than a list literal
)
# Clitics a tokenizer splits off: "'s", "n't", "'re" are function words whatever word they end.
CLITICS = frozenset({"s", "re", "ve", "ll", "d", "m", "t", "nt"})


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
            roles.append(_text_role(string, max(start, text_start), min(end, text_end), text_start, text_end))
        elif first_copy is not None and start < first_copy[1] and end > first_copy[0]:
            roles.append(Role.FIRST_COPY)
        elif placeholder is not None and start < placeholder[1] and end > placeholder[0]:
            roles.append(Role.PLACEHOLDER)
        else:
            roles.append(Role.PROMPT)
    return roles


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char in "'’"


def _text_role(string: str, start: int, end: int, text_start: int, text_end: int) -> Role:
    """The role of the text piece ``string[start:end]``: punctuation, or the role of the word it lies in."""
    piece = string[start:end].strip()
    if not any(char.isalnum() for char in piece):
        return Role.PUNCT
    if piece[0] in "'’" and piece[1:].lower().replace("'", "") in CLITICS:
        return Role.FUNCTION
    first = start + next(i for i, char in enumerate(string[start:end]) if char.isalnum())
    left, right = first, first
    while left > text_start and _is_word_char(string[left - 1]):
        left -= 1
    while right < text_end and _is_word_char(string[right]):
        right += 1
    word = string[left:right].lower().replace("’", "'").strip("'")
    stem, _, clitic = word.partition("'")
    if stem in FUNCTION_WORDS and (not clitic or clitic in CLITICS):
        return Role.FUNCTION  # "it's", "they're", "don't"
    if clitic == "t" and stem.endswith("n") and stem[:-1] in FUNCTION_WORDS | {"ca", "wo", "sha"}:
        return Role.FUNCTION  # "don't", "can't", "won't" split as "don" + "'t"
    return Role.CONTENT
