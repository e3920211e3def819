"""``python -m core.bench --check``: the key paths on one device, pass or fail, with tokens/s and peak memory.

Meant for the first run on a new machine (a GPU especially): embedding under the device's autocast precision
against fp32, attention capture, LoRA training steps with an interrupted run resumed through the public trainer
API, a clustering grid cell, the shared base+adapter trunk, and export to a sentence-transformers folder. Each
check runs even when an earlier one failed (those needing the trained adapter are skipped then); the exit code is
1 if any failed. On a CPU it runs in CI on the tiny test model.
"""

from __future__ import annotations

import contextlib
import csv
import json
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.encoding.setting import DEFAULT_PROMPT
from core.runtime.device import resolve_device, resolve_precision
from core.runtime.measure import peak_rss_mb

__all__ = ["CHECK_TEXTS", "CheckResult", "run_check", "train_config"]

# Two topics, so a grid cell has clusters to find; varied lengths, so padding is exercised.
CHECK_TEXTS: tuple[tuple[str, str], ...] = tuple(
    [(f"The {animal} runs across the {place} and sleeps near the {thing}.", "animals")
     for animal in ("dog", "cat", "horse", "fox") for place, thing in (("garden", "tree"), ("field", "river"))]
    + [(f"The {item} market {verb} as traders {act} before the {time} bell.", "markets")
       for item in ("stock", "bond", "grain", "oil") for verb, act, time in
       (("rallied", "bought shares", "closing"), ("fell sharply", "sold everything", "opening"))]
)  # fmt: skip


@dataclass(frozen=True)
class CheckResult:
    """One check: ``status`` is ``pass``, ``FAIL`` or ``skip``; ``detail`` says what was measured or what broke."""

    name: str
    status: str
    seconds: float
    tokens_per_second: float | None
    peak_memory_mb: float
    detail: str


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated CUDA memory on a GPU, the process's resident set elsewhere."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def train_config(**values: Any):
    """A ``TrainConfig`` from flat values. The embedding setting's fields (``prompt``, ``pooling``, ``layer``,
    ``max_length``) go into its ``embedding`` where the config has one, and target modules take its field's type."""
    from dataclasses import fields

    from core.training.config import TrainConfig

    names = {item.name for item in fields(TrainConfig)}
    if "embedding" in names:
        from core.encoding.setting import EmbeddingSetting

        setting = {key: values.pop(key) for key in ("prompt", "pooling", "layer", "max_length") if key in values}
        values["embedding"] = EmbeddingSetting.resolve(None, **setting)
        if "target_modules" in values:
            values["target_modules"] = tuple(values["target_modules"])
    elif "target_modules" in values:
        values["target_modules"] = list(values["target_modules"])
    return TrainConfig(**values)


