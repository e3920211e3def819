"""``python -m core.train --pairs pairs.jsonl --out DIR``: train a LoRA adapter (also under ``torchrun``).

Every option comes from a field of :class:`~core.training.config.TrainConfig` or
:class:`~core.encoding.setting.EmbeddingSetting` (its help written once, there); ``--config recipe.json`` reads a
flat JSON of the same names, and the flags given override it. With no flag but ``--pairs`` and ``--out`` the run
makes the recommended adapter (the shipped recipe's settings).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.encoding.setting import EmbeddingSetting
from core.runtime.arguments import add_arguments, given
from core.runtime.distributed import init_distributed
from core.runtime.errors import TrainError
from core.training.config import TRAIN_MAX_LENGTH, TrainConfig
from core.training.trainer import Trainer

__all__ = ["build_parser", "config_from_args", "main"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m core.train``; a setting left out parses as ``None`` (not given)."""
    parser = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="adapter folder (checkpoints inside)")
    parser.add_argument("--config", type=Path, help="JSON file of settings (a recipe); flags override it")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--force", action="store_true", help="replace a finished adapter in --out (refused without it)")
    add_arguments(parser, TrainConfig)
    add_arguments(parser.add_argument_group("embedding"), EmbeddingSetting, exclude=("method",))
    # The setting's own default is inference's; training reads fewer tokens unless told otherwise.
    for action in parser._actions:
        if action.dest == "max_length" and action.help:
            action.help = action.help.rsplit(" (default:", 1)[0] + f" (default: {TRAIN_MAX_LENGTH} in training)"
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: the ``--config`` file's, then the flags given, over the defaults."""
    values: dict[str, Any] = {}
    source = "the settings"
    if getattr(args, "config", None) is not None:
        source = f"config {args.config}"
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise TrainError(f"cannot read config {args.config}: {exc}") from None
        if not isinstance(loaded, dict):
            raise TrainError(f"config {args.config} must be a JSON object")
        values.update(loaded)
    values.update(given(TrainConfig, args))
    values.update(given(EmbeddingSetting, args))
    return TrainConfig.from_dict(values, source=source)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.train``; also under ``torchrun --nproc_per_node=N -m core.train``.

    Returns:
        0 when the adapter is written, 130 when a signal stopped the run (after its checkpoint). Problems a user can
        fix raise a ``LensError`` (``run_cli`` prints it and exits 2).
    """
    args = build_parser().parse_args(argv)
    trainer: Trainer | None = None
    try:
        config = config_from_args(args)
        init_distributed()
        trainer = Trainer(config, args.out, resume=args.resume, force=args.force)
        if trainer.is_main:
            print(
                f"{len(trainer.pairs)} pairs ({trainer.truncated} texts truncated at {config.embedding.max_length} "
                f"tokens), {trainer.world} process(es), {trainer.encoder.precision}, "
                f"from step {trainer.step} to {config.steps}"
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
