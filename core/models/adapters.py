"""LoRA adapter folders: what they hold, and the one place that reads, lists, describes and hashes them.

An adapter folder is a plain peft folder plus files this project writes:

- ``adapter_config.json`` and ``adapter_model.safetensors``: peft's own files (a pickle ``adapter_model.bin`` is
  refused: unpickling a folder's file can run code; :data:`PICKLE_WEIGHTS`), saved on the
  model's backbone (the transformer ``AutoModel`` loads, without LM head: tensors ``base_model.model.layers...``,
  ``layers_pattern`` set), so plain ``PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), DIR)`` loads
  them. Adapters saved before on the causal LM (``base_model.model.model.layers...``, the *causal format*) still
  load in the workbench; ``python -m core.models upgrade DIR`` rewrites one in the backbone format;
- ``embedding_lens.json`` (:data:`ADAPTER_METADATA`): the settings the adapter was trained with (base
  model name and weights hash, prompt, pooling, layer, max length, training config, steps). The encoder
  applies them when it loads the adapter, and :func:`core.models.registry.attach_adapter` refuses another base;
- ``card.json`` and ``README.md``: the card (settings, data provenance, run, loss, local-track scores);
- while training: ``train_log.jsonl``, ``checkpoints/``, ``job.json``/``job.log``.

Converted model folders carry a different file (``core.models.registry.CONVERSION_MARKER``): before, both meanings
shared ``embedding_lens.json``; the name now means adapter settings only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from core.runtime.errors import AdapterError
from core.runtime.files import atomic_write, write_json
from core.runtime.paths import REPO_ROOT

ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors",)  # the only weights read: tensors, no code
PICKLE_WEIGHTS = "adapter_model.bin"  # peft's older pickle format: refused, never unpickled
ADAPTER_METADATA = "embedding_lens.json"
CARD = "card.json"
CARD_README = "README.md"
TRAIN_LOG = "train_log.jsonl"
ADAPTERS_DIR = REPO_ROOT / "adapters"
# The adapter shipped with the project, used out of the box when it exists.
SHIPPED_ADAPTER = ADAPTERS_DIR / "smollm2-135m-embed"
MAKE_ONE = "python -m core.train --pairs PAIRS.jsonl --out"
# peft's prefix of every tensor name: the wrapped model's own module names follow it.
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter folder as read from disk: peft config, weights file, training metadata and card."""

    path: Path
    config: dict[str, Any]
    weights_file: Path
    metadata: dict[str, Any] = field(default_factory=dict)  # empty for an adapter not made by core.train
    card: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def base_model(self) -> str | None:
        """The base model's name as training knew it (or peft's path of it for a foreign adapter)."""
        return self.metadata.get("base_model") or self.config.get("base_model_name_or_path")

    @property
    def base_weights_sha256(self) -> str | None:
        return self.metadata.get("base_weights_sha256")

    @cached_property
    def hash(self) -> str:
        return adapter_hash(self.path)

    @property
    def readme(self) -> str | None:
        path = self.path / CARD_README
        return path.read_text() if path.is_file() else None

    @property
    def local_track_rows(self) -> list[tuple[str, float]]:
        """(row label, local-track average) pairs recorded in the card by ``analysis.clustering``."""
        rows = ((self.card or {}).get("local_track") or {}).get("rows", [])
        return [(row["label"], float(row["average"])) for row in rows]

    def check_base(self, model_name: str, weights_sha256: str) -> None:
        """Refuse a base model whose weights differ from the ones the adapter was trained on."""
        expected = self.base_weights_sha256
        if expected and expected != weights_sha256:
            raise AdapterError(
                f"Adapter {self.path} was trained on base model {self.base_model!r} (weights {expected[:12]}), "
                f"not on {model_name!r} (weights {weights_sha256[:12]}). Load it with the model it was made for."
            )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise AdapterError(f"Cannot read the {what} {path}: {error}. Restore it or retrain the adapter.") from None
    if not isinstance(data, dict):
        raise AdapterError(f"The {what} {path} is not a JSON object. Restore it or retrain the adapter.")
    return data


