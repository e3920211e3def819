"""Prompt templates: named task prompts that wrap a text, with the text's character span kept.

A template is any string with exactly one ``{text}`` placeholder. Wrapping returns the character
span of the text inside the wrapped string, so token roles (prompt vs. text) can be derived from
tokenizer offsets for any template and any tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.runtime.errors import ConfigError

__all__ = [
    "FORMER_NAMES",
    "PLACEHOLDER",
    "PROMPTS",
    "PROMPT_DESCRIPTIONS",
    "PromptTemplate",
    "WrappedText",
    "reference_text",
    "resolve_prompt",
]

PLACEHOLDER = "{text}"

# The paper's prompt families (Roth et al., 2025, after Jiang et al. 2023 and Zhang et al. 2024). ``eol``, ``cot`` and
# ``knowledge`` are the published forms: the text is quoted and the prompt opens a second quote after "in one word:",
# so the pooled last token is ``:"``. The ``-noquote`` names are the same prompts without that closing quote.
_EOL_TAIL = " means in one word:"
_COT_HEAD = "After thinking step by step, this sentence: "
_KNOWLEDGE_HEAD = (
    "The essence of a sentence is often captured by its main subjects and actions, while descriptive "
    "terms provide additional but less central details. With this in mind, this sentence: "
)
PROMPTS: dict[str, str] = {
    "none": "{text}",
    "eol": 'This sentence: "{text}"' + _EOL_TAIL + '"',
    "eol-noquote": 'This sentence: "{text}"' + _EOL_TAIL,
    "cluster": 'This sentence: "{text}" belongs to the following cluster:',
    "summarize": 'This sentence: "{text}" can be summarized as',
    "cot": _COT_HEAD + '"{text}"' + _EOL_TAIL + '"',
    "cot-noquote": _COT_HEAD + '"{text}"' + _EOL_TAIL,
    "knowledge": _KNOWLEDGE_HEAD + '"{text}"' + _EOL_TAIL + '"',
    "knowledge-noquote": _KNOWLEDGE_HEAD + '"{text}"' + _EOL_TAIL,
    "classify": 'This sentence: "{text}" can be classified into the category:',
}

PROMPT_DESCRIPTIONS: dict[str, str] = {
    "none": "the text alone",
    "eol": "PromptEOL as published (Jiang et al. 2023): compress the meaning into one word, closing quote opened",
    "eol-noquote": "PromptEOL without the closing quote (the pooled last token is ':')",
    "cluster": "clustering task prompt",
    "summarize": "summarisation prompt",
    "cot": "pretended chain of thought as published (Zhang et al. 2024), closing quote opened",
    "cot-noquote": "pretended chain of thought without the closing quote",
    "knowledge": "knowledge enhancement as published (Zhang et al. 2024): subjects and actions carry the meaning",
    "knowledge-noquote": "knowledge enhancement without the closing quote",
    "classify": "classification prompt",
}

# Quote-less forms that were stored under the short names (cells, cards and reports keep a name beside the template);
# ``core.encoding.methods.stored_prompt_name`` labels such records by the form's current name.
FORMER_NAMES: dict[str, str] = {PROMPTS[name + "-noquote"]: name + "-noquote" for name in ("eol", "cot", "knowledge")}


def reference_text(text: str) -> str:
    """The text as the PromptEOL, token-prepending and MetaEOL reference code feeds it to the prompt: a ``.`` added
    where it does not end in ``.``, ``?``, ``"`` or ``'``, double quotes turned into single ones (so the text cannot
    close the prompt's quote), and a final ``?`` turned into ``.``. Off unless chosen (a method spec's ``+norm``)."""
    if text and text[-1] not in ".?\"'":
        text += "."
    text = text.replace('"', "'")
    if text.endswith("?"):
        text = text[:-1] + "."
    return text


@dataclass(frozen=True)
class PromptTemplate:
    """A validated template. ``name`` is the registry name, or ``"custom"`` for a user's template;
    ``normalize_text``: wrapping inserts :func:`reference_text` of the text instead of the text."""

    name: str
    template: str
    normalize_text: bool = False

    @property
    def prefix(self) -> str:
        return self.template.split(PLACEHOLDER, 1)[0]

    @property
    def suffix(self) -> str:
        return self.template.split(PLACEHOLDER, 1)[1]

    def wrap(self, text: str) -> WrappedText:
        """Insert ``text`` (normalised if ``normalize_text``); the result knows where the inserted text sits."""
        text = reference_text(text) if self.normalize_text else text
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
