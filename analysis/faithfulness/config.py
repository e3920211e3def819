"""What a faithfulness run depends on: :class:`FaithfulnessConfig`, validated on construction.

The embedding part (prompt, pooling, layer, max length) is an :class:`~core.encoding.setting.EmbeddingSetting`;
the CLI resolves it from the adapter's trained setting and the user's choices. The peak layer of
``attention_peak`` is an argument: :func:`peak_layer_from_report` reads it from an attention report the caller
names (the CLI names the committed one); nothing here reads the checkout's ``results/``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from core.encoding.setting import EmbeddingSetting
from core.models.registry import DEFAULT_MODEL
from core.runtime.arguments import option
from core.runtime.device import DEVICE_HELP
from core.runtime.errors import ConfigError

__all__ = [
    "DEFAULT_TASKS",
    "MEASURES",
    "METHODS",
    "REPORT_MAX_LENGTH",
    "FaithfulnessConfig",
    "Measure",
    "Method",
    "default_embedding",
    "peak_layer_from_report",
]

Method = Literal["attention_last", "attention_peak", "rollout", "integrated_gradients", "gradient_x_input", "random"]
METHODS: tuple[str, ...] = get_args(Method)
Measure = Literal["deletion", "insertion", "sim_deletion", "sim_insertion"]
MEASURES: tuple[str, ...] = get_args(Measure)
# Not emoji-names: its names have 1-2 content tokens, where every ranking removes the same tokens and all methods tie.
DEFAULT_TASKS = ("trec-fine", "wordnet-glosses")
# Tokens read per text unless the user sets another length (the adapter's trained length is not used here).
REPORT_MAX_LENGTH = 128
# Fields that change where or how fast results are written, not a per-text result: outside the digest.
_NOT_DIGESTED = ("out", "chunk", "bootstrap", "png", "device", "embedding", "prefix_reuse")


def default_embedding() -> EmbeddingSetting:
    """The shipped recipe at :data:`REPORT_MAX_LENGTH` tokens."""
    return EmbeddingSetting(max_length=REPORT_MAX_LENGTH)


@dataclass(frozen=True)
class FaithfulnessConfig:
    """Everything a faithfulness run depends on; the CLI's options come from these fields.

    Invariants after construction: ``tasks`` and ``methods`` are non-empty tuples, every method is one of
    :data:`METHODS`, ``embedding`` uses the plain method (tokens are cut out of the prompt-wrapped text), and the
    counts are in range. ``peak_layer=None`` means the model's last layer.
    """

    model: str = option(DEFAULT_MODEL, help="model name or folder")
    adapter: str | None = option(None, help="LoRA adapter folder; without it base only")
    embedding: EmbeddingSetting = field(default_factory=default_embedding)
    tasks: tuple[str, ...] = option(DEFAULT_TASKS, help="local or transfer tasks, or PATH[:TEXTCOL[:LABELCOL]] files")
    n: int = option(300, help="texts sampled per task")
    seed: int = option(0, help="seed of the sample, the random orders and the bootstrap")
    k: int = option(5, help="content tokens removed / inserted at most")
    methods: tuple[str, ...] = option(METHODS, help="explanation methods compared: " + ", ".join(METHODS))
    random_seeds: int = option(1, help="orders of the random floor per text")
    peak_layer: int | None = option(None, help="decoder layer whose attention attention_peak ranks by")
    ig_steps: int = option(8, help="IG steps of the first (whole-path) Gauss-Legendre segment")
    ig_max_steps: int = option(128, help="IG steps per text at most (segments above the tolerance are halved)")
    ig_tolerance: float = option(0.05, help="IG completeness error allowed, relative to f(text) - f(baseline)")
    # Converged IG costs many forward and backward passes per text; the other methods run on every text.
    ig_texts: int = option(10, help="IG on the first N sampled texts of each task (0: all)")
    chunk: int = option(32, help="texts scored and perturbed per batch and per resume checkpoint")
    bootstrap: int = option(2000, help="bootstrap resamples of the confidence intervals")
    out: str = option("results/faithfulness", help="folder of report.json, records.jsonl and the figures")
    png: bool = option(True, help="PNG beside the HTML figures (needs chromium; HTML is always written)")
    device: str = option("auto", help=DEVICE_HELP)
    prefix_reuse: bool = option(
        True, help="run a prefix shared with the original (or the template's) once; exact, off for comparison"
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "methods", tuple(self.methods))
        if not isinstance(self.embedding, EmbeddingSetting):
            raise ConfigError(f"embedding must be an EmbeddingSetting, not {type(self.embedding).__name__}.")
        if self.embedding.method != "plain":
            raise ConfigError(
                f"The faithfulness report cuts tokens out of a prompt-wrapped text, so it needs the plain method, "
                f"not {self.embedding.method!r}; drop --method."
            )
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"Unknown method(s) {', '.join(unknown)}; choose from: {', '.join(METHODS)}.")
        if not self.methods:
            raise ConfigError(f"No method given; choose from: {', '.join(METHODS)}.")
        if not self.tasks:
            raise ConfigError("No task given; name local or transfer tasks, or text files, with --tasks.")
        if self.k <= 0:
            raise ConfigError(f"K must be at least 1 (content tokens removed per curve), got {self.k}.")
        if self.n < 2:
            raise ConfigError(f"--n must be at least 2 texts per task for the statistics, got {self.n}.")
        if self.random_seeds < 1:
            raise ConfigError(f"--random-seeds must be at least 1, got {self.random_seeds}.")
        if self.chunk < 1 or self.ig_steps < 2 or self.ig_max_steps < self.ig_steps or self.ig_tolerance <= 0:
            raise ConfigError("--chunk must be >= 1, 2 <= --ig-steps <= --ig-max-steps and --ig-tolerance > 0.")
        if self.ig_texts < 0:
            raise ConfigError(f"--ig-texts must be >= 0 (0: every text), got {self.ig_texts}.")

    def settings(self) -> dict[str, Any]:
        """The config as flat JSON-ready values: the embedding's prompt, pooling, layer and max length beside the
        other fields (``out`` left out)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("out", "embedding")}
        embedding = self.embedding.to_dict()
        return {**values, **{key: embedding[key] for key in ("prompt", "pooling", "max_length")}}

    def digest(self) -> str:
        """Hash of everything that changes a per-text result (not where it is written, nor the batching)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in _NOT_DIGESTED}
        values |= {key: value for key, value in self.embedding.to_dict().items() if key != "method"}
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=list).encode()).hexdigest()[:16]


def peak_layer_from_report(path: str | Path, model: str) -> int | None:
    """The layer where an attention report (``python -m analysis.attention``) found the largest content-attention
    shift, when that report is ``model``'s; None when the file is absent, unreadable or another model's."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or (report.get("settings") or {}).get("model") != model:
        return None
    top = ((report.get("shift") or {}).get("top_layers") or [{}])[0].get("layer")
    return int(top) if isinstance(top, int) else None
