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
  the mean of the prompts' vectors (MetaEOL: task-framed "... in one word:" prompts, last-token pooling).

Spec strings (CLI, grid): ``plain``, ``echo``, ``tp`` or ``tp:START-EXIT``, ``metaeol``,
``ensemble:eol+summarize+cluster``; :func:`parse_method` reads them, ``Method.spec`` writes them.
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

from core.encoding.prompts import PLACEHOLDER, PROMPTS, PromptTemplate, WrappedText, resolve_prompt
from core.encoding.roles import TEXT_ROLES, Role
from core.models.architecture import decoder_layers
from core.runtime.errors import ConfigError

MethodKind = Literal["plain", "echo", "tp", "metaeol", "ensemble"]
METHOD_KINDS: tuple[str, ...] = get_args(MethodKind)
METHOD_DESCRIPTIONS: dict[str, str] = {
    "plain": "the prompt wraps the text once (today's behaviour)",
    "echo": "the text twice; pooling reads the second copy only (Springer et al. 2024)",
    "tp": "token prepending: a placeholder before the text carries the last token's state (Fu et al. 2024)",
    "metaeol": "mean of the last-token vectors of task-framed one-word prompts (Lei et al. 2024)",
    "ensemble": "mean of the vectors of a list of prompts",
}

ECHO_TEMPLATE = "Rewrite the sentence: {text}\nRewritten sentence: {text}"
TP_MARKER = "<PST>"
TP_TEMPLATE = 'This sentence: <PST> "{text}" means in one word:'
# "_" reads as a blank to fill and is one token (" _") in SmolLM2's and Gemma's tokenizers and in any
# byte-level BPE; the reference code adds a new token with a random embedding instead, which would change
# the model's weights. Any string the tokenizer keeps as one token works (checked when the encoder is made).
TP_PLACEHOLDER = "_"
# Fraction of the decoder stack that token prepending spans by default: the reference configs use layers
# 1..2-6 of 28-42 (about a fifth).
TP_DEFAULT_DEPTH = 0.2

# MetaEOL's idea in our words: prompts framing the text for different tasks, each asking for one word.
METAEOL_PROMPTS: tuple[str, ...] = (
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

    def wrap(self, text: str) -> WrappedText:
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

    def wrap(self, text: str) -> WrappedText:
        before, after = self.template.split(TP_MARKER)  # validated: the marker comes before {text}
        wrapped = PromptTemplate(self.name, before + self.placeholder + after).wrap(text)
        return replace(wrapped, placeholder=(len(before), len(before) + len(self.placeholder)))


Template = PromptTemplate | EchoTemplate | PlaceholderTemplate


# ----- methods


@dataclass(frozen=True)
class Plain:
    kind: ClassVar[str] = "plain"

    @property
    def spec(self) -> str:
        return "plain"

    def template(self, prompt: str | Template) -> PromptTemplate:
        return resolve_prompt(prompt)

    def settings(self) -> dict[str, object]:
        return {}  # nothing added: plain keeps the cache keys it had before methods existed


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
        if prompt is None:
            return EchoTemplate("echo", self.template_text)
        text = prompt if isinstance(prompt, str) else prompt.template
        return EchoTemplate("custom", Echo(PROMPTS.get(text, text)).template_text)  # validated by Echo

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
        return f"tp:{self.start}-{self.exit}" if self.exit is not None else f"tp:{self.start}-"

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
            text = prompt.template if not isinstance(prompt, str) else PROMPTS.get(prompt, prompt)
            _check_tp_template(text)
        return PlaceholderTemplate("tp" if text == TP_TEMPLATE else "custom", text, self.placeholder)

    def settings(self) -> dict[str, object]:
        return {"method": "tp", "tp_start": self.start, "tp_exit": self.exit, "tp_placeholder": self.placeholder}


@dataclass(frozen=True)
class Ensemble:
    """The mean of plain vectors over ``prompts`` (names or templates); MetaEOL is one such set."""

    prompts: tuple[str, ...]
    name: Literal["metaeol", "ensemble"] = "ensemble"

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
        return "metaeol" if self.name == "metaeol" else "ensemble:" + "+".join(self.prompts)

    def templates(self) -> list[PromptTemplate]:
        return [resolve_prompt(prompt) for prompt in self.prompts]

    def settings(self) -> dict[str, object]:
        return {"method": self.name, "prompts": [template.template for template in self.templates()]}

    def average(self, grids: Sequence[dict[tuple[str, str], np.ndarray]]) -> dict[tuple[str, str], np.ndarray]:
        """Per (pooling, layer), the mean over prompts of the raw (unnormalised) vectors, as MetaEOL does."""
        return {
            combo: np.mean([grid[combo] for grid in grids], axis=0, dtype=np.float64).astype(np.float32)
            for combo in grids[0]
        }


Method = Plain | Echo | TokenPrepending | Ensemble
PLAIN = Plain()
METAEOL = Ensemble(METAEOL_PROMPTS, "metaeol")


def _check_tp_template(text: str) -> None:
    marker, placeholder = text.find(TP_MARKER), text.find(PLACEHOLDER)
    if marker < 0 or text.count(TP_MARKER) != 1 or text.count(PLACEHOLDER) != 1 or placeholder < marker:
        raise ConfigError(
            f"A token-prepending template needs the placeholder {TP_MARKER} once, before the one {PLACEHOLDER}; "
            f"{text!r} does not have it. E.g. {TP_TEMPLATE!r}."
        )


def parse_method(spec: str | Method) -> Method:
    """``plain``, ``echo``, ``tp``, ``tp:START-EXIT``, ``metaeol``, ``ensemble:P1+P2+...`` -> a method."""
    if isinstance(spec, (Plain, Echo, TokenPrepending, Ensemble)):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"A method is a spec string such as 'tp:1-6', not a {type(spec).__name__}.")
    kind, _, argument = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "plain" and not argument:
        return PLAIN
    if kind == "echo" and not argument:
        return Echo()
    if kind == "metaeol" and not argument:
        return METAEOL
    if kind == "tp":
        if not argument:
            return TokenPrepending()
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d*)\s*", argument)
        if match:
            return TokenPrepending(int(match.group(1)), int(match.group(2)) if match.group(2) else None)
        raise ConfigError(f"Bad TP layer range {argument!r} in {spec!r}: write tp:START-EXIT, e.g. tp:1-6.")
    if kind == "ensemble":
        return Ensemble(tuple(part.strip() for part in argument.split("+") if part.strip()))
    raise ConfigError(
        f"Unknown method {spec!r}: use plain, echo, tp or tp:START-EXIT, metaeol, or ensemble:P1+P2 "
        "(prompt names or templates joined by '+')."
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
