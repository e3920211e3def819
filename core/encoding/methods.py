"""Training-free embedding methods: a ``method`` setting beside prompt, pooling and layer.

- ``plain``: the prompt wraps the text once; pooling reads the whole wrapped text (the default).
- ``echo`` (Springer et al. 2024, "Repetition improves language model embeddings"): a template with
  ``{text}`` twice; pooling reads only the tokens of the second copy, each of which has seen the whole text.
  The first copy's tokens get the role ``FIRST_COPY``, so roles tell the copies apart.
- ``tp``, token prepending (Fu et al. 2024, arXiv 2412.11556): a placeholder token sits before the text
  (``<PST>`` in the template); before each decoder layer ``start..exit-1`` its hidden state is replaced by
  the previous layer's state at the last token, so the text's early tokens can read a summary of the whole.
  ``exit`` is the reference code's ``tp_exiting_index`` (the first layer left alone); the layer the vector is
  read at is the encoder's ``layer`` setting (the paper's "early exit", e.g. 27 of Llama-2-7B's 32 layers).
- ``metaeol`` (Lei et al. 2024, arXiv 2402.18458) and ``ensemble``: one plain pass per prompt, the vector
  the mean of the prompts' vectors (MetaEOL: the paper's eight task-framed prompts, last-token pooling;
  ``metaeol-short``: shorter paraphrases of them without the closing quote).

Each method's default template is its published form (``TEMPLATE_FORMS`` names every form); the PromptEOL
family's prompts end ``in one word:"`` (a quote opened after the colon), the ``-noquote`` forms end ``in one word:``.
``+norm`` after a spec turns on the reference text normalisation (:func:`reference_text`) of the methods that
publish one (PromptEOL prompts, token prepending, MetaEOL); it is off unless chosen and recorded in the settings.

Spec strings (CLI, grid): ``plain``, ``echo``, ``tp`` or ``tp:START-EXIT`` (``tp-noquote[:START-EXIT]``: with the
``tp-noquote`` template), ``metaeol``, ``metaeol-short``,
``ensemble:eol+summarize+cluster``, each optionally ending ``+norm``; :func:`parse_method` reads them,
``Method.spec`` writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import ClassVar, Literal, get_args

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from core.encoding.prompts import (
    FORMER_NAMES,
    PLACEHOLDER,
    PROMPTS,
    PromptTemplate,
    WrappedText,
    reference_text,
    resolve_prompt,
)
from core.encoding.roles import TEXT_ROLES, Role
from core.models.architecture import decoder_layers
from core.runtime.errors import ConfigError

MethodKind = Literal["plain", "echo", "tp", "metaeol", "metaeol-short", "ensemble"]
METHOD_KINDS: tuple[str, ...] = get_args(MethodKind)
METHOD_DESCRIPTIONS: dict[str, str] = {
    "plain": "the prompt wraps the text once (today's behaviour)",
    "echo": "the text twice; pooling reads the second copy only (Springer et al. 2024)",
    "tp": "token prepending: a placeholder before the text carries the last token's state (Fu et al. 2024)",
    "metaeol": "mean of the last-token vectors of the eight task-framed one-word prompts (Lei et al. 2024)",
    "metaeol-short": "MetaEOL with shorter paraphrased prompts that do not open the closing quote",
    "ensemble": "mean of the vectors of a list of prompts",
}

ECHO_TEMPLATE = "Rewrite the sentence: {text}\nRewritten sentence: {text}"
# The echo paper's zero-shot template (Springer et al. 2024, as its author gives it in echo-embeddings issue #8).
ECHO_PAPER_TEMPLATE = "Rewrite the following paragraph: {text}. The rewritten paragraph: {text}"
ECHO_TEMPLATES: dict[str, str] = {"echo": ECHO_TEMPLATE, "echo-paper": ECHO_PAPER_TEMPLATE}
TP_MARKER = "<PST>"
# As published (Fu et al. 2024): PromptEOL with the placeholder before the quoted text, closing quote opened.
TP_TEMPLATE = 'This sentence: <PST> "{text}" means in one word:"'
TP_TEMPLATES: dict[str, str] = {"tp": TP_TEMPLATE, "tp-noquote": TP_TEMPLATE.removesuffix('"')}
# "_" reads as a blank to fill and is one token (" _") in SmolLM2's and Gemma's tokenizers and in any
# byte-level BPE; the reference code adds a new token with a random embedding instead, which would change
# the model's weights. Any string the tokenizer keeps as one token works (checked when the encoder is made).
TP_PLACEHOLDER = "_"
# Fraction of the decoder stack that token prepending spans by default: the reference configs use layers
# 1..2-6 of 28-42 (about a fifth).
TP_DEFAULT_DEPTH = 0.2

# The eight prompts of the MetaEOL paper (Lei et al. 2024), as its evaluation code gives them: each frames the text
# for one task and asks for one word, opening the closing quote. Spacing (" : ") is the paper's.
_METAEOL_TASKS: tuple[tuple[str, str, str], ...] = (
    (
        "you're presented with a text excerpt. Your task is to categorize the excerpt into a broad category such as "
        "'Education', 'Technology', 'Health', 'Business', 'Environment', 'Politics', or 'Culture'. These categories "
        "help in organizing content for better accessibility and targeting.",
        "For this task",
        "should be classified under one general category",
    ),
    (
        "you're given a statement and you need to determine whether it's presenting an 'Opinion' or a 'Fact'. This "
        "distinction is vital for information verification, educational purposes, and content analysis.",
        "For this task",
        "discriminates between opinion and fact",
    ),
    (
        "you're given a review from an online platform. Your task is to generate a rating for the product based on "
        "the review on a scale of 1-5, where 1 means 'extremely negative' and 5 means 'extremely positive'.",
        "For this task",
        "reflects the sentiment",
    ),
    (
        "you're reading a personal diary entry. Your task is to identify the predominant emotion expressed, such as "
        "joy, sadness, anger, fear, or love.",
        "For this task",
        "conveys the emotion",
    ),
    (
        "you're presented with two sentences. Your task is to assess whether the sentences convey the same meaning. "
        "Use 'identical', 'similar', 'different', or 'unrelated' to describe the relationship.",
        "To enhance the performance of this task",
        "means",
    ),
    (
        "you're given a sentence and a phrase. Your task is to determine if the phrase can be a contextual synonym "
        "within the given sentence. Options include 'yes', 'no', or 'partially'.",
        "To enhance the performance of this task",
        "means",
    ),
    (
        "you're examining a news article. Your task is to extract the most critical fact from the article.",
        "For this task",
        "encapsulates the key fact",
    ),
    (
        "you're reviewing a scientific abstract. Your task is to identify the main entities (e.g., proteins, "
        "diseases) and their relations (e.g., causes, treats).",
        "For this task",
        "highlights the primary entity or relation",
    ),
)
METAEOL_PROMPTS: tuple[str, ...] = tuple(
    f'In this task, {task} {lead}, this sentence : "{{text}}" {asks} in one word:"'
    for task, lead, asks in _METAEOL_TASKS
)
# Shorter paraphrases of the same eight tasks, without the closing quote (``metaeol-short``).
METAEOL_SHORT_PROMPTS: tuple[str, ...] = (
    'Sort texts into broad topics such as education, technology, health, business or politics. This sentence: "{text}" '
    "belongs to one general topic in one word:",
    'Tell opinions from facts. This sentence: "{text}" is an opinion or a fact in one word:',
    'Rate product reviews from very negative to very positive. This sentence: "{text}" expresses a sentiment in '
    "one word:",
    'Name the main emotion of a diary entry, such as joy, sadness, anger or fear. This sentence: "{text}" conveys '
    "the emotion in one word:",
    'Decide whether two sentences mean the same. This sentence: "{text}" means in one word:',
    'Decide whether a phrase can replace another in context. This sentence: "{text}" means in one word:',
    'Extract the key fact of a news article. This sentence: "{text}" states its key fact in one word:',
    'Find the main entity or relation in a scientific abstract. This sentence: "{text}" highlights its main entity '
    "in one word:",
)


# ----- templates


@dataclass(frozen=True)
class EchoTemplate:
    """A template with ``{text}`` twice; wrapping marks the first copy apart and the second as the text."""

    name: str
    template: str
    normalize_text: bool = False

    def wrap(self, text: str) -> WrappedText:
        text = reference_text(text) if self.normalize_text else text
        first, middle, last = self.template.split(PLACEHOLDER)
        second_start = len(first) + len(text) + len(middle)
        return WrappedText(
            first + text + middle + text + last,
            second_start,
            second_start + len(text),
            first_copy=(len(first), len(first) + len(text)),
        )


@dataclass(frozen=True)
class PlaceholderTemplate:
    """A one-``{text}`` template whose ``<PST>`` marker becomes ``placeholder`` on wrapping."""

    name: str
    template: str
    placeholder: str = TP_PLACEHOLDER
    normalize_text: bool = False

    def wrap(self, text: str) -> WrappedText:
        before, after = self.template.split(TP_MARKER)  # validated: the marker comes before {text}
        wrapped = PromptTemplate(self.name, before + self.placeholder + after, self.normalize_text).wrap(text)
        return replace(wrapped, placeholder=(len(before), len(before) + len(self.placeholder)))


Template = PromptTemplate | EchoTemplate | PlaceholderTemplate


# ----- methods


NORM_SUFFIX = "+norm"


def _norm_settings(on: bool) -> dict[str, object]:
    """Cache-key entry for the text normalisation: absent when off, so keys made before it existed still serve."""
    return {"text_normalization": "reference"} if on else {}


@dataclass(frozen=True)
class Plain:
    """One template around the text; ``normalize_text``: the reference text normalisation (``+norm``)."""

    normalize_text: bool = False
    kind: ClassVar[str] = "plain"

    @property
    def spec(self) -> str:
        return "plain" + (NORM_SUFFIX if self.normalize_text else "")

    def template(self, prompt: str | Template) -> PromptTemplate:
        template = resolve_prompt(prompt)
        return replace(template, normalize_text=True) if self.normalize_text else template

    def settings(self) -> dict[str, object]:
        return _norm_settings(self.normalize_text)  # empty by default: plain keeps the keys it had before methods


@dataclass(frozen=True)
class Echo:
    template_text: str = ECHO_TEMPLATE
    kind: ClassVar[str] = "echo"

    def __post_init__(self) -> None:
        count = self.template_text.count(PLACEHOLDER)
        if count != 2:
            raise ConfigError(
                f"An echo template needs {PLACEHOLDER} exactly twice (the text and its repetition), "
                f"{self.template_text!r} has it {count} time(s); e.g. {ECHO_TEMPLATE!r}."
            )

    @property
    def spec(self) -> str:
        return "echo"

    def template(self, prompt: str | Template | None = None) -> EchoTemplate:
        """The echo template: ``prompt`` as a name (``echo``, ``echo-paper``, or a registered prompt) or a template
        with ``{text}`` twice; without it the method's own."""
        text = self.template_text if prompt is None else prompt if isinstance(prompt, str) else prompt.template
        text = ECHO_TEMPLATES.get(text, PROMPTS.get(text, text))
        names = {template: name for name, template in ECHO_TEMPLATES.items()}
        return EchoTemplate(names.get(text, "custom"), Echo(text).template_text)  # validated by Echo

    def settings(self) -> dict[str, object]:
        return {"method": "echo"}  # the template is the key's prompt


