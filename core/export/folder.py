"""Export a model or adapter as a sentence-transformers folder that reproduces the workbench's vectors.

``python -m core.export ADAPTER_OR_MODEL --out DIR [--merge] [--dtype fp32|bf16|fp16] [--force]``

Where sentence-transformers' stock modules express the settings (the plain method, a prefix-only
prompt, mean or last-token pooling of the final layer, weights without a separate adapter) the folder
uses them (Transformer + Pooling) and needs no remote code. Otherwise (a suffix template such as
PromptEOL's, EOS pooling, another layer or ``lastK``, weighted/text_mean pooling, a kept peft adapter)
it ships ``embedding_lens_module.py`` (``core/export/module.py``) and loads with
``trust_remote_code=True``. Either way the folder never applies the tokenizer's chat template: the
stock path pins the Transformer's modalities to plain text, the custom module tokenizes by itself.

The folder is built beside its target under a temporary name and renamed into place only when
complete and verified: an interrupted export leaves no folder that looks finished.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from core.encoding.setting import EmbeddingSetting
from core.models.adapters import read_card, read_metadata
from core.models.registry import backbone_adapter
from core.runtime.arguments import add_arguments, given
from core.runtime.errors import AdapterError, ConfigError, LensError, ModelNotFoundError, run_cli
from core.runtime.files import follow_umask, staging_folder, temporary_name, write_json

log = logging.getLogger(__name__)

ExportDtype = Literal["fp32", "bf16", "fp16"]
TORCH_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Input methods an export can express; issue 10's echo/tp/metaeol join here (and in core.export.module.METHODS).
EXPORT_METHODS = ("plain",)
CUSTOM_POOLINGS = ("mean", "last", "eos", "weighted", "text_mean")
STOCK_POOLINGS = {"mean": "mean", "last": "lasttoken"}
MODULE_SOURCE = Path(__file__).with_name("module.py")
MODULE_FILE = "embedding_lens_module.py"
ADAPTER_SUBFOLDER = "adapter"
MANIFEST = "embedding_lens_export.json"
# Cosine floor between the folder's vectors and the workbench's, checked before the folder is renamed into place.
MIN_COSINE = {"fp32": 0.99999, "bf16": 0.999, "fp16": 0.999}
# Probe texts for that check: short, long (past max_length, so truncation is compared too), punctuated.
PROBE_TEXTS = [
    "What is the capital of France?",
    "A man is playing a guitar on the street.",
    "city",
    "The stock market fell sharply on Monday after the central bank raised interest rates again!",
    " ".join(
        ["The committee reviewed the proposal in detail, discussed its costs and benefits at length,"] * 12
        + ["and finally approved it."]
    ),
    'She said: "I\'ll be there at 5 p.m." (maybe)',
]


@dataclass(frozen=True)
class ExportSettings:
    """What determines the exported folder's vectors: the model, the adapter, the embedding ``setting`` (only the
    plain method exports so far), the template it resolves to, and how the weights are written."""

    model: str
    adapter: str | None
    setting: EmbeddingSetting
    template: str  # the setting's prompt resolved to its template text (a name such as eol, or the template)
    dtype: ExportDtype = "fp32"
    merge: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in TORCH_DTYPES:
            raise ConfigError(f"Unknown dtype {self.dtype!r}; choose one of: {', '.join(TORCH_DTYPES)}.")

    @property
    def method(self) -> str:
        return self.setting.method

    @property
    def pooling(self) -> str:
        return str(self.setting.pooling)

    @property
    def layer(self) -> str:
        return str(self.setting.layer)

    @property
    def max_length(self) -> int:
        return self.setting.max_length

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, flat: the setting's fields beside the model, adapter, template, dtype and merge."""
        return {"model": self.model, "adapter": self.adapter, **self.setting.to_dict(), "template": self.template,
                "dtype": self.dtype, "merge": self.merge}  # fmt: skip


@dataclass
class ExportReport:
    out: str
    kind: Literal["stock", "custom"]
    settings: ExportSettings
    min_cosine: float
    files: list[str] = field(default_factory=list)


