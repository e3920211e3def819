"""``python -m core.bench --big NAME --weights fp32|bf16``: memory and time of the key paths on a big model.

The model is built with random weights from a published config (:data:`BIG_CONFIGS`: no hub needed), in the
given weight dtype, with the packaged SmolLM2 tokenizer (its ids fit any larger vocabulary). Measured, one phase
after another in one process: the weights' resident memory; embedding (tokens/s, peak memory above the weights);
attention capture of one long text (query rows of every layer, then full maps of every layer); one LoRA training
step (InfoNCE over in-batch negatives, LoRA on every linear layer of every decoder layer, AdamW), with and without
gradient checkpointing. Each phase's peak is the resident set's maximum, sampled every 5 ms, above the resident
set when the phase began (freed heap memory is returned to the system first, so earlier phases do not hide it).
CPU seconds (all threads) are recorded beside wall seconds, since a shared machine stretches wall time. Prints
one JSON object (and writes it with ``--out``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from core.runtime.files import write_json

__all__ = ["BIG_CONFIGS", "measure_big"]

# Values from the published config.json of each model (Qwen/Qwen2.5-0.5B, Qwen/Qwen2.5-1.5B).
_QWEN25 = dict(
    model_type="qwen2", hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
    tie_word_embeddings=True, use_sliding_window=False, vocab_size=151936, attention_dropout=0.0,
)  # fmt: skip
BIG_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(_QWEN25, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2),
    "qwen2.5-1.5b": dict(_QWEN25, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2),
}  # fmt: skip
_WORDS = tuple(
    [
        "the",
        "model",
        "reads",
        "a",
        "sentence",
        "and",
        "every",
        "token",
        "attends",
        "to",
        "the",
        "tokens",
        "before",
        "it",
        "while",
        "the",
        "last",
        "one",
        "gathers",
        "a",
        "summary",
        "of",
        "the",
        "whole",
        "text",
        "which",
        "becomes",
        "its",
        "vector",
        "for",
        "search",
        "clustering",
        "and",
        "classification",
        "of",
        "documents",
    ]
)


def _trim() -> None:
    """Return freed heap memory to the system, so the resident set at a phase's start is what is live."""
    with contextlib.suppress(OSError):  # not glibc: the phases' baselines then include freed memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096 / 2**20


@contextmanager
def _phase(record: dict[str, Any], name: str) -> Iterator[None]:
    """Time the block and sample its peak resident memory above the resident set at its start."""
    gc.collect()
    _trim()
    start_rss, peak, cpu = _rss_mb(), [0.0], time.process_time()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        record[name] = {
            **record.get(name, {}),
            "seconds": round(seconds, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
            "peak_above_start_mb": round(max(peak[0], _rss_mb()) - start_rss),
        }
        print(json.dumps({name: record[name]}), flush=True)


def _texts(count: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)) for _ in range(count)]