@dataclass(frozen=True)
class TokenPrepending:
    """``start``..``exit - 1``: the 0-based decoder layers before which the placeholder is replaced;
    ``exit=None`` resolves to about a fifth of the model's depth (``for_model``)."""

    start: int = 1
    exit: int | None = None
    template_text: str = TP_TEMPLATE
    placeholder: str = TP_PLACEHOLDER
    normalize_text: bool = False
    kind: ClassVar[str] = "tp"

    def __post_init__(self) -> None:
        _check_tp_template(self.template_text)
        if not self.placeholder.strip() or PLACEHOLDER in self.placeholder:
            raise ConfigError(f"The TP placeholder {self.placeholder!r} must be a visible string, e.g. '_'.")
        if self.start < 0 or (self.exit is not None and self.exit < self.start):
            raise ConfigError(
                f"TP layer range {self.start}-{self.exit} is empty backwards: use START-EXIT with 0 <= START <= EXIT."
            )

    @property
    def layers(self) -> range:
        if self.exit is None:
            raise ConfigError("Resolve the TP layer range against a model first (TokenPrepending.for_model).")
        return range(self.start, self.exit)

    @property
    def spec(self) -> str:
        kind = "tp-noquote" if self.template_text == TP_TEMPLATES["tp-noquote"] else "tp"
        spec = f"{kind}:{self.start}-{self.exit}" if self.exit is not None else f"{kind}:{self.start}-"
        return spec + (NORM_SUFFIX if self.normalize_text else "")

    def for_model(self, num_layers: int) -> TokenPrepending:
        exit_ = self.exit if self.exit is not None else max(self.start + 1, round(TP_DEFAULT_DEPTH * num_layers))
        if not 0 <= self.start <= exit_ <= num_layers:
            raise ConfigError(
                f"TP layer range {self.start}-{exit_} is outside this model's {num_layers} decoder layers: "
                f"use START-EXIT with 0 <= START <= EXIT <= {num_layers}, e.g. tp:1-{max(2, num_layers // 5)}."
            )
        return replace(self, exit=exit_)

    def template(self, prompt: str | Template | None = None) -> PlaceholderTemplate:
        if prompt is None:
            text = self.template_text
        else:
            text = prompt.template if not isinstance(prompt, str) else prompt
            text = TP_TEMPLATES.get(text, PROMPTS.get(text, text))
            _check_tp_template(text)
        names = {template: name for name, template in TP_TEMPLATES.items()}
        return PlaceholderTemplate(names.get(text, "custom"), text, self.placeholder, self.normalize_text)

    def settings(self) -> dict[str, object]:
        return {
            "method": "tp",
            "tp_start": self.start,
            "tp_exit": self.exit,
            "tp_placeholder": self.placeholder,
            **_norm_settings(self.normalize_text),
        }


