"""Token roles from character offsets: special, prompt, and the text's content/function/punctuation."""

from __future__ import annotations

import pytest

from core.encoding.prompts import resolve_prompt
from core.encoding.roles import TEXT_ROLES, Role, token_roles


def roles_for(string: str, spans: list[tuple[int, int]], text_start: int, text_end: int, special=None) -> list[Role]:
    special = special if special is not None else [False] * len(spans)
    return token_roles(string, spans, special, text_start, text_end)


def test_special_tokens_are_special_wherever_they_sit():
    string = "the dog"
    # A BOS with an empty span, and a special token whose span lies inside the text.
    assert roles_for(string, [(0, 0), (4, 7)], 0, 7, special=[True, True]) == [Role.SPECIAL, Role.SPECIAL]


def test_a_zero_width_non_special_token_is_special():
    assert roles_for("dog", [(0, 0), (0, 3)], 0, 3) == [Role.SPECIAL, Role.CONTENT]


def test_prompt_tokens_outside_the_text_span():
    wrapped = resolve_prompt("Topic: {text} end").wrap("dogs")  # 'Topic: dogs end', text at [7, 11)
    spans = [(0, 5), (5, 6), (6, 7), (7, 11), (11, 15)]
    assert roles_for(wrapped.string, spans, wrapped.text_start, wrapped.text_end) == [
        Role.PROMPT,
        Role.PROMPT,
        Role.PROMPT,
        Role.CONTENT,
        Role.PROMPT,
    ]


def test_tokens_touching_but_not_overlapping_the_text_are_prompt():
    string = "ab|cat|yz"  # text 'cat' at [3, 6)
    assert roles_for(string, [(0, 3), (3, 6), (6, 9)], 3, 6) == [Role.PROMPT, Role.CONTENT, Role.PROMPT]


def test_content_function_and_punctuation_words():
    string = "The dog, and its bone!"
    spans = [(0, 3), (3, 7), (7, 8), (8, 12), (12, 16), (16, 21), (21, 22)]
    assert roles_for(string, spans, 0, len(string)) == [
        Role.FUNCTION,  # 'The' (case-insensitive)
        Role.CONTENT,  # ' dog' (leading space ignored)
        Role.PUNCT,  # ','
        Role.FUNCTION,  # ' and'
        Role.FUNCTION,  # ' its'
        Role.CONTENT,  # ' bone'
        Role.PUNCT,  # '!'
    ]


def test_punctuation_glued_to_a_word_does_not_hide_its_role():
    string = "the, (dog)"
    assert roles_for(string, [(0, 4), (4, 10)], 0, len(string)) == [Role.FUNCTION, Role.CONTENT]


@pytest.mark.parametrize("piece", ["...", " ", '"', "?!", " -"])
def test_pieces_without_letters_or_digits_are_punctuation(piece):
    assert roles_for(piece, [(0, len(piece))], 0, len(piece)) == [Role.PUNCT]


def test_digits_are_content():
    assert roles_for("42", [(0, 2)], 0, 2) == [Role.CONTENT]


def test_token_crossing_the_text_start_counts_as_text_with_the_role_of_its_text_part():
    wrapped = resolve_prompt('Say "{text}" now').wrap("dog and")  # 'Say "dog and" now', text at [5, 12)
    string = wrapped.string
    spans = [(0, 3), (3, 8), (8, 12), (12, 13), (13, 17)]  # ' "dog' crosses the start
    roles = roles_for(string, spans, wrapped.text_start, wrapped.text_end)
    assert roles == [Role.PROMPT, Role.CONTENT, Role.FUNCTION, Role.PROMPT, Role.PROMPT]


def test_token_crossing_the_text_end_counts_as_text():
    string = 'x "dog." y'  # text 'dog.' at [3, 7); the token '."' crosses the end
    spans = [(0, 1), (1, 3), (3, 6), (6, 8), (8, 10)]
    roles = roles_for(string, spans, 3, 7)
    assert roles == [Role.PROMPT, Role.PROMPT, Role.CONTENT, Role.PUNCT, Role.PROMPT]
    assert roles[3] in TEXT_ROLES


