"""The embedding setting: how a text becomes a vector (method, prompt, pooling, layer, max length).

One frozen type, validated on construction, with one set of defaults: the shipped recipe's
(``adapters/smollm2-135m-embed.json``: PromptEOL without the closing quote, ``eol-noquote``, last-token pooling, the
final layer).
The encoder, training, export, the reports, the grid and the pages all take it; each builds it with
:meth:`EmbeddingSetting.resolve` from the same inputs (an adapter's trained setting plus what the user chose).

What needs the model (a layer index in range, a pooling an encoder model supports, a TP range within its depth)
is checked by the encoder when it takes the setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.encoding.methods import Echo, Ensemble, Plain, TokenPrepending, method_template, parse_method
from core.encoding.pooling import POOLING_MODES, LayerChoice, PoolingMode
from core.runtime.arguments import option
from core.runtime.errors import ConfigError

if TYPE_CHECKING:  # the type only: the registry loads models, this module describes settings
    from core.models.registry import LoadedModel

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_PROMPT",
    "EmbeddingSetting",
    "default_pooling",
    "model_setting",
    "pooling_note",
    "published_poolings",
]

# The quote-less PromptEOL form, not the published ``eol``: chosen by measurement on the tracks (docs/results.md, "The
# closing quote"), and the form the shipped adapters were trained with.
DEFAULT_PROMPT = "eol-noquote"
# Inference reads up to this many tokens unless an adapter was trained with fewer (its setting carries its own).
DEFAULT_MAX_LENGTH = 512
SETTING_FIELDS = ("method", "prompt", "pooling", "layer", "max_length")


def default_pooling(method: str, prompt: str | None) -> PoolingMode:
    """The pooling a method was published with: the last token for prompt-based methods (PromptEOL, token
    prepending, MetaEOL), the mean over the text for echo (its second copy) and for a plain text without a prompt."""
    parsed = parse_method(method)
    if isinstance(parsed, Echo):
        return "mean"
    if isinstance(parsed, Plain) and (prompt or DEFAULT_PROMPT) == "none":
        return "mean"
    return "last"


def published_poolings(method: str, prompt: str | None) -> tuple[PoolingMode, ...]:
    """The poolings the method's paper used (empty where there is no paper: other prompts, ensembles).

    PromptEOL (``eol``, ``cot``, ``knowledge`` and their ``-noquote`` forms), token prepending and MetaEOL read the
    last token; echo averages the second copy (``mean``), and its repository's last-token embedding is the EOS state
    after the second copy (``eos`` here, not ``last``).
    """
    parsed = parse_method(method)
    if isinstance(parsed, Echo):
        return ("mean", "eos")
    if isinstance(parsed, TokenPrepending) or (isinstance(parsed, Ensemble) and parsed.name != "ensemble"):
        return ("last",)
    name = (prompt or DEFAULT_PROMPT).removesuffix("-noquote")
    if isinstance(parsed, Plain) and name in ("eol", "cot", "knowledge"):
        return ("last",)
    return ()


def pooling_note(method: str, prompt: str | None, pooling: str) -> str | None:
    """A sentence naming a pooling the method's paper did not use (for an output's settings), else None."""
    published = published_poolings(method, prompt)
    if not published or pooling in published:
        return None
    spec = parse_method(method).spec
    note = f"pooling {pooling!r} is not the published one for {spec} (published: {', '.join(published)})"
    if isinstance(parse_method(method), Echo) and pooling == "last":
        note += "; echo's last-token embedding is the EOS state: --pooling eos"
    return note


@dataclass(frozen=True)
class EmbeddingSetting:
    """How a text becomes a vector. Invariants after construction: ``method`` is a canonical method spec,
    ``prompt`` is a registry name or a template valid for the method (``None`` only where the method brings its
    own: echo, tp, ensembles), ``pooling`` is a known mode, ``layer`` is a :class:`LayerChoice` and
    ``max_length >= 4``.

    ``prompt=None`` with ``method="plain"`` means the default prompt; ``pooling=None`` means the method's
    published pooling (:func:`default_pooling`). Both are resolved on construction, so equal settings compare equal.
    """

    method: str = option("plain", help="plain, echo, tp or tp:START-EXIT, metaeol, or ensemble:P1+P2")
    prompt: str | None = option(
        None, help=f"a prompt name or a template with {{text}} (default: {DEFAULT_PROMPT}; echo and tp bring theirs)"
    )
    pooling: PoolingMode | None = option(
        None, help="how token states become one vector (default: the method's published pooling)", choices=POOLING_MODES
    )
    layer: LayerChoice = option(LayerChoice(), help="hidden-state index (-1 = final, 0 = embeddings) or lastK")
    max_length: int = option(DEFAULT_MAX_LENGTH, help="tokens read per text (longer texts are truncated)")

    def __post_init__(self) -> None:
        parsed = parse_method(self.method)
        prompt = self.prompt
        if prompt is None and isinstance(parsed, Plain):
            prompt = DEFAULT_PROMPT
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError(f"A prompt is a name or a template string, not a {type(prompt).__name__}.")
        if isinstance(parsed, (Plain, Echo, TokenPrepending)) or prompt is not None:
            method_template(parsed, prompt, DEFAULT_PROMPT)  # raises ConfigError for a template the method cannot use
        pooling = self.pooling if self.pooling is not None else default_pooling(parsed.spec, prompt)
        if pooling not in POOLING_MODES:
            raise ConfigError(f"Unknown pooling {pooling!r}; choose one of: {', '.join(POOLING_MODES)}.")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 4:
            raise ConfigError(f"max_length={self.max_length!r} is too small; use at least 4 tokens.")
        object.__setattr__(self, "method", parsed.spec)
        object.__setattr__(self, "prompt", prompt)
        object.__setattr__(self, "pooling", pooling)
        object.__setattr__(self, "layer", LayerChoice.parse(self.layer))

    @property
    def parsed_method(self) -> Plain | Echo | TokenPrepending | Ensemble:
        return parse_method(self.method)

    @property
    def pooling_note(self) -> str | None:
        """Names the pooling when the method's paper did not use it (:func:`pooling_note`), else None."""
        return pooling_note(self.method, self.prompt, str(self.pooling))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``layer`` as its string form (``"-1"``, ``"last4"``)."""
        return {"method": self.method, "prompt": self.prompt, "pooling": self.pooling, "layer": str(self.layer),
                "max_length": self.max_length}  # fmt: skip

    def replace(self, **changes: Any) -> EmbeddingSetting:
        """A copy with ``changes`` (validated again). Changing the method drops a prompt and pooling that were not
        also given, so the new method starts from its own defaults rather than the old method's."""
        if "method" in changes and parse_method(changes["method"]).spec != self.method:
            changes.setdefault("prompt", None)
            changes.setdefault("pooling", None)
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EmbeddingSetting:
        """The setting stored in ``values`` (a card, adapter metadata, a report); other keys are ignored."""
        return cls(**{key: values[key] for key in SETTING_FIELDS if values.get(key) is not None})

    @classmethod
    def resolve(cls, trained: Mapping[str, Any] | None = None, **chosen: Any) -> EmbeddingSetting:
        """The one way every CLI, report and page builds a setting.

        Args:
            trained: an adapter's metadata (its trained prompt, pooling, layer and max length), or None.
            chosen: what the user set; ``None`` values count as not set.

        Returns:
            The adapter's trained setting (or the defaults) with the user's choices applied; choosing another
            method than the adapter's starts that method from its own prompt and pooling unless those are chosen too.
        """
        base = cls.from_dict(trained) if trained else cls()
        changes = {key: value for key, value in chosen.items() if value is not None}
        unknown = sorted(set(changes) - set(SETTING_FIELDS))
        if unknown:
            raise TypeError(f"not settings of an embedding: {', '.join(unknown)}")
        return base.replace(**changes) if changes else base


def model_setting(loaded: LoadedModel, **chosen: Any) -> EmbeddingSetting:
    """The setting for ``loaded``: :meth:`EmbeddingSetting.resolve` over its adapter's trained setting.

    A bidirectional encoder (MiniLM) has no last token to pool and no instruction following: where the user chose
    no prompt or pooling it gets the text alone, mean-pooled (the clustering baseline's setting).
    """
    if not loaded.is_causal and chosen.get("method") in (None, "plain"):
        chosen = {"prompt": "none", "pooling": "mean", **{k: v for k, v in chosen.items() if v is not None}}
    return EmbeddingSetting.resolve(loaded.adapter_metadata or None, **chosen)