@dataclass(frozen=True)
class Ensemble:
    """The mean of plain vectors over ``prompts`` (names or templates); MetaEOL is one such set."""

    prompts: tuple[str, ...]
    name: Literal["metaeol", "metaeol-short", "ensemble"] = "ensemble"
    normalize_text: bool = False

    def __post_init__(self) -> None:
        if len(self.prompts) < 2:
            raise ConfigError(
                f"An ensemble needs at least two prompts, got {len(self.prompts)}: give a list such as "
                "--prompts eol,summarize,cluster, or use method plain with --prompt for a single one."
            )
        for prompt in self.prompts:
            try:
                resolve_prompt(prompt)
            except ValueError as error:
                raise ConfigError(f"Ensemble prompt: {error}") from None

    @property
    def kind(self) -> str:
        return self.name

    @property
    def spec(self) -> str:
        spec = self.name if self.name != "ensemble" else "ensemble:" + "+".join(self.prompts)
        return spec + (NORM_SUFFIX if self.normalize_text else "")

    @property
    def plain(self) -> Plain:
        """The plain method each prompt's pass runs with (it carries the text normalisation)."""
        return Plain(self.normalize_text)

    def templates(self) -> list[PromptTemplate]:
        return [self.plain.template(prompt) for prompt in self.prompts]

    def settings(self) -> dict[str, object]:
        # metaeol-short keys as "metaeol": its cells were computed while metaeol named these prompts, and the prompts
        # in the key already tell the two forms apart.
        return {
            "method": "metaeol" if self.name == "metaeol-short" else self.name,
            "prompts": [template.template for template in self.templates()],
            **_norm_settings(self.normalize_text),
        }

    def average(self, grids: Sequence[dict[tuple[str, str], np.ndarray]]) -> dict[tuple[str, str], np.ndarray]:
        """Per (pooling, layer), the mean over prompts of the raw (unnormalised) vectors, as MetaEOL does."""
        return {
            combo: np.mean([grid[combo] for grid in grids], axis=0, dtype=np.float64).astype(np.float32)
            for combo in grids[0]
        }