def read_adapter_files(adapter_dir: str | Path) -> tuple[dict, dict]:
    """An adapter's training settings and card (``core.models.adapters``), each ``{}`` if absent."""
    return read_metadata(adapter_dir), read_card(adapter_dir) or {}


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path).expanduser() / "adapter_config.json").is_file()


def load_encoder(source: str, **chosen: Any):
    """The workbench's Encoder for a model name/folder or an adapter folder (its base model loaded too), under the
    adapter's trained setting (or the recipe's) with the user's ``chosen`` setting fields."""
    from core.encoding.encoder import Encoder

    settings = {key: value for key, value in chosen.items() if value is not None}
    if not is_adapter_dir(source):
        try:
            return Encoder(source, None, precision="fp32", **settings)
        except LensError:
            raise
        except ValueError as error:  # the Encoder's own setting checks
            raise ConfigError(f"{error} (exporting {source!r})") from None
    adapter = Path(source).expanduser()
    metadata, _card = read_adapter_files(adapter)
    base = metadata.get("base_model")
    if not base:
        raise AdapterError(
            f"Adapter {adapter} has no adapter settings naming its base model; "
            "export adapters trained with python -m core.train, or export the base model itself."
        )
    try:
        return Encoder(base, adapter, precision="fp32", **settings)
    except ModelNotFoundError as error:
        raise AdapterError(
            f"The base model {base!r} of adapter {adapter} is not available here ({error}). "
            f"Prepare it first (python -m core.models prepare {base}) or put its folder where it was."
        ) from None
    except LensError:
        raise
    except ValueError as error:
        raise AdapterError(f"Exporting adapter {adapter} on {base!r} failed: {error}") from None


def check_settings(encoder) -> None:
    method = encoder.setting.method
    if method not in EXPORT_METHODS:
        raise ConfigError(
            f"Method {method!r} cannot be exported yet; exportable methods: {', '.join(EXPORT_METHODS)}. "
            "Export with --method plain."
        )
    if encoder.pooling not in CUSTOM_POOLINGS:
        raise ConfigError(
            f"Pooling {encoder.pooling!r} cannot be exported (it needs captured attention rows); "
            f"choose one of: {', '.join(CUSTOM_POOLINGS)} with --pooling."
        )


def custom_module_reasons(encoder, keep_adapter: bool) -> list[str]:
    """Why stock Transformer + Pooling cannot reproduce these settings; empty when they can."""
    reasons = []
    if keep_adapter:
        reasons.append("the LoRA adapter is kept as a peft adapter (stock modules find its base only by absolute path)")
    if encoder.prompt.suffix:
        reasons.append(f"the prompt has text after {{text}} ({encoder.prompt.suffix!r}): stock prompts are prefixes")
    if encoder.pooling not in STOCK_POOLINGS:
        reasons.append(f"{encoder.pooling} pooling has no stock equivalent")
    if str(encoder.layer) not in ("-1", str(encoder.num_hidden_states - 1)):
        reasons.append(f"layer {encoder.layer} is not the final layer")
    if encoder.pooling == "eos":
        reasons.append("EOS pooling reads an EOS token appended after the wrapped text")
    return reasons