class _Checks:
    def __init__(self, model: str, device: torch.device, precision: str, workdir: Path):
        self.model, self.device, self.precision, self.workdir = model, device, precision, workdir
        self.results: list[CheckResult] = []
        self.adapter: Path | None = None
        self.texts = [text for text, _ in CHECK_TEXTS]

    def run(self, name: str, check: Callable[[], tuple[str, int, float]], needs_adapter: bool = False) -> None:
        """Run ``check`` and record its outcome. A check returns a detail, the tokens its measured part processed
        and that part's seconds (model loads excluded), which give the tokens/s."""
        if needs_adapter and self.adapter is None:
            self.results.append(CheckResult(name, "skip", 0.0, None, peak_memory_mb(self.device), "no trained adapter"))
            return
        started = time.perf_counter()
        try:
            detail, tokens, work = check()
            status = "pass"
        except Exception as error:  # a check's failure is its result; the others still run
            detail, tokens, work = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}", 0, 0.0
            status = "FAIL"
            traceback.print_exc()
        seconds = time.perf_counter() - started
        rate = tokens / work if tokens and work > 0 else None
        self.results.append(CheckResult(name, status, seconds, rate, peak_memory_mb(self.device), detail))

    def encoder(self, **settings: Any):
        from core.encoding.encoder import Encoder

        settings.setdefault("precision", self.precision)
        return Encoder(self.model, cache=False, device=str(self.device), **settings)

    def tokens(self, encoder) -> int:
        return sum(len(item.input_ids) for item in encoder.prepare(self.texts))

    # ----- the checks

    def embed(self) -> tuple[str, int, float]:
        encoder = self.encoder()
        encoder.encode(self.texts[:2])  # warm-up (kernels, the fp16 probe on a GPU)
        started = time.perf_counter()
        vectors = encoder.encode(self.texts)
        work = time.perf_counter() - started
        if not np.isfinite(vectors).all():
            raise AssertionError("non-finite values in the vectors")
        detail = f"{encoder.precision} on {encoder.device}, dim {vectors.shape[1]}"
        if encoder.precision != "fp32":
            reference = self.encoder(precision="fp32").encode(self.texts)
            norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
            cosine = (vectors * reference).sum(1) / norms
            if cosine.min() < 0.99:
                raise AssertionError(f"{encoder.precision} vectors differ from fp32 (min cosine {cosine.min():.4f})")
            detail += f"; min cosine to fp32 {cosine.min():.5f}"
        return detail, self.tokens(encoder), work

    def attention(self) -> tuple[str, int, float]:
        from analysis.attention import attention_view

        encoder = self.encoder()
        view = attention_view(encoder, self.texts[0])
        sums = view.matrices["base"].sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-3):
            raise AssertionError(f"attention rows do not sum to 1 (min {sums.min():.4f})")
        layers, tokens = view.matrices["base"].shape
        return f"{layers} layers x {tokens} tokens, query rows sum to 1", tokens, view.seconds

    def train(self) -> tuple[str, int, float]:
        from core.training.trainer import Trainer

        pairs = self.workdir / "pairs.jsonl"
        rows = [{"anchor": a, "positive": b, "source": "check", "id": i}
                for i, (a, b) in enumerate(zip(self.texts, self.texts[1:] + self.texts[:1], strict=True))]  # fmt: skip
        pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
        settings = dict(
            pairs=str(pairs), base_model=self.model, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_layers=1,
            steps=3, warmup_steps=1, batch_size=4, micro_batch_size=0, max_length=128, checkpoint_every=1,
            progress=False, precision=self.precision, device=str(self.device),
        )  # fmt: skip
        straight, resumed = self.workdir / "straight", self.workdir / "resumed"
        started = time.perf_counter()
        Trainer(train_config(**settings), straight).train()
        work = time.perf_counter() - started  # the model load included: the trainer loads it itself

        def interrupt(result) -> None:
            if result.step == 2:
                raise KeyboardInterrupt

        with contextlib.suppress(KeyboardInterrupt):
            Trainer(train_config(**settings), resumed).train(callback=interrupt)
        trainer = Trainer(train_config(**settings), resumed, resume=True)
        if trainer.step != 2:
            raise AssertionError(f"resumed at step {trainer.step}, not 2")
        trainer.train()
        from safetensors.torch import load_file

        first, second = (load_file(str(folder / "adapter_model.safetensors")) for folder in (straight, resumed))
        difference = max(float((first[key].float() - second[key].float()).abs().max()) for key in first)
        if difference > (0 if self.device.type == "cpu" else 1e-3):
            raise AssertionError(f"the resumed adapter differs from the straight run by {difference:.2e}")
        self.adapter = straight
        batch = self.texts[: 2 * settings["batch_size"]]
        tokens = 3 * sum(len(item.input_ids) for item in self.encoder().prepare(batch))  # 3 steps of a batch's pairs
        return f"3 steps, interrupted at 2 and resumed: max |difference| {difference:.1e}", tokens, work

    def grid_cell(self) -> tuple[str, int, float]:
        from analysis.clustering.grid import GridConfig, ModelSpec
        from analysis.clustering.runner import run_grid

        table = self.workdir / "topics.csv"
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(CHECK_TEXTS)
        config = GridConfig(
            [ModelSpec(self.model, str(self.adapter))], [DEFAULT_PROMPT], ["last"], ["-1"], [f"{table}:text:label"],
            self.workdir / "grid", kmeans_seeds=(0,), precision=self.precision, device=str(self.device),
            baseline=False, cache=False, progress=False,
        )  # fmt: skip
        result = run_grid(config)
        if result.errors or len(result.cells) != 2:
            raise AssertionError(f"{len(result.cells)} cells (expected base and adapter), errors {result.errors}")
        _texts, seconds, tokens = next(iter(result.throughput.values()), [0.0, 0.0, 0.0])
        return f"{len(result.cells)} cells (base, adapter) in one pass", int(tokens), seconds

    def shared_trunk(self) -> tuple[str, int, float]:
        encoder = self.encoder(adapter=str(self.adapter), precision="fp32")
        started = time.perf_counter()
        grids = encoder.encode_grid(self.texts, variants=(False, True))
        base, tuned = (next(iter(grids[variant].values())) for variant in (False, True))
        work = time.perf_counter() - started
        error = max(
            float(np.abs(base - encoder.encode(self.texts, use_adapter=False)).max()),
            float(np.abs(tuned - encoder.encode(self.texts, use_adapter=True)).max()),
        )
        if error > 1e-4:
            raise AssertionError(f"shared-trunk vectors differ from separate passes by {error:.2e}")
        shared, tokens = encoder.loaded.adapter_free_layers, 2 * self.tokens(encoder)
        return f"{shared} of {encoder.loaded.num_layers} layers shared; max |difference| {error:.1e}", tokens, work

    def export(self) -> tuple[str, int, float]:
        from core.export.folder import export

        report = export(str(self.adapter), self.workdir / "exported")
        return f"{report.kind} folder, min cosine to the workbench {report.min_cosine:.6f}", 0, 0.0


def run_check(model: str, device: str = "auto", precision: str = "auto") -> list[CheckResult]:
    """Run every check on ``model`` (a packaged name, folder or hub id) on ``device``; returns the results."""
    target = resolve_device(device)
    resolved = resolve_precision(precision, target)  # type: ignore[arg-type]
    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    with tempfile.TemporaryDirectory(prefix="lens-check-") as folder:
        checks = _Checks(model, target, resolved, Path(folder))
        checks.run("embed", checks.embed)
        checks.run("attention capture", checks.attention)
        checks.run("train + resume", checks.train)
        checks.run("grid cell", checks.grid_cell, needs_adapter=True)
        checks.run("shared trunk", checks.shared_trunk, needs_adapter=True)
        checks.run("export", checks.export, needs_adapter=True)
    return checks.results


def print_results(results: list[CheckResult], model: str, device: str) -> None:
    print(f"check of {model} on {device}:")
    for result in results:
        rate = f"{result.tokens_per_second:9.0f} tok/s" if result.tokens_per_second else " " * 15
        print(
            f"  {result.status:4s}  {result.name:18s} {result.seconds:7.1f} s  {rate}  "
            f"peak {result.peak_memory_mb:8.0f} MB  {result.detail}"
        )
    failed = [result.name for result in results if result.status == "FAIL"]
    print("all checks passed" if not failed else f"FAILED: {', '.join(failed)}")