Method = Plain | Echo | TokenPrepending | Ensemble
PLAIN = Plain()
METAEOL = Ensemble(METAEOL_PROMPTS, "metaeol")
METAEOL_SHORT = Ensemble(METAEOL_SHORT_PROMPTS, "metaeol-short")
# Every named template form of every method: the form the name stands for now.
TEMPLATE_FORMS: dict[str, str] = {**PROMPTS, **ECHO_TEMPLATES, **TP_TEMPLATES}
# Forms whose names changed meaning when the published forms took the short names (see ``stored_prompt_name``).
_FORMER_FORMS: dict[object, str] = {
    **FORMER_NAMES,
    TP_TEMPLATES["tp-noquote"]: "tp-noquote",
    METAEOL_SHORT_PROMPTS: "metaeol-short",
}


def _check_tp_template(text: str) -> None:
    marker, placeholder = text.find(TP_MARKER), text.find(PLACEHOLDER)
    if marker < 0 or text.count(TP_MARKER) != 1 or text.count(PLACEHOLDER) != 1 or placeholder < marker:
        raise ConfigError(
            f"A token-prepending template needs the placeholder {TP_MARKER} once, before the one {PLACEHOLDER}; "
            f"{text!r} does not have it. E.g. {TP_TEMPLATE!r}."
        )


