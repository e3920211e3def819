"""Prompt templates: named task prompts that wrap a text, with the text's character span kept.

A template is any string with exactly one ``{text}`` placeholder. Wrapping returns the character
span of the text inside the wrapped string, so token roles (prompt vs. text) can be derived from
tokenizer offsets for any template and any tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.runtime.errors import ConfigError

PLACEHOLDER = "{text}"

# The paper's prompt families (Roth et al., 2025, after Jiang et al. 2023 and Zhang et al. 2024).
PROMPTS: dict[str, str] = {
    "none": "{text}",
    "eol": 'This sentence: "{text}" means in one word:',
    "cluster": 'This sentence: "{text}" belongs to the following cluster:',
    "summarize": 'This sentence: "{text}" can be summarized as',
    "cot": 'After thinking step by step, this sentence: "{text}" means in one word:',
    "knowledge": (
        "The essence of a sentence is often captured by its main subjects and actions, while descriptive "
        'terms provide additional but less central details. With this in mind, this sentence: "{text}" '
        "means in one word:"
    ),
    "classify": 'This sentence: "{text}" can be classified into the category:',
}

PROMPT_DESCRIPTIONS: dict[str, str] = {
    "none": "the text alone",
    "eol": "PromptEOL: compress the meaning into one word",
    "cluster": "clustering task prompt",
    "summarize": "summarisation prompt",
    "cot": "pretended chain of thought",
    "knowledge": "knowledge enhancement: subjects and actions carry the meaning",
    "classify": "classification prompt",
}


@dataclass(frozen=True)
class PromptTemplate:
    """A validated template. ``name`` is the registry name, or ``"custom"`` for a user's template."""

    name: str
    template: str

    @property
    def prefix(self) -> str:
        return self.template.split(PLACEHOLDER, 1)[0]

    @property
    def suffix(self) -> str:
        return self.template.split(PLACEHOLDER, 1)[1]

    def wrap(self, text: str) -> WrappedText:
        """Insert ``text``; the result knows where the text sits."""
        start = len(self.prefix)
        return WrappedText(self.prefix + text + self.suffix, start, start + len(text))


@dataclass(frozen=True)
class WrappedText:
    """A prompt-wrapped text and the half-open character span ``[text_start, text_end)`` of the text
    (the pooled copy under echo); methods (core.encoding.methods) add the first copy's span or the placeholder's."""

    string: str
    text_start: int
    text_end: int
    first_copy: tuple[int, int] | None = None
    placeholder: tuple[int, int] | None = None


def resolve_prompt(prompt: str | PromptTemplate) -> PromptTemplate:
    """A registry name or a literal template containing ``{text}`` exactly once."""
    if isinstance(prompt, PromptTemplate):
        return prompt
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a name or a template string, got {type(prompt).__name__}")
    if prompt in PROMPTS:
        return PromptTemplate(prompt, PROMPTS[prompt])
    count = prompt.count(PLACEHOLDER)
    if count == 1:
        return PromptTemplate("custom", prompt)
    if count == 0:
        raise ConfigError(
            f"Unknown prompt {prompt!r}: not a registered name ({', '.join(PROMPTS)}) and, as a template, "
            f"it lacks the {PLACEHOLDER} placeholder. Example: 'This text: \"{PLACEHOLDER}\" is about'."
        )
    raise ConfigError(f"Prompt template {prompt!r} has {count} {PLACEHOLDER} placeholders; use exactly one.")