def export(
    source: str,
    out: str | Path,
    *,
    merge: bool = False,
    dtype: ExportDtype = "fp32",
    force: bool = False,
    **chosen: Any,
) -> ExportReport:
    """Write ``out`` as a sentence-transformers folder; returns what was written and the measured cosine.

    ``chosen``: the embedding setting's fields the user set (method, prompt, pooling, layer, max_length); the rest
    come from the adapter's trained setting, or the recipe's.
    """
    out = Path(out).expanduser().resolve()
    if dtype not in TORCH_DTYPES:
        raise ConfigError(f"Unknown dtype {dtype!r}; choose one of: {', '.join(TORCH_DTYPES)}.")
    _refuse_overlap(out, Path(source).expanduser(), "the folder you export")
    if out.exists() and not force:
        raise ConfigError(f"{out} already exists; choose another --out or pass --force to replace it.")
    encoder = load_encoder(source, **chosen)
    check_settings(encoder)
    loaded = encoder.loaded
    _refuse_overlap(out, Path(loaded.path), "its base model's folder")
    has_adapter = loaded.has_adapter
    if merge and not has_adapter:
        raise ConfigError(f"--merge needs an adapter, and {source!r} is a model; drop --merge.")
    keep_adapter = has_adapter and not merge
    reasons = custom_module_reasons(encoder, keep_adapter)
    custom = bool(reasons)
    settings = ExportSettings(
        model=loaded.name,
        adapter=str(Path(source).expanduser()) if has_adapter else None,
        setting=encoder.setting,
        template=encoder.prompt.template,
        dtype=dtype,
        merge=merge,
    )
    reference = encoder.encode(PROBE_TEXTS)  # before the weights are merged or unloaded below

    out.parent.mkdir(parents=True, exist_ok=True)
    with staging_folder(out.parent, f".{out.name}.") as staging:
        _write_weights(loaded, staging, TORCH_DTYPES[dtype], merge=merge)
        if custom:
            _write_custom_modules(encoder, staging, settings, keep_adapter)
        else:
            _write_stock_modules(encoder, staging, settings)
        metadata, card = read_adapter_files(settings.adapter) if settings.adapter else ({}, {})
        vectors = _encode_with_sentence_transformers(staging, custom)
        min_cosine = float(_row_cosines(vectors, reference).min())
        if min_cosine < MIN_COSINE[dtype]:
            raise ConfigError(
                f"The exported folder's vectors differ from the workbench's (min cosine {min_cosine:.6f} < "
                f"{MIN_COSINE[dtype]}) at dtype {dtype}; export with --dtype fp32."
            )
        manifest = {
            "kind": "custom" if custom else "stock",
            "settings": settings.to_dict(),
            "base_weights_sha256": loaded.weights_hash,
            "adapter_sha256": loaded.adapter_hash if has_adapter else None,
            "min_cosine_to_workbench": round(min_cosine, 8),
            "probe_texts": len(PROBE_TEXTS),
        }
        write_json(staging / MANIFEST, manifest)
        (staging / "README.md").write_text(model_card(settings, manifest, metadata, card, reasons))
        _make_shareable(staging)
        _replace(staging, out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return ExportReport(str(out), "custom" if custom else "stock", settings, min_cosine, files)


def _refuse_overlap(out: Path, source: Path, what: str) -> None:
    """A :class:`ConfigError` if writing ``out`` (even with ``--force``) would replace or write into ``source``."""
    if not source.exists():
        return  # a packaged name or hub id: nothing of the user's at that path
    source = source.resolve()
    if out == source or out in source.parents or source in out.parents:
        relation = "is" if out == source else "contains" if out in source.parents else "lies inside"
        raise ConfigError(
            f"--out {out} {relation} {what} ({source}): exporting there would replace or change it, "
            "--force or not. Choose an --out outside it, e.g. a new folder beside it."
        )


def _make_shareable(folder: Path) -> None:
    """The staging folder and what libraries wrote into it (0700/0600) get the modes of every other file."""
    follow_umask(folder)


def _replace(staging: Path, out: Path) -> None:
    """Rename the finished folder into place; a replaced folder is moved aside first, then removed."""
    old = temporary_name(out.parent, f".{out.name}.old.") if out.exists() else None
    if old is not None:
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_weights(loaded, folder: Path, dtype: torch.dtype, *, merge: bool) -> None:
    """The model's weights (the LoRA merged in, or the base weights plus ``adapter/``) and tokenizer."""
    if loaded.has_adapter:
        # Either call changes the LoRA layers inside loaded.model in place (merged, or taken out).
        if merge:
            loaded.peft_model.merge_and_unload()
        else:
            _write_adapter(loaded, folder / ADAPTER_SUBFOLDER, dtype)
            loaded.peft_model.unload()
    model = loaded.model
    model.to(dtype).save_pretrained(folder)
    model.to(torch.float32)
    tokenizer = loaded.tokenizer
    # Right padding: positions then start at 0 for every row, as in the workbench, whatever reads the folder.
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(folder)


def _write_adapter(loaded, target: Path, dtype: torch.dtype) -> None:
    """The peft adapter in the backbone format (``core.models.registry.backbone_adapter``), which ``AutoModel`` loads;
    an adapter saved in the older causal format is re-keyed on the way."""
    from safetensors.torch import save_file

    config, weights = backbone_adapter(loaded, loaded.adapter_path)
    config["base_model_name_or_path"] = None
    config["inference_mode"] = True
    target.mkdir(parents=True)
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, target / "adapter_model.safetensors")
    write_json(target / "adapter_config.json", config)