def test_token_covering_the_whole_text_and_more_is_text():
    assert roles_for("xxdogyy", [(0, 7)], 2, 5) == [Role.CONTENT]


def test_offsets_and_special_flags_must_have_the_same_length():
    with pytest.raises(ValueError):
        token_roles("dog", [(0, 3)], [False, True], 0, 3)


def test_roles_from_a_real_tokenizer_cover_bos_prompt_and_text(tiny_loaded):
    tokenizer = tiny_loaded.tokenizer
    wrapped = resolve_prompt("eol").wrap("The red dog runs in the garden.")
    encoding = tokenizer(wrapped.string, return_offsets_mapping=True, return_special_tokens_mask=True)
    roles = token_roles(
        wrapped.string,
        [tuple(span) for span in encoding["offset_mapping"]],
        [bool(flag) for flag in encoding["special_tokens_mask"]],
        wrapped.text_start,
        wrapped.text_end,
    )
    assert roles[0] == Role.SPECIAL and encoding["input_ids"][0] == tokenizer.bos_token_id
    assert roles[-1] == Role.PROMPT  # the final ':'
    text_roles = [role for role in roles if role in TEXT_ROLES]
    assert Role.CONTENT in text_roles and Role.FUNCTION in text_roles and Role.PUNCT in text_roles
    # The text tokens are one contiguous run between prompt tokens, and cover the whole text.
    text_positions = [i for i, role in enumerate(roles) if role in TEXT_ROLES]
    assert text_positions == list(range(text_positions[0], text_positions[-1] + 1))
    covered = "".join(
        wrapped.string[a:b] for a, b in encoding["offset_mapping"][text_positions[0] : text_positions[-1] + 1]
    )
    assert "The red dog runs in the garden." in covered


def roles_of_words(sentence: str) -> dict[str, Role]:
    """Each whitespace-separated word of ``sentence`` as one token (punctuation split off), to its role."""
    import re

    spans = [match.span() for match in re.finditer(r"\w+(?:'\w+)?|[^\w\s]", sentence)]
    roles = roles_for(sentence, spans, 0, len(sentence))
    return {sentence[start:end]: role for (start, end), role in zip(spans, roles, strict=True)}


def test_content_words_on_retrieval_stop_lists_are_content():
    roles = roles_of_words("The central bank raised interest rates again to fight stubborn inflation.")
    assert roles["interest"] == roles["bank"] == roles["fight"] == Role.CONTENT
    assert roles["The"] == roles["to"] == Role.FUNCTION
    words = "fire system bill show move part side call name find found thick thin back front top bottom amount"
    assert set(roles_of_words(words).values()) == {Role.CONTENT}


def test_closed_class_words_are_function_words():
    sentence = "She could not have gone there because of them, although nobody would ask which one they're in."
    roles = roles_of_words(sentence)
    for word in ("She", "could", "not", "have", "there", "because", "of", "them", "although", "nobody", "would",
                 "which", "they're", "in"):  # fmt: skip
        assert roles[word] == Role.FUNCTION, word
    for word in ("gone", "ask"):
        assert roles[word] == Role.CONTENT, word


def test_a_subword_piece_takes_its_words_role():
    string = "information"  # split as 'in' + 'formation': 'in' alone would look like a preposition
    assert roles_for(string, [(0, 2), (2, 11)], 0, 11) == [Role.CONTENT, Role.CONTENT]
    string = "don't dogs"
    assert roles_for(string, [(0, 3), (3, 5), (5, 10)], 0, 10) == [Role.FUNCTION, Role.FUNCTION, Role.CONTENT]


def test_a_split_off_clitic_is_a_function_word_even_after_a_content_word():
    string = "the dog's bone"
    assert roles_for(string, [(0, 3), (3, 7), (7, 9), (9, 14)], 0, 14) == [
        Role.FUNCTION, Role.CONTENT, Role.FUNCTION, Role.CONTENT]  # fmt: skip
