"""Prompt templates: registry, wrapping with the text's character span, validation."""

from __future__ import annotations

import pytest

from core.encoding.prompts import (
    PLACEHOLDER,
    PROMPT_DESCRIPTIONS,
    PROMPTS,
    PromptTemplate,
    WrappedText,
    reference_text,
    resolve_prompt,
)

TEXTS = ["a dog", 'He said "hi", then {left}.', "x", "  spaced out  ", "ünïcødé ✓ text"]


@pytest.mark.parametrize("name", sorted(PROMPTS))
@pytest.mark.parametrize("text", TEXTS)
def test_every_registered_prompt_wraps_with_the_text_exactly_at_its_span(name, text):
    template = resolve_prompt(name)
    wrapped = template.wrap(text)
    assert template.name == name
    assert wrapped.string[wrapped.text_start : wrapped.text_end] == text
    assert wrapped.string[: wrapped.text_start] == template.prefix
    assert wrapped.string[wrapped.text_end :] == template.suffix
    assert wrapped.string == PROMPTS[name].replace(PLACEHOLDER, text)


def test_every_registered_prompt_has_one_placeholder_and_a_description():
    assert set(PROMPT_DESCRIPTIONS) == set(PROMPTS)
    assert all(template.count(PLACEHOLDER) == 1 for template in PROMPTS.values())


def test_none_prompt_is_the_identity():
    assert resolve_prompt("none").wrap("plain text") == WrappedText("plain text", 0, 10)


def test_eol_prompt_spans_are_known_values():
    wrapped = resolve_prompt("eol").wrap("cat")
    assert wrapped == WrappedText('This sentence: "cat" means in one word:"', 16, 19)
    assert resolve_prompt("eol-noquote").wrap("cat") == WrappedText('This sentence: "cat" means in one word:', 16, 19)


@pytest.mark.parametrize("name", ["eol", "cot", "knowledge"])
def test_published_one_word_prompts_open_the_closing_quote_and_noquote_forms_do_not(name):
    published, bare = PROMPTS[name], PROMPTS[f"{name}-noquote"]
    assert published.endswith('in one word:"')
    assert bare.endswith("in one word:")
    assert published == bare + '"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a dog", "a dog."),
        ("a dog.", "a dog."),
        ("is it?", "is it."),
        ('he said "hi"', "he said 'hi'"),
        ('he said "hi', "he said 'hi."),
        ("it's 'quoted'", "it's 'quoted'"),
        ("", ""),
    ],
)
def test_reference_text_normalisation(text, expected):
    assert reference_text(text) == expected


def test_normalising_template_wraps_the_normalised_text_and_spans_it():
    template = PromptTemplate("eol", PROMPTS["eol"], normalize_text=True)
    wrapped = template.wrap('say "hi"')
    assert wrapped.string == 'This sentence: "say \'hi\'" means in one word:"'
    assert wrapped.string[wrapped.text_start : wrapped.text_end] == "say 'hi'"
    assert resolve_prompt("eol").wrap('say "hi"').string.count('"') == 5  # off by default


def test_custom_template_wraps_and_is_named_custom():
    template = resolve_prompt("Query: {text} -> topic")
    assert template == PromptTemplate("custom", "Query: {text} -> topic")
    assert (template.prefix, template.suffix) == ("Query: ", " -> topic")
    wrapped = template.wrap("how to bake bread")
    assert wrapped.string == "Query: how to bake bread -> topic"
    assert wrapped.string[wrapped.text_start : wrapped.text_end] == "how to bake bread"


def test_custom_template_with_placeholder_at_the_edges():
    assert resolve_prompt("{text}!").wrap("hey") == WrappedText("hey!", 0, 3)
    assert resolve_prompt("Say: {text}").wrap("hey") == WrappedText("Say: hey", 5, 8)


def test_a_text_containing_the_placeholder_is_inserted_literally():
    wrapped = resolve_prompt("eol").wrap("use {text} here")
    assert wrapped.string[wrapped.text_start : wrapped.text_end] == "use {text} here"


def test_prompt_template_instance_passes_through_unchanged():
    template = PromptTemplate("mine", "<{text}>")
    assert resolve_prompt(template) is template


def test_template_without_placeholder_raises_value_error_naming_it():
    with pytest.raises(ValueError, match=r"\{text\}") as info:
        resolve_prompt("no placeholder here")
    assert "not a registered name" in str(info.value)
    assert "eol" in str(info.value)  # lists the registered names


def test_unknown_prompt_name_raises_value_error():
    with pytest.raises(ValueError, match="Unknown prompt 'eol2'"):
        resolve_prompt("eol2")


def test_two_placeholders_raise_value_error():
    with pytest.raises(ValueError, match=r"2 \{text\} placeholders"):
        resolve_prompt("{text} and {text}")


@pytest.mark.parametrize("bad", [None, 3, b"{text}", ["{text}"]])
def test_non_string_prompt_raises_type_error(bad):
    with pytest.raises(TypeError, match="prompt must be a name or a template string"):
        resolve_prompt(bad)
