"""The training loop: contrastive LoRA fine-tuning on positive pairs (``python -m core.train``, see ``core.training``).

What it does better than the paper's code:

- In-batch negatives over the whole batch: gradient caching (Gao et al. 2021) embeds the batch in
  micro-batches without gradient, takes the loss's gradient w.r.t. the embeddings, then re-runs each
  micro-batch with gradient and backpropagates the cached embedding gradients. Dropout masks are
  replayed (the RNG state is restored per micro-batch), so the update equals the full-batch one.
- Under ``torchrun`` embeddings are gathered across processes with autograd, so negatives span the
  global batch; each process takes a slice of the same seeded batch.
- Inputs are built by the inference Encoder itself (``prepare``/``collate``/``forward`` and the same
  Pooling), so prompt, special tokens (BOS), padding and pooled positions match inference.
- ``resume`` restores LoRA weights, optimizer, scheduler, RNG states and the data position
  (:mod:`core.training.checkpoints`), and ends bit-identical to an uninterrupted run, whether the run was
  killed (SIGKILL: the last periodic checkpoint) or stopped (Ctrl-C/SIGINT/SIGTERM/SIGHUP: a checkpoint of the
  last completed step; a step cut short is rolled back, its RNG draws included). A resume is checked
  before the model loads: settings and the pairs' content must match the checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.data import load_task, sample_dataset
from core.models.adapters import rekey_for_backbone, write_card, write_metadata
from core.models.registry import decoder_name, load_model
from core.runtime.device import resolve_device
from core.runtime.distributed import dist_info
from core.runtime.errors import TrainError
from core.runtime.files import atomic_write, disk_full, follow_umask, lock_folder
from core.runtime.measure import peak_rss_mb
from core.training.checkpoints import (
    Checkpoint,
    check_resumable,
    interrupts_held,
    latest_checkpoint,
    rng_states,
    set_rng_states,
    set_torch_rng_state,
    stop_signals_interrupt,
    torch_rng_state,
    write_checkpoint,
)
from core.training.config import TrainConfig
from core.training.dataset import load_training_pairs, pair_quality_report
from core.training.lora import attach_lora
from core.training.loss import gather_with_grad, info_nce

__all__ = ["StepResult", "Trainer"]

log = logging.getLogger(__name__)
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


@dataclass(frozen=True)
class StepResult:
    """One optimizer step as logged: the step number reached, its loss, the learning rate it used, its duration."""

    step: int
    loss: float
    lr: float
    seconds: float


class Trainer:
    """One training run writing to ``out``; ``resume`` continues from the latest checkpoint there.

    Everything a user can get wrong (settings for this machine, the pairs, the folder, the checkpoint to resume)
    is checked before the model loads.

    Args:
        config: the run's settings.
        out: the adapter folder; checkpoints go to ``out/checkpoints``.
        resume: continue from the newest intact checkpoint in ``out`` (its settings and pairs must match).
        force: let a fresh run replace a finished adapter in ``out`` (adapter files without checkpoints), which is
            refused otherwise.
    """

    def __init__(self, config: TrainConfig, out: str | Path, resume: bool = False, force: bool = False):
        self.config = config
        self.out = Path(out)
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self._check_environment()
        log.info("phase: reading pairs")  # "phase: " lines are what core.training.jobs shows of a background run
        self.pairs, self.pair_provenance = load_training_pairs(config)
        # One run per folder: a second run would interleave its checkpoints and log rows with this one's. The lock is
        # held while this sets up (it may set damaged checkpoints aside, rewrite the log) and again while it trains.
        self._out_lock = self._claim_out()
        try:
            self._prepare(resume, force)
        finally:
            self.release()

    def _prepare(self, resume: bool, force: bool) -> None:
        config = self.config
        self.checkpoint = self._checkpoint_to_resume() if resume else None
        if not resume and self.is_main:
            self._check_fresh_out(force)
        log.info("phase: loading the model")
        self.loaded = load_model(config.base_model, device=config.device)
        self.peft_model = attach_lora(self.loaded.backbone, config, self.rank)
        self.loaded.peft_model = self.peft_model
        from core.encoding.encoder import Encoder

        setting = config.embedding
        self.encoder = Encoder(
            self.loaded,
            prompt=setting.prompt,
            pooling=setting.pooling,
            layer=str(setting.layer),
            precision=config.precision,
            max_length=setting.max_length,
            cache=False,
        )
        self.plan = self.encoder.plan()
        log.info("phase: tokenizing %d pairs", len(self.pairs))
        self.anchors = self.encoder.prepare([p["anchor"] for p in self.pairs])
        self.positives = self.encoder.prepare([p["positive"] for p in self.pairs])
        self.negatives = self.encoder.prepare([p["negative"] for p in self.pairs]) if self.config.hard_negatives else []
        self.truncated = sum(item.truncated for item in self.anchors + self.positives + self.negatives)
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        # fp16 gradients underflow without loss scaling; in bf16/fp32 the scaler is off (a pass-through).
        self.scaler = torch.amp.GradScaler(self.encoder.device.type, enabled=self.encoder.precision == "fp16")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.scores: list[dict[str, Any]] = []
        self.losses: list[float] = []
        self.started = time.time()
        self.train_seconds = 0.0
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
            self.checkpoint = None  # its tensors are in the model and optimizer now
        self._eval_data = self._load_eval() if config.eval_task else None

    # ----- setup
    def _check_environment(self) -> None:
        """What the settings need of this machine and launch (the settings themselves are valid on construction)."""
        if self.config.batch_size % self.world:
            raise TrainError(f"batch size {self.config.batch_size} does not split over {self.world} processes")
        resolve_device(self.config.device)  # a device this machine lacks fails here, naming the ones it has

    def _check_fresh_out(self, force: bool) -> None:
        """A fresh run needs an ``--out`` without checkpoints, and without a finished adapter unless ``force``."""
        if any(self.out.glob("checkpoints/*")):
            raise TrainError(f"{self.out} already holds checkpoints; pass --resume to continue or choose a new --out")
        if any((self.out / name).exists() for name in ADAPTER_FILES):
            if not force:
                raise TrainError(
                    f"{self.out} holds a finished adapter: training into it would overwrite it and mix two runs' "
                    "logs. Choose a new --out, or pass --force to replace it"
                )
            # Replaced on purpose: the new run's log starts at step 1 rather than after the old run's rows.
            (self.out / "train_log.jsonl").unlink(missing_ok=True)
            shutil.rmtree(self.out / "best", ignore_errors=True)

    def _checkpoint_to_resume(self) -> Checkpoint:
        """The newest intact checkpoint, refused (naming each difference) if this run cannot continue it."""
        checkpoint = latest_checkpoint(self.out / "checkpoints", set_aside=self.is_main)
        check_resumable(checkpoint, self.config, self.pair_provenance, self.world, self.out)
        return checkpoint

    def _claim_out(self) -> int | None:
        """Create ``--out`` (an unwritable one fails now, not after the model load and the training) and lock it
        (main process only): a second run into the same folder is refused while this one sets up or trains."""
        if not self.is_main:
            return None
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainError(f"cannot create --out {self.out}: {exc.strerror}; choose a writable folder") from None
        if not os.access(self.out, os.W_OK | os.X_OK):
            raise TrainError(f"--out {self.out} is not writable; choose a writable folder")
        return lock_folder(self.out, "--out")

    def release(self) -> None:
        """Let another run write into ``--out`` (setup and :meth:`train` do it at their end)."""
        if self._out_lock is not None:
            os.close(self._out_lock)
            self._out_lock = None

    def _lr_factor(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return (step + 1) / (c.warmup_steps + 1)
        return max(0.0, (c.steps - step) / max(1, c.steps - c.warmup_steps))

    # ----- data order: a seeded permutation per epoch, so the position is the step alone
    def batch_indices(self, step: int) -> list[int]:
        c = self.config
        per_epoch = len(self.pairs) // c.batch_size
        epoch, offset = divmod(step, per_epoch)
        order = np.random.default_rng([c.seed, epoch]).permutation(len(self.pairs))
        batch = order[offset * c.batch_size : (offset + 1) * c.batch_size].tolist()
        share = c.batch_size // self.world
        return batch[self.rank * share : (self.rank + 1) * share]

    # ----- forward and step
    def embed(self, items: Sequence[Any]) -> Tensor:
        states = self.encoder.forward(self.encoder.collate(items), self.plan)
        return self.plan.poolings[0](states)

    def loss_of(self, reps: Tensor) -> Tensor:
        """``reps``: anchors, positives (and hard negatives) of the batch, in that order."""
        c = self.config
        parts = list(reps.chunk(3 if c.hard_negatives else 2))
        if self.world > 1:
            parts = [gather_with_grad(part) for part in parts]
        negatives = parts[2] if c.hard_negatives else None
        return info_nce(parts[0], parts[1], c.temperature, c.margin, c.symmetric, negatives)

    def compute_gradients(self, indices: Sequence[int]) -> float:
        """Accumulate parameter gradients of the batch's loss; returns the loss."""
        items = [self.anchors[i] for i in indices] + [self.positives[i] for i in indices]
        items += [self.negatives[i] for i in indices] if self.negatives else []
        micro = self.config.micro_batch_size or len(items)
        if micro >= len(items):
            loss = self.loss_of(self.embed(items))
            self.scaler.scale(loss).backward()
            return float(loss.detach())
        # Longest first: micro-batches of similar lengths waste little on padding.
        order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
        chunks = [order[j : j + micro] for j in range(0, len(order), micro)]
        rng_states, cached = [], torch.zeros(len(items), self.encoder.dim, device=self.encoder.device)
        with torch.no_grad():
            for chunk in chunks:
                rng_states.append(torch_rng_state())
                cached[chunk] = self.embed([items[i] for i in chunk])
        end_state = torch_rng_state()
        cached.requires_grad_(True)
        loss = self.loss_of(cached)
        self.scaler.scale(loss).backward()
        grads = cached.grad
        assert grads is not None
        for chunk, state in zip(chunks, rng_states, strict=True):
            set_torch_rng_state(state)  # the same dropout masks as in the pass without gradient
            self.embed([items[i] for i in chunk]).backward(grads[chunk])
        set_torch_rng_state(end_state)
        return float(loss.detach())

    def train_step(self, record: Callable[[StepResult], None] | None = None) -> StepResult:
        """One optimizer step; ``record`` runs with it, under the same guard against interrupts.

        Interrupted while computing gradients, the step is undone: gradients cleared and the RNG put
        back to the step's start, so a checkpoint taken then resumes exactly where an unbroken run goes.
        """
        started = time.perf_counter()
        at_start = rng_states()
        self.peft_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        try:
            loss = self.compute_gradients(self.batch_indices(self.step))
            if self.world > 1:
                import torch.distributed as dist

                # Each process's loss is the same global loss, so all_gather's backward already summed
                # world copies of each embedding's gradient: the mean over processes is the true gradient.
                for p in params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= self.world
            self.scaler.unscale_(self.optimizer)
            if self.config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        except BaseException:
            self.optimizer.zero_grad(set_to_none=True)
            set_rng_states(at_start)
            raise
        with interrupts_held():
            lr = self.scheduler.get_last_lr()[0]
            self.scaler.step(self.optimizer)  # skips the step where fp16 gradients overflowed
            self.scaler.update()
            self.scheduler.step()
            self.step += 1
            self.losses.append(loss)
            result = StepResult(self.step, loss, lr, time.perf_counter() - started)
            if record is not None:
                record(result)
        return result

    # ----- evaluation
    def _load_eval(self) -> tuple[list[str], list[str]] | None:
        test_split = load_task(self.config.eval_task, "test")  # type: ignore[arg-type]
        dataset = sample_dataset(test_split, self.config.eval_docs, self.config.seed)
        assert dataset.labels is not None
        return dataset.texts, dataset.labels

    def evaluate(self) -> float:
        """V-measure on the dev task (the clustering track's scorer, one k-means seed), adapter on."""
        from core.metrics import score_embeddings

        assert self._eval_data is not None
        texts, labels = self._eval_data
        self.peft_model.eval()
        vectors = self.encoder.encode(texts, normalize=True)
        return score_embeddings(vectors, labels, seeds=(self.config.seed,))["v_measure"]

    # ----- saving
    def metadata(self) -> dict[str, Any]:
        c = self.config
        return {
            "base_model": c.base_model,
            "base_weights_sha256": self.loaded.weights_hash,
            "prompt": self.encoder.prompt.template,
            "pooling": self.encoder.pooling,
            "layer": str(self.encoder.layer),
            "max_length": c.embedding.max_length,
            "training": c.to_dict(),
            "steps_done": self.step,
        }

    def _save_adapter(self, folder: Path) -> None:
        self.peft_model.save_pretrained(str(folder), safe_serialization=True)
        write_metadata(folder, self.metadata())
        follow_umask(folder)  # peft writes safetensors as 0600; the house's one rule is the umask

    def save_checkpoint(self) -> Path | None:
        """A checkpoint of the state after the last completed step (the main process writes it; every process's
        RNG state goes in); returns its folder on the main process."""
        rng = rng_states()
        if self.world > 1:
            import torch.distributed as dist

            states: list[Any] = [None] * self.world
            dist.all_gather_object(states, rng)
            rng_by_rank = states
        else:
            rng_by_rank = [rng]
        if not self.is_main:
            return None
        per_epoch = len(self.pairs) // self.config.batch_size
        resume_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_by_rank": rng_by_rank,
        }
        state = {
            "step": self.step,
            "epoch": self.step // per_epoch,
            "batch_in_epoch": self.step % per_epoch,
            "world_size": self.world,
            "config": self.config.to_dict(),
            "data": self.pair_provenance,  # the pairs' fingerprint: a resume must train on the same ones
            "losses": self.losses,
            "scores": self.scores,
            "best": self.best,
            "train_seconds": self.train_seconds,
        }
        root = self.out / "checkpoints"
        return write_checkpoint(root, self.step, self._save_adapter, resume_state, state, self.config.keep_checkpoints)

    def _restore(self, checkpoint: Checkpoint) -> None:
        from peft import set_peft_model_state_dict

        # A run checkpointed before adapters moved to the backbone saved its tensors on the causal LM.
        weights = rekey_for_backbone(checkpoint.weights, decoder_name(self.loaded.model))
        set_peft_model_state_dict(self.peft_model, weights)
        self.optimizer.load_state_dict(checkpoint.blob["optimizer"])
        self.scheduler.load_state_dict(checkpoint.blob["scheduler"])
        if checkpoint.blob.get("scaler"):  # fp16 only: the loss scale reached
            self.scaler.load_state_dict(checkpoint.blob["scaler"])
        set_rng_states(checkpoint.blob["rng_by_rank"][self.rank])
        state = checkpoint.state
        self.step = state["step"]
        self.losses = state["losses"]
        self.scores = state["scores"]
        self.best = state["best"]
        self.train_seconds = state["train_seconds"]
        if self.is_main and (self.out / "train_log.jsonl").is_file():
            kept = []
            for line in (self.out / "train_log.jsonl").read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by a kill
                    continue
                if row.get("step", 0) <= self.step:
                    kept.append(line + "\n")
            with atomic_write(self.out / "train_log.jsonl") as handle:
                handle.write("".join(kept))

    # ----- the loop
    def _maybe_evaluate(self, log_file: Any) -> None:
        if self._eval_data is None or not self.is_main:
            return
        score = self.evaluate()
        entry = {"step": self.step, "task": self.config.eval_task, "v_measure": score}
        self.scores.append(entry)
        log_file.write(json.dumps({"event": "eval", **entry}) + "\n")
        if self.best is None or score > self.best["v_measure"]:
            self.best = entry
            if self.step > 0:
                staging = self.out / ".tmp-best"
                shutil.rmtree(staging, ignore_errors=True)
                self._save_adapter(staging)
                shutil.rmtree(self.out / "best", ignore_errors=True)
                os.replace(staging, self.out / "best")

    def _eval_due(self) -> bool:
        c = self.config
        if not c.eval_task or any(entry["step"] == self.step for entry in self.scores):
            return False
        return self.step == 0 or self.step % c.eval_every == 0 or self.step == c.steps

    def train(self, callback: Callable[[StepResult], None] | None = None) -> dict[str, Any]:
        """Run to ``config.steps``; Ctrl-C, SIGTERM or SIGHUP saves a checkpoint (single process) and re-raises
        ``KeyboardInterrupt``.

        The checkpoint is the state after the last completed step: a step cut short is undone
        (:meth:`train_step`), and a signal during a step's update waits for the update to end.
        ``--out`` is free for another run afterwards, however the run ended.
        """
        self._out_lock = lock_folder(self.out, "--out") if self.is_main else None
        try:
            with stop_signals_interrupt():
                return self._train(callback)
        except Exception as error:
            full = disk_full(error, self.out, then="continue with the same command plus --resume")
            if full is None:
                raise
            raise full from None
        finally:
            self.release()

    def _train(self, callback: Callable[[StepResult], None] | None) -> dict[str, Any]:
        from tqdm.auto import tqdm

        c = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=c.steps, initial=self.step, desc="training", disable=not (c.progress and self.is_main))
        log_file = open(self.out / "train_log.jsonl", "a") if self.is_main else open(os.devnull, "w")  # noqa: SIM115
        first_step, loop_started = self.step, time.perf_counter()

        def record(result: StepResult) -> None:
            rate = (self.step - first_step) * c.batch_size / (time.perf_counter() - loop_started)
            row = {
                "step": result.step,
                "loss": result.loss,
                "lr": result.lr,
                "seconds": result.seconds,
                "pairs_per_s": rate,
                "peak_rss_mb": round(peak_rss_mb()),
            }
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}", pairs_s=f"{rate:.1f}")
            bar.update(1)

        try:
            if self._eval_due():  # step 0, or a resume from a checkpoint taken before its evaluation ran
                log.info("phase: evaluating")
                self._maybe_evaluate(log_file)
            log.info("phase: training")
            while self.step < c.steps:
                result = self.train_step(record)
                if self._eval_due():
                    self._maybe_evaluate(log_file)
                if c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.step < c.steps:
                    self.train_seconds += time.perf_counter() - loop_started
                    loop_started, first_step = time.perf_counter(), self.step
                    self.save_checkpoint()
                if callback is not None:
                    callback(result)
        except KeyboardInterrupt:
            self.train_seconds += time.perf_counter() - loop_started
            self.optimizer.zero_grad(set_to_none=True)
            if self.world == 1:  # collectives cannot be trusted mid-interrupt; ranks>1 resume from the last one
                saved = self.save_checkpoint()
                log.warning("interrupted after step %d: checkpoint %s; continue with --resume", self.step, saved)
            raise
        finally:
            bar.close()
            log_file.close()
        self.train_seconds += time.perf_counter() - loop_started
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Write the final adapter, its card and README into ``out`` (main process only)."""
        c = self.config
        log.info("phase: writing the adapter")
        pairs_per_s = (self.step * c.batch_size) / max(self.train_seconds, 1e-9)
        card = {
            "settings": c.to_dict(),
            "metadata": self.metadata(),
            "data": {
                **self.pair_provenance,
                "pairs": len(self.pairs),
                "methods": dict(Counter(p.get("method", "file") for p in self.pairs)),
                "sources": dict(Counter(str(p.get("source", c.pairs)) for p in self.pairs).most_common()),
                "truncated_texts": self.truncated,
                "quality": pair_quality_report(c, self.pair_provenance),
            },
            "run": {
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "train_seconds": round(self.train_seconds, 1),
                "pairs_per_s": round(pairs_per_s, 2),
                "peak_rss_mb": round(peak_rss_mb()),
                "world_size": self.world,
                "precision": self.encoder.precision,
                "torch_threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "trainable_parameters": sum(p.numel() for p in self.peft_model.parameters() if p.requires_grad),
                "lora_targets": sorted(self.peft_model.peft_config["default"].target_modules),
            },
            "loss": {
                "first": self.losses[0] if self.losses else None,
                "last": self.losses[-1] if self.losses else None,
                "curve_every_10": self.losses[::10],
            },
            "scores": self.scores,
            "best": self.best,
        }
        if self.is_main:
            staging = self.out / ".tmp-final"
            shutil.rmtree(staging, ignore_errors=True)
            self._save_adapter(staging)
            write_card(staging, card)
            for item in staging.iterdir():
                os.replace(item, self.out / item.name)
            staging.rmdir()
        return card