def _st_config(prompts: dict[str, str]) -> dict:
    import sentence_transformers
    import transformers

    return {
        "model_type": "SentenceTransformer",
        "__version__": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "pytorch": torch.__version__,
        },
        "prompts": prompts,
        "default_prompt_name": "default" if prompts else None,
        "similarity_fn_name": "cosine",
    }


def _write_stock_modules(encoder, folder: Path, settings: ExportSettings) -> None:
    """Transformer (text modality only: no chat template) + Pooling; the prompt prefix as the default prompt."""
    causal = encoder.loaded.is_causal
    # The workbench reserves a slot for the appended EOS; mean and last pooling never read it.
    max_seq_length = settings.max_length - 1 if causal else settings.max_length
    transformer_config = {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        "module_output_name": "token_embeddings",
        "max_seq_length": max_seq_length,
        "do_lower_case": False,
    }
    write_json(folder / "sentence_bert_config.json", transformer_config)
    (folder / "1_Pooling").mkdir()
    write_json(
        folder / "1_Pooling" / "config.json",
        {
            "embedding_dimension": encoder.dim,
            "pooling_mode": STOCK_POOLINGS[settings.pooling],
            "include_prompt": True,
        },
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.sentence_transformer.modules.Pooling",
        },
    ]
    write_json(folder / "modules.json", modules)
    prefix = encoder.prompt.prefix
    write_json(folder / "config_sentence_transformers.json", _st_config({"default": prefix} if prefix else {}))