def parse_method(spec: str | Method) -> Method:
    """``plain``, ``echo``, ``tp``, ``tp:START-EXIT`` (and ``tp-noquote[:START-EXIT]``), ``metaeol``,
    ``metaeol-short``, ``ensemble:P1+P2+...``, each optionally followed by ``+norm`` (the reference text
    normalisation) -> a method."""
    if isinstance(spec, (Plain, Echo, TokenPrepending, Ensemble)):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"A method is a spec string such as 'tp:1-6', not a {type(spec).__name__}.")
    text = spec.strip()
    if text.lower().endswith(NORM_SUFFIX):
        method = parse_method(text[: -len(NORM_SUFFIX)])
        if isinstance(method, Echo):
            raise ConfigError(
                f"{spec!r}: echo publishes no text normalisation; drop '{NORM_SUFFIX}' (it applies to plain, tp, "
                "metaeol and ensembles)."
            )
        return replace(method, normalize_text=True)
    kind, _, argument = text.partition(":")
    kind = kind.strip().lower()
    if kind == "plain" and not argument:
        return PLAIN
    if kind == "echo" and not argument:
        return Echo()
    if kind == "metaeol" and not argument:
        return METAEOL
    if kind == "metaeol-short" and not argument:
        return METAEOL_SHORT
    if kind in TP_TEMPLATES:  # tp, or tp-noquote: the same method with the template of that name
        template = TP_TEMPLATES[kind]
        if not argument:
            return TokenPrepending(template_text=template)
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d*)\s*", argument)
        if match:
            exit_ = int(match.group(2)) if match.group(2) else None
            return TokenPrepending(int(match.group(1)), exit_, template_text=template)
        raise ConfigError(f"Bad TP layer range {argument!r} in {spec!r}: write tp:START-EXIT, e.g. tp:1-6.")
    if kind == "ensemble":
        return Ensemble(tuple(part.strip() for part in argument.split("+") if part.strip()))
    raise ConfigError(
        f"Unknown method {spec!r}: use plain, echo, tp or tp:START-EXIT, tp-noquote, metaeol, metaeol-short, or "
        f"ensemble:P1+P2 (prompt names or templates joined by '+'), each optionally ending {NORM_SUFFIX!r}."
    )


def method_template(method: Method, prompt: str | Template | None, default: str | Template) -> Template | None:
    """The template a method wraps texts with: an explicit ``prompt`` (validated for the method), else the
    method's own (echo, tp), else ``default`` (plain); ``None`` for an ensemble, which has several."""
    if isinstance(method, Ensemble):
        if prompt is not None:
            raise ConfigError(
                f"The {method.name} method brings its own prompts; drop the prompt setting, or list prompts "
                "in the method (ensemble:eol+summarize)."
            )
        return None
    if isinstance(method, Plain):
        return method.template(prompt if prompt is not None else default)
    return method.template(prompt)