def _loaded(name: str, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from core.models.architecture import backbone_of
    from core.models.registry import LoadedModel, resolve_model_path

    values = dict(BIG_CONFIGS[name])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2-135m"))
    return LoadedModel(
        name=f"random {name}", path=f"random:{name}", model=model, backbone=backbone_of(model), tokenizer=tokenizer,
        is_causal=True, weights_hash=f"random-{name}",
    )  # fmt: skip


def measure_big(
    name: str,
    weights: str = "fp32",
    embed_texts: int = 16,
    text_words: int = 100,
    long_tokens: int = 1024,
    train_pairs: int = 4,
    train_words: int = 48,
    train: bool = True,
) -> dict[str, Any]:
    """Measure ``name`` (a key of :data:`BIG_CONFIGS`) with ``weights`` in fp32 or bf16; returns the record."""
    from core.encoding.capture import capture_attention
    from core.encoding.encoder import Encoder
    from core.models.architecture import default_lora_targets

    try:
        from core.training.loss import info_nce
    except ImportError:  # the trainer module holds the loss where there is no loss module
        from core.training.loss import info_nce

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[weights]
    record: dict[str, Any] = {"model": name, "weights": weights, "threads": torch.get_num_threads()}
    start_rss = _rss_mb()
    with _phase(record, "build"):
        loaded = _loaded(name, dtype)
    parameters = sum(p.numel() for p in loaded.model.parameters())
    record["build"].update(parameters=parameters, resident_mb=round(_rss_mb() - start_rss))
    precision = "bf16" if weights == "bf16" else "fp32"
    encoder = Encoder(loaded, precision=precision, cache=False, pooling="last", max_length=4096)

    texts = _texts(embed_texts, text_words)
    tokens = sum(len(item.input_ids) for item in encoder.prepare(texts))
    with _phase(record, "embed"):
        encoder.encode(texts)
    record["embed"].update(texts=embed_texts, tokens=tokens, tokens_per_s=round(tokens / record["embed"]["seconds"], 1))

    long_text = _texts(1, long_tokens, seed=1)[0]
    item = encoder.prepare([long_text])[0]
    batch = encoder.to_device(encoder.collate([item]))
    query = batch["start"] + batch["length"] - 1
    for mode in ("rows", "full"):
        with (
            _phase(record, f"capture_{mode}"),
            torch.inference_mode(),
            capture_attention(loaded.backbone, None, mode, query) as captured,
        ):
            encoder.forward(batch)
        kept = sum(tensor.numel() * 4 for tensor in captured.values())
        record[f"capture_{mode}"].update(tokens=len(item.input_ids), kept_mb=round(kept / 2**20, 1))
        del captured

    if not train:
        return record
    layers = list(range(loaded.num_layers))
    from peft import LoraConfig, get_peft_model

    targets = default_lora_targets(loaded.backbone, layers)
    peft = get_peft_model(loaded.backbone, LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0))
    loaded.peft_model = peft
    trainable = [p for p in peft.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    anchors, positives = _texts(train_pairs, train_words, 2), _texts(train_pairs, train_words, 3)
    items = encoder.prepare(anchors + positives)
    train_tokens = sum(len(item.input_ids) for item in items)
    batch = encoder.to_device(encoder.collate(items))
    for checkpointing in (False, True):
        label = "train_step_checkpointed" if checkpointing else "train_step"
        if checkpointing:
            loaded.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        loaded.model.train()
        with _phase(record, label):
            vectors = _pooled(encoder, batch)
            loss = info_nce(vectors[:train_pairs], vectors[train_pairs:], temperature=0.05)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        record[label].update(
            texts=2 * train_pairs, tokens=train_tokens, tokens_per_s=round(train_tokens / record[label]["seconds"], 1),
            lora_parameters=sum(p.numel() for p in trainable), lora_targets=len(targets),
        )  # fmt: skip
    return record


def _pooled(encoder, batch) -> torch.Tensor:
    plan = encoder.plan()
    return plan.poolings[0](encoder.forward(batch, plan))


def main(name: str, weights: str, out: Path | None, args: Any, train: bool) -> int:
    """Measure and print; ``args`` carries ``long_tokens``, ``embed_texts``, ``text_words`` and ``train_pairs``."""
    record = measure_big(
        name, weights, embed_texts=args.embed_texts, text_words=args.text_words, long_tokens=args.long_tokens,
        train_pairs=args.train_pairs, train=train,
    )  # fmt: skip
    print(json.dumps(record, indent=1))
    if out is not None:
        write_json(out, record)
    return 0


# ----- what fits where, derived from the measured records

# Published shapes (config.json) of models users name first: parameters, layers, hidden, intermediate.
SHAPES: dict[str, tuple[float, int, int, int]] = {
    "Qwen2.5-0.5B": (0.494e9, 24, 896, 4864),
    "Qwen3-0.6B": (0.596e9, 28, 1024, 3072),
    "Llama-3.2-1B": (1.236e9, 16, 2048, 8192),
    "Qwen2.5-1.5B": (1.544e9, 28, 1536, 8960),
    "Gemma-2-2B": (2.614e9, 26, 2304, 9216),
    "Phi-3.5-mini": (3.821e9, 32, 3072, 8192),
    "Qwen2.5-7B": (7.616e9, 28, 3584, 18944),
}
# Memory a process holds besides the model (interpreter, torch, tokenizer; a CUDA context on a GPU), in GB.
OVERHEAD_GB = {"cpu": 1.5, "gpu": 1.5}
# (GB, kind, bytes a weight, activation bytes relative to fp32): a 24 GB CPU in fp32, 24 and 80 GB GPUs in bf16.
MACHINES = ((24, "cpu", 4, 1.0), (24, "gpu", 2, 0.5), (80, "gpu", 2, 0.5))


def per_token_training_bytes(record: dict[str, Any], phase: str) -> float:
    """Measured training memory per token of the step's batch, divided by ``layers x (hidden + intermediate)``:
    bytes per token per unit of layer width, the quantity that carries over between model shapes."""
    config = BIG_CONFIGS[record["model"]]
    width = config["num_hidden_layers"] * (config["hidden_size"] + config["intermediate_size"])
    return record[phase]["peak_above_start_mb"] * 2**20 / record[phase]["tokens"] / width


def fits_table(records: list[dict[str, Any]]) -> str:
    """A markdown table: per model, the weights in fp32 and bf16 and the training tokens per micro-batch that fit
    on a 24 GB CPU (fp32), a 24 GB GPU and an 80 GB GPU (bf16), without and with gradient checkpointing.

    Per-token training memory is the largest measured (per unit of layer width) over ``records`` in fp32; bf16 is
    taken as half of it (activations are stored in the compute dtype). Weights are 4 or 2 bytes a parameter.
    """
    fp32 = [record for record in records if record["weights"] == "fp32" and "train_step" in record]
    plain = max(per_token_training_bytes(record, "train_step") for record in fp32)
    checkpointed = max(per_token_training_bytes(record, "train_step_checkpointed") for record in fp32)
    rows = [
        "| model | weights fp32 / bf16 | 24 GB CPU, fp32: tokens per micro-batch (plain / checkpointed) "
        "| 24 GB GPU, bf16 | 80 GB GPU, bf16 |",
        "|---|---|---|---|---|",
    ]
    for name, (parameters, layers, hidden, intermediate) in SHAPES.items():
        width = layers * (hidden + intermediate)
        cells = []
        for capacity, kind, bytes_per_parameter, scale in (
            (24, "cpu", 4, 1.0),
            (24, "gpu", 2, 0.5),
            (80, "gpu", 2, 0.5),
        ):
            free = (capacity - OVERHEAD_GB[kind]) * 1e9 - parameters * bytes_per_parameter
            if free <= 0:
                cells.append("does not fit")
                continue
            counts = [int(free / (per_token * scale * width)) for per_token in (plain, checkpointed)]
            cells.append(" / ".join(f"{count:,}" for count in counts))
        weights = f"{parameters * 4 / 1e9:.1f} / {parameters * 2 / 1e9:.1f} GB"
        rows.append(f"| {name} | {weights} | {' | '.join(cells)} |")
    rows.append("")
    rows.append(
        f"Per token of a training micro-batch, per unit of layers x (hidden + intermediate), fp32: {plain:.1f} bytes "
        f"without and {checkpointed:.1f} bytes with gradient checkpointing (the larger of the measured models)."
    )
    return "\n".join(rows)