def _write_custom_modules(encoder, folder: Path, settings: ExportSettings, keep_adapter: bool) -> None:
    shutil.copyfile(MODULE_SOURCE, folder / MODULE_FILE)
    module_config = {
        "format_version": 1,
        "method": settings.method,
        "template": settings.template,
        "pooling": settings.pooling,
        "layer": settings.layer,
        "max_length": settings.max_length,
        "append_eos": bool(encoder.loaded.is_causal),
        "adapter_subfolder": ADAPTER_SUBFOLDER if keep_adapter else None,
        "dtype": {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[settings.dtype],
    }
    write_json(folder / "embedding_lens_config.json", module_config)
    write_json(
        folder / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": "embedding_lens_module.LensEmbedder"}]
    )
    write_json(folder / "config_sentence_transformers.json", _st_config({}))


def _encode_with_sentence_transformers(folder: Path, trust_remote_code: bool) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=trust_remote_code, local_files_only=True)
    return model.encode(PROBE_TEXTS, convert_to_numpy=True, batch_size=8)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def model_card(settings: ExportSettings, manifest: dict, metadata: dict, card: dict, reasons: list[str]) -> str:
    """The folder's README: what it embeds with, how it was made, and what it scored."""
    custom = bool(reasons)
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        "tags: [sentence-transformers, feature-extraction, embedding-lens]",
        "---",
        "",
        f"# {Path(settings.adapter).name if settings.adapter else Path(settings.model).name} (Embedding Lens export)",
        "",
        "Exported from the Embedding Lens workbench with `python -m core.export`.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| base model | `{settings.model}` (weights sha256 `{manifest['base_weights_sha256'][:16]}`) |",
        f"| adapter | `{Path(settings.adapter).name if settings.adapter else 'none'}`"
        + (f" (sha256 `{manifest['adapter_sha256'][:16]}`)" if manifest["adapter_sha256"] else "")
        + (
            " merged into the weights |"
            if settings.merge
            else (" kept as a peft adapter in `adapter/` |" if settings.adapter else " |")
        ),
        f"| method | `{settings.method}` |",
        f"| prompt | `{settings.template}` |",
        f"| pooling | `{settings.pooling}` |",
        f"| layer | `{settings.layer}` |",
        f"| max length | {settings.max_length} tokens (the text is cut before the prompt wraps it) |",
        f"| dtype | {settings.dtype} |",
        "| similarity | cosine |",
        f"| min cosine to the workbench's vectors | {manifest['min_cosine_to_workbench']} "
        f"({manifest['probe_texts']} probe texts) |",
        "",
        "## Usage",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f"model = SentenceTransformer(PATH{', trust_remote_code=True' if custom else ''})",
        'vectors = model.encode(["A man is playing a guitar."])',
        "```",
        "",
    ]
    if custom:
        lines += [
            "**Remote code.** The stock sentence-transformers modules cannot express these settings:",
            "",
            *[f"- {reason}" for reason in reasons],
            "",
            "so the folder ships a small custom module, `embedding_lens_module.py` (class `LensEmbedder`,",
            "configured by `embedding_lens_config.json`). Load it with `trust_remote_code=True`; read the file",
            "first. It wraps each text in the prompt itself and never applies the tokenizer's chat template.",
            "",
        ]
    else:
        lines += [
            "Stock modules only (Transformer + Pooling); the Transformer is pinned to the text modality, so",
            "sentence-transformers does not apply the tokenizer's chat template. The prompt is the default prompt.",
            "",
        ]
    lines += _scores_section(card) + _recipe_section(metadata)
    return "\n".join(lines) + "\n"


def _scores_section(card: dict) -> list[str]:
    lines: list[str] = []
    for track in ("local_track", "transfer_track"):
        section = card.get(track) or {}
        rows, tasks = section.get("rows") or [], section.get("tasks") or []
        if not rows:
            continue
        title = track.replace("_", " ").capitalize()
        lines += [f"## {title} (V-measure, from the adapter's card.json)", ""]
        lines += ["| row | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
        for row in rows:
            scores = [f"{row['scores'].get(task, float('nan')):.4f}" for task in tasks]
            lines.append(f"| {row['label']} | " + " | ".join(scores) + f" | {row.get('average', float('nan')):.4f} |")
        lines.append("")
    return lines


def _recipe_section(metadata: dict) -> list[str]:
    training = metadata.get("training")
    if not training:
        return []
    keys = [
        "pairs",
        "steps",
        "batch_size",
        "lr",
        "temperature",
        "lora_r",
        "lora_alpha",
        "lora_layers",
        "target_modules",
        "seed",
    ]
    lines = ["## Training recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | `{training[key]}` |" for key in keys if key in training]
    return [*lines, ""]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.export",
        description="Export a model or an adapter folder as a sentence-transformers folder.",
    )
    parser.add_argument(
        "source", metavar="ADAPTER_OR_MODEL", help="adapter folder, packaged model name or model folder"
    )
    parser.add_argument("--out", required=True, help="the folder to write (must not exist unless --force)")
    parser.add_argument("--merge", action="store_true", help="merge the LoRA into the weights (default: keep it)")
    parser.add_argument("--dtype", choices=list(TORCH_DTYPES), default="fp32")
    parser.add_argument("--force", action="store_true", help="replace an existing --out folder")
    add_arguments(parser, EmbeddingSetting)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Export a model or an adapter folder as a sentence-transformers folder."""
    args = make_parser().parse_args(argv)
    report = export(
        args.source,
        args.out,
        merge=args.merge,
        dtype=args.dtype,
        force=args.force,
        **given(EmbeddingSetting, args),
    )
    print(f"wrote {report.out} ({report.kind} modules, {len(report.files)} files)")
    print(f"min cosine to the workbench's vectors: {report.min_cosine:.7f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