def read_adapter(path: str | Path) -> AdapterInfo:
    """Read an adapter folder; a missing folder, config or weights file is an :class:`AdapterError`."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise AdapterError(f"No adapter folder {folder}. Train one with: {MAKE_ONE} {folder}")
    if not (folder / ADAPTER_CONFIG).is_file():
        raise AdapterError(
            f"{folder} is not an adapter folder (no {ADAPTER_CONFIG}); a training run may still be going or "
            f"have stopped early (resume it with --resume). Train one with: {MAKE_ONE} {folder}"
        )
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None and (folder / PICKLE_WEIGHTS).is_file():
        raise _pickle_refused(folder / PICKLE_WEIGHTS)
    if weights is None:
        raise AdapterError(
            f"Adapter {folder} has {ADAPTER_CONFIG} but no weights file ({' or '.join(WEIGHT_FILES)}); "
            "it was copied incompletely or its save was interrupted. Copy the weights file too, or retrain it."
        )
    return AdapterInfo(
        path=folder,
        config=_read_json(folder / ADAPTER_CONFIG, "peft adapter config"),
        weights_file=weights,
        metadata=read_metadata(folder),
        card=read_card(folder),
    )


def _pickle_refused(weights_file: Path) -> AdapterError:
    return AdapterError(
        f"Adapter {weights_file.parent} has only {weights_file.name}, a pickle file: Embedding Lens does not load "
        "pickles from a folder (unpickling can run code). Re-save the adapter as adapter_model.safetensors "
        "(peft: model.save_pretrained(folder, safe_serialization=True), where it was made)."
    )


def weight_names(weights_file: Path) -> list[str]:
    """The tensor names stored in an adapter's safetensors file (its header alone is read); a pickle is refused."""
    if weights_file.suffix != ".safetensors":
        raise _pickle_refused(weights_file)
    from safetensors import safe_open

    with safe_open(str(weights_file), framework="pt") as handle:
        return list(handle.keys())


def read_weights(weights_file: Path) -> dict[str, Any]:
    """An adapter's tensors by name, from its safetensors file; a pickle is refused."""
    if weights_file.suffix != ".safetensors":
        raise _pickle_refused(weights_file)
    from safetensors.torch import load_file

    return load_file(str(weights_file))


def is_causal_format(names: Iterable[str], decoder_name: str) -> bool:
    """Whether tensor names were saved on the causal LM, whose backbone is its module ``decoder_name``."""
    return any(name.startswith(f"{PEFT_PREFIX}{decoder_name}.") for name in names)


def rekey_for_backbone(weights: dict[str, Any], decoder_name: str) -> dict[str, Any]:
    """Tensor names saved on the causal LM (``base_model.model.model.layers...``) as peft names them on its
    backbone (``base_model.model.layers...``); names already so are returned unchanged."""
    if not is_causal_format(weights, decoder_name):
        return dict(weights)
    prefix = f"{PEFT_PREFIX}{decoder_name}."
    outside = sorted(name for name in weights if not name.startswith(prefix))
    if outside:
        raise AdapterError(
            f"{len(outside)} adapter tensor(s) sit outside the transformer backbone, which is all embedding runs "
            f"(e.g. {outside[0]}); retrain the adapter without those target modules."
        )
    return {PEFT_PREFIX + name[len(prefix) :]: tensor for name, tensor in weights.items()}


