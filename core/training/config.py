"""The settings of a training run: :class:`TrainConfig`, frozen and validated on construction.

Its defaults are the shipped recipe (``adapters/smollm2-135m-embed.json``), so ``python -m core.train --pairs P
--out O`` with no other flag makes the recommended adapter. The embedding part (prompt, pooling, layer, max length)
is an :class:`~core.encoding.setting.EmbeddingSetting`; saved (checkpoints, ``embedding_lens.json``, cards) the
config is one flat JSON object, as runs written before the setting type had it, and :meth:`TrainConfig.from_dict`
reads both.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.encoding.methods import Plain
from core.encoding.setting import SETTING_FIELDS, EmbeddingSetting
from core.models.registry import DEFAULT_MODEL
from core.runtime.arguments import option
from core.runtime.device import Precision
from core.runtime.errors import TrainError

__all__ = ["PAPER_TARGETS", "RESUME_FREE", "TRAIN_MAX_LENGTH", "TrainConfig"]

PAPER_TARGETS = ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Training pairs are short (verses, sentences): 64 tokens hold nearly all of them and keep a CPU step cheap.
TRAIN_MAX_LENGTH = 64
# Settings that may change between an interrupted run and its resumption without changing the result.
RESUME_FREE = frozenset({"checkpoint_every", "keep_checkpoints", "progress", "device"})
PRECISIONS = typing.get_args(Precision)


def _train_setting() -> EmbeddingSetting:
    return EmbeddingSetting(max_length=TRAIN_MAX_LENGTH)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run; saved flat (:meth:`to_dict`) in checkpoints, the adapter metadata and the card.

    Invariants after construction: ``embedding`` is an :class:`EmbeddingSetting` of the plain method,
    ``target_modules`` a non-empty tuple of names, numbers in their ranges (``batch_size >= 2``, ``steps >= 1``,
    ``lr > 0``, ``temperature > 0``, ``0 <= lora_dropout < 1``...). What depends on the machine or the model (the
    device, the number of processes, the model's depth) is checked by the :class:`~core.training.trainer.Trainer`.
    """

    pairs: str = option("bible", help='a pair file (JSONL/TSV), or "bible" for KJV/WEB verse pairs')
    n_pairs: int | None = option(None, help="train on a seeded sample of this many pairs (default: all)")
    base_model: str = option(DEFAULT_MODEL, help="a packaged model name, a local model folder or a hub id")
    embedding: EmbeddingSetting = field(default_factory=_train_setting)
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA scaling numerator (the update is scaled by alpha / r)")
    lora_dropout: float = option(0.1, help="dropout on the LoRA input, in [0, 1); SimCSE dropout views need > 0")
    target_modules: tuple[str, ...] = option(
        PAPER_TARGETS,
        help="linear modules to adapt, comma-separated; short names (q, v, gate...) get _proj; all-linear for every "
        "linear layer (also the default on models without the paper's projections)",
    )
    # Backpropagation stops at the lowest adapted layer, which makes a step several times cheaper on a CPU.
    lora_layers: int = option(8, help="LoRA on the top k decoder layers only (0 = every layer)")
    lr: float = option(3e-4, help="peak learning rate (AdamW)")
    warmup_steps: int = option(10, help="linear warm-up steps, then a linear decay to 0")
    steps: int = option(100, help="optimizer steps")
    batch_size: int = option(32, help="pairs per step over all processes: 2 * batch_size - 1 negatives per anchor")
    micro_batch_size: int = option(
        0, help="texts per forward under gradient caching (bounds memory); 0 = the whole batch at once"
    )
    temperature: float = option(0.05, help="InfoNCE softmax temperature")
    margin: float = option(0.0, help="additive margin subtracted from each positive's cosine")
    symmetric: bool = option(False, help="add the positive -> anchor InfoNCE term")
    hard_negatives: bool = option(
        False, help="each pair's negative (core.pairs --negatives) joins the candidates; every pair needs one"
    )
    weight_decay: float = option(0.0, help="AdamW weight decay")
    max_grad_norm: float = option(1.0, help="gradient norm clip (0 = none)")
    seed: int = option(0, help="seed of the LoRA init, the pair sample, the batch order and dropout")
    precision: Precision = option("fp32", help="auto, fp32, bf16 or fp16", choices=PRECISIONS)
    device: str = option(
        "auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps; under torchrun, each rank's GPU"
    )
    checkpoint_every: int = option(50, help="steps between checkpoints (0 = only when interrupted)")
    keep_checkpoints: int = option(2, help="newest checkpoints kept")
    eval_task: str | None = option(None, help="a labelled local task (e.g. trec-coarse): keeps the best checkpoint")
    eval_every: int = option(50, help="steps between evaluations on --eval-task")
    eval_docs: int = option(500, help="texts of --eval-task scored per evaluation")
    progress: bool = option(True, help="show a progress bar")

    def __post_init__(self) -> None:
        embedding = self.embedding
        if isinstance(embedding, Mapping):
            embedding = EmbeddingSetting.from_dict(embedding)
        if not isinstance(embedding, EmbeddingSetting):
            raise TrainError(f"embedding must be an EmbeddingSetting, not {type(embedding).__name__}")
        if not isinstance(embedding.parsed_method, Plain):
            raise TrainError(
                f"training uses the plain method (a prompt and a pooling), not {embedding.method!r}; "
                "choose a prompt such as eol instead"
            )
        object.__setattr__(self, "embedding", embedding)
        self._check_types()
        targets = self.target_modules
        if isinstance(targets, str):  # a recipe may write them comma-separated, as the CLI takes them
            targets = [name.strip() for name in targets.split(",") if name.strip()]
        object.__setattr__(self, "target_modules", tuple(targets))
        if not self.target_modules:
            raise TrainError("target_modules is empty; name the linear modules to adapt, e.g. q_proj,v_proj")
        if self.batch_size < 2:
            raise TrainError(f"batch size {self.batch_size} leaves no in-batch negatives; use at least 2")
        if self.micro_batch_size < 0 or self.steps < 1 or self.lr <= 0 or self.temperature <= 0:
            raise TrainError("micro_batch_size must be >= 0, steps >= 1, lr > 0 and temperature > 0")
        if self.lora_layers < 0:
            raise TrainError(f"lora_layers must be >= 0 (0 = every layer), got {self.lora_layers}")
        if not 0 <= self.lora_dropout < 1 or self.lora_r < 1:
            raise TrainError(f"lora_dropout must be in [0, 1) and lora_r >= 1 (got {self.lora_dropout}, {self.lora_r})")
        if self.n_pairs is not None and self.n_pairs < 1:
            raise TrainError(f"n_pairs must be at least 1 (or unset for all pairs), got {self.n_pairs}")
        if min(self.warmup_steps, self.checkpoint_every) < 0 or self.keep_checkpoints < 1 or self.eval_every < 1:
            raise TrainError("warmup_steps and checkpoint_every must be >= 0, keep_checkpoints and eval_every >= 1")
        if self.precision not in PRECISIONS:
            raise TrainError(f"precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")

    def _check_types(self) -> None:
        """Numbers and flags from a JSON recipe arrive untyped: an int where a float is due is widened, anything
        else of the wrong type is refused by name (rather than failing deep inside the optimizer)."""
        hints = typing.get_type_hints(TrainConfig)
        for spec in dataclasses.fields(self):
            value, kind = getattr(self, spec.name), hints[spec.name]
            optional = type(None) in typing.get_args(kind)
            if value is None and optional:
                continue
            base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind) if optional else kind
            if base is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, spec.name, float(value))
            elif base in (int, float, bool, str) and (
                not isinstance(value, base) or (base is not bool and isinstance(value, bool))
            ):
                raise TrainError(f"{spec.name} must be a {base.__name__}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON form, keys as runs have always saved them: the embedding setting's prompt, pooling, layer
        and max length beside the others (its method is always plain, so left out), ``target_modules`` a list."""
        flat: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            if spec.name == "embedding":
                flat |= {key: value for key, value in self.embedding.to_dict().items() if key != "method"}
            else:
                value = getattr(self, spec.name)
                flat[spec.name] = list(value) if isinstance(value, tuple) else value
        return flat

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "the settings") -> TrainConfig:
        """A config from its flat form (a saved config, a recipe, CLI values); unknown keys are refused.

        Args:
            values: flat settings; keys left out take their defaults, ``None`` embedding values too.
            source: what ``values`` came from, for the message naming unknown keys.
        """
        names = {spec.name for spec in dataclasses.fields(cls)} - {"embedding"}
        unknown = sorted(set(values) - names - set(SETTING_FIELDS))
        if unknown:
            raise TrainError(f"{source} has unknown keys: {', '.join(unknown)}")
        # Training's own base (fewer tokens than inference reads), then what the values choose: the one way a
        # setting is built from a base and choices.
        chosen = {key: values.get(key) for key in SETTING_FIELDS}
        embedding = EmbeddingSetting.resolve({"max_length": TRAIN_MAX_LENGTH}, **chosen)
        return cls(embedding=embedding, **{key: value for key, value in values.items() if key in names})

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` in the flat form (``prompt=...`` changes the embedding setting), validated."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def differences(self, other: Mapping[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
        """What differs from ``other`` (a saved flat config); a setting newer than the save counts at its default."""
        mine, defaults = self.to_dict(), TrainConfig().to_dict()
        other = {**other, **({"layer": str(other["layer"])} if other.get("layer") is not None else {})}
        return [
            f"{key}: checkpoint {other.get(key, defaults[key])!r} vs now {mine[key]!r}"
            for key in mine
            if key not in RESUME_FREE | ignore and other.get(key, defaults[key]) != mine[key]
        ]