# ----- what the encoder asks of a method


def pooled_span(roles: Sequence[Role], length: int) -> tuple[int, int]:
    """Token range ``[first, end)`` that pooling reads: the second copy under echo (its roles are the text
    roles while the first copy's are ``FIRST_COPY``), else the whole wrapped text."""
    if Role.FIRST_COPY not in roles:
        return 0, length
    text = [index for index, role in enumerate(roles[:length]) if role in TEXT_ROLES]
    return text[0], text[-1] + 1


def placeholder_index(roles: Sequence[Role], template: Template) -> int:
    """Position of the placeholder token (``-1`` where the template has none); one token, or a clear error."""
    found = [index for index, role in enumerate(roles) if role == Role.PLACEHOLDER]
    if not isinstance(template, PlaceholderTemplate):
        return -1
    if len(found) != 1:
        raise ConfigError(
            f"The TP placeholder {template.placeholder!r} became {len(found)} tokens with this tokenizer; "
            "choose a placeholder it keeps as one token (e.g. '_', '*' or '#')."
        )
    return found[0]


@contextmanager
def token_prepending(
    backbone: torch.nn.Module,
    layers: range,
    placeholder: Int[Tensor, " batch"],
    last: Int[Tensor, " batch"],
) -> Iterator[list[str]]:
    """Within the block, before each decoder layer in ``layers``, the placeholder's hidden state becomes the
    last token's state of the layer before; yields the hook names (``layers.i.token_prepending``).

    Hooks are forward pre-hooks on the decoder layers, removed on leaving whatever happens. The replaced
    input is a copy, so the previous layer's output (as recorded in ``hidden_states``) is left as it was.
    """
    modules = decoder_layers(backbone)
    rows = torch.arange(placeholder.shape[0])

    def replace_placeholder(_module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden = hidden.index_put((rows, placeholder), hidden[rows, last])
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handles, names = [], []
    try:
        for index in layers:
            handles.append(modules[index].register_forward_pre_hook(replace_placeholder, with_kwargs=True))
            names.append(f"layers.{index}.token_prepending")
        yield names
    finally:
        for handle in handles:
            handle.remove()


def backbone_hooks(method: Method, backbone: torch.nn.Module, batch: dict[str, Tensor]):
    """The context manager to run the backbone in for ``method`` (token prepending's hooks, or nothing)."""
    if isinstance(method, TokenPrepending) and len(method.layers):
        return token_prepending(backbone, method.layers, batch["placeholder"], batch["start"] + batch["length"] - 1)
    return _nothing()


@contextmanager
def _nothing() -> Iterator[list[str]]:
    yield []


def check_method_for_model(method: Method, num_layers: int, is_causal: bool) -> Method:
    """The method resolved for a model (TP's default range) and validated against it."""
    if not isinstance(method, Plain) and not is_causal:
        raise ConfigError(
            f"Method {method.spec} is for decoder LMs; a bidirectional encoder already sees the whole text: "
            "use method plain."
        )
    return method.for_model(num_layers) if isinstance(method, TokenPrepending) else method


def stored_prompt_name(prompt: dict[str, object]) -> str:
    """The current name of a stored prompt record (``{"name", "template"}`` or an ensemble's ``templates``).

    A record made while ``eol``, ``cot``, ``knowledge``, ``tp`` and ``metaeol`` named the quote-less forms keeps its
    old name beside its template(s); it is labelled by the form's current name (``eol-noquote``, ...), so one name
    never stands for two forms in a table. Other records keep their name.
    """
    name = str(prompt.get("name"))
    templates = prompt.get("templates")
    form = tuple(templates) if isinstance(templates, list) else prompt.get("template")
    current = METAEOL_PROMPTS if name == "metaeol" else TEMPLATE_FORMS.get(name)
    if form is not None and current is not None and form != current and form in _FORMER_FORMS:
        return _FORMER_FORMS[form]
    return name