def list_adapters(root: str | Path = ADAPTERS_DIR, *, in_training: bool = False) -> list[Path]:
    """Adapter folders under ``root``, the shipped one first, then by name.

    ``in_training=True`` also lists folders with only a training log yet (a run going on or stopped), or only the
    app's job file (``job.json`` of ``core.training.jobs``: a job still loading its model).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        p
        for p in sorted(root.iterdir())
        if p.is_dir()
        and (
            (p / ADAPTER_CONFIG).is_file() or (in_training and any((p / f).is_file() for f in (TRAIN_LOG, "job.json")))
        )
    ]
    return sorted(found, key=lambda p: p != SHIPPED_ADAPTER)


def adapter_name(folder: str | Path) -> str:
    """An adapter folder's short name in tables and labels; a checkpoint ``RUN/checkpoints/step-N`` is ``RUN@step-N``
    (every run's checkpoints share the names ``step-N``)."""
    folder = Path(folder)
    if folder.parent.name == "checkpoints" and folder.name.startswith("step-"):
        return f"{folder.parent.parent.name}@{folder.name}"
    return folder.name


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The settings the adapter was trained with; ``{}`` for an adapter not made by ``core.train``."""
    path = Path(folder) / ADAPTER_METADATA
    return _read_json(path, "adapter settings") if path.is_file() else {}


def made_for(folder: str | Path, model: str) -> bool:
    """Whether an adapter folder may go with base model ``model``: False only when its settings name another base
    model (an unreadable or foreign folder is kept, so that loading it reports what is wrong)."""
    try:
        trained_on = read_metadata(folder).get("base_model")
    except AdapterError:
        return True
    return trained_on is None or Path(trained_on).expanduser() == Path(model).expanduser()  # "dir/" is "dir"


def write_metadata(folder: str | Path, metadata: dict[str, Any]) -> None:
    write_json(Path(folder) / ADAPTER_METADATA, metadata)


def read_card(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / CARD
    return _read_json(path, "adapter card") if path.is_file() else None


def write_card(folder: str | Path, card: dict[str, Any]) -> None:
    """Write ``card.json`` and its rendering ``README.md``, each atomically."""
    folder = Path(folder)
    write_json(folder / CARD, card)
    with atomic_write(folder / CARD_README) as handle:
        handle.write(render_card(card))


def record_scores(adapter_dir: str | Path, track: dict[str, Any]) -> None:
    """Add the adapter's result on a track (``track["track"]``: local or transfer; its comparisons too) to its card
    and README, atomically; the other track's result stays."""
    card = read_card(adapter_dir)
    if card is None:
        return  # an adapter not made by core.train has no card to extend
    card[f"{track.get('track', 'local')}_track"] = track
    write_card(adapter_dir, card)


def _cell(text: Any, width: int = 140) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render_pair_report(report: dict[str, Any]) -> str:
    """Markdown for an adapter card: sources with packages, filter counts, and the examples."""
    lines = ["## Training pairs", "", "| source | package | version | licence | texts |", "|---|---|---|---|---|"]
    for s in report.get("sources") or []:
        package = f"{s.get('package', '')} ({s.get('registry', '')})" if s.get("registry") else s.get("package", "")
        lines.append(
            f"| {_cell(s.get('source', ''))} | {_cell(package)} | {s.get('version', '')} | "
            f"{_cell(s.get('licence', ''))} | {s.get('texts', '')} |"
        )
    counts = report["counts"]
    lines += ["", f"{counts['kept']} pairs kept of {counts['source_texts']} source texts.", ""]
    lines += ["| step | dropped | keep rate |", "|---|---|---|"]
    for step in counts["steps"]:
        rate = step.get("keep_rate")
        lines.append(f"| {step['filter']} | {step['dropped']} | {'' if rate is None else f'{rate:.0%}'} |")
    generator = report.get("generator")
    if generator:
        lines += ["", f"Generator: {generator.get('model')} ({generator.get('decoding')})."]
    sim = report.get("similarity") or {}
    if sim.get("kept"):
        q = sim["kept"]
        lines += ["", f"Kept pairs' {sim['similarity']}: median {q['median']}, 10-90% {q['p10']}-{q['p90']}."]
    negatives = report.get("negatives")
    if negatives:
        lines += ["", f"Hard negatives: {negatives['mined']} of {counts['kept']} pairs."]
    overlap = report.get("track_overlap")
    if overlap:
        lines += ["", f"Evaluation-track overlap: {overlap['overlapping_pairs']} pairs "
                  f"(checked {len(overlap['tasks_checked'])} tasks)."]  # fmt: skip
    if report.get("examples"):
        lines += ["", "| anchor | positive |", "|---|---|"]
        lines += [f"| {_cell(e['anchor'])} | {_cell(e['positive'])} |" for e in report["examples"]]
    return "\n".join(lines) + "\n"


def render_card(card: dict[str, Any]) -> str:
    s, run, data = card["settings"], card["run"], card["data"]
    lines = [
        f"# LoRA embedding adapter for {s['base_model']}",
        "",
        "Contrastive LoRA (InfoNCE, in-batch negatives over the whole batch) made by `python -m core.train`.",
        "",
        "```python",
        "from core import Encoder",
        "",
        f'encoder = Encoder("{s["base_model"]}", adapter="THIS_FOLDER")  # prompt, pooling, layer from the adapter',
        "```",
        "",
        f"- prompt: `{card['metadata']['prompt']}`; pooling `{s['pooling']}`, layer `{s['layer']}`",
        f"- data: {data['pairs']} pairs from {data['file']} (sha256 {data['sha256']}); methods {data['methods']};"
        f" {data['truncated_texts']} texts truncated at {s['max_length']} tokens",
        "- pair sources (pairs each): "
        + "; ".join(f"{source} ({count})" for source, count in data.get("sources", {"not recorded": "?"}).items()),
        f"- LoRA r={s['lora_r']}, alpha={s['lora_alpha']}, dropout={s['lora_dropout']}"
        f" on {', '.join(s['target_modules'])}"
        + (f" of the top {s['lora_layers']} layers" if s.get("lora_layers") else " of every layer"),
        f"- {card['metadata']['steps_done']} steps, batch {s['batch_size']}, lr {s['lr']} ({s['warmup_steps']} warm-up,"
        f" linear decay), temperature {s['temperature']}, margin {s['margin']}, symmetric {s['symmetric']}",
        f"- loss {card['loss']['first']} -> {card['loss']['last']}",
        f"- {run['train_seconds']} s, {run['pairs_per_s']} pairs/s, peak RSS {run['peak_rss_mb']} MB, "
        f"{run['world_size']} process(es), {run['precision']}",
    ]
    if card["best"]:
        lines.append(f"- best dev score: {card['best']}  (adapter in `best/`)")
    tracks = {name: card[f"{name}_track"] for name in ("local", "transfer") if card.get(f"{name}_track")}
    if tracks:
        own = {name: track["rows"][0]["average"] for name, track in tracks.items()}  # the adapter's row comes first
        lines.append("- clustering average, own setting: " + ", ".join(f"{n} track {v:.4f}" for n, v in own.items()))
    for name, track in tracks.items():
        lines += ["", f"## {name.capitalize()}-track clustering (V-measure, mean over k-means seeds)", ""]
        lines += ["| row | " + " | ".join(track["tasks"]) + " | average |", "|---" * (len(track["tasks"]) + 2) + "|"]
        for row in track["rows"]:
            cells = " | ".join(f"{row['scores'][t]:.4f}" for t in track["tasks"])
            lines.append(f"| {row['label']} | {cells} | **{row['average']:.4f}** |")
        lines += ["", f"From `{track['results']}` (`python -m analysis.clustering`)."]
    if data.get("quality"):
        lines += ["", render_pair_report(data["quality"]).rstrip("\n")]
    lines += ["", "All settings: `card.json`; every step: `train_log.jsonl`.", ""]
    return "\n".join(lines)


def adapter_hash(adapter_dir: str | Path) -> str:
    """SHA-256 of the adapter's weights and its config read as data: peft writes ``target_modules``
    from a set, so the same adapter saved by two processes differs in list order, not in meaning."""
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, *WEIGHT_FILES, PICKLE_WEIGHTS):  # bytes hashed, never unpickled
        path = Path(adapter_dir) / name
        if not path.is_file():
            continue
        data = path.read_bytes()
        if name.endswith(".json"):
            config = json.loads(data)
            if isinstance(config.get("target_modules"), list):
                config["target_modules"] = sorted(config["target_modules"])
            data = json.dumps(config, sort_keys=True).encode()
        digest.update(name.encode())
        digest.update(data)
    return digest.hexdigest()
