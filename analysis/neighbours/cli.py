"""``python -m analysis.neighbours``: which texts moved between two embeddings, as CSV files.

Two sources of the two spaces:

    # base vs adapter on a local task (or a user file), one shared-trunk pass
    python -m analysis.neighbours --adapter adapters/smollm2-135m-embed --task trec-coarse --n 1000 --out results/nb
    # any two saved runs of the same texts (python -m core.embed outputs), e.g. two models, methods or layers
    python -m analysis.neighbours --runs a/vectors.npy,b/vectors.npy --texts texts.csv --label-column label --out nb

Writes ``neighbours.csv`` (per text: Jaccard@k, rank change, neighbour indices in each space), ``movers.csv``
(biggest movers with their neighbours before and after), ``clusters.csv`` (c-TF-IDF names per cluster) and
``summary.json`` (means with 95% bootstrap CIs over texts) into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.runtime.arguments import add_arguments, from_arguments, given, option
from core.runtime.errors import ConfigError

__all__ = ["NeighboursConfig", "main"]


@dataclass(frozen=True)
class NeighboursConfig:
    """What to compare and how. Invariants: ``runs`` is empty or two paths (then ``texts`` is set); ``k >= 1``,
    ``top >= 0``, ``n_clusters`` is 0 or >= 2, ``n >= 5``."""

    runs: list[str] = option(default_factory=list, help="two saved runs A.npy,B.npy (python -m core.embed outputs)")
    texts: str | None = option(None, help="with --runs: the text file both runs embedded (.txt, .csv, .jsonl, ...)")
    text_column: str = option("text", help="text column of --texts (or of a --task file)")
    label_column: str | None = option(None, help="label column of --texts (or of a --task file); none by default")
    model: str | None = option(None, help="without --runs: model (default: the adapter's base, else smollm2-135m)")
    adapter: str | None = option(None, help="without --runs: the LoRA adapter folder compared with its base")
    task: str = option("trec-coarse", help="without --runs: a local task (test split) or a user file path")
    n: int = option(1000, help="without --runs: texts sampled (seed 42) from --task", flag="--n")
    k: int = option(10, help="neighbours per text")
    top: int = option(50, help="movers listed in movers.csv")
    n_clusters: int = option(
        0, help="k-means clusters to name per side (0: gold labels when there are, else 8)", flag="--clusters"
    )
    words: int = option(5, help="top c-TF-IDF words per cluster")
    n_boot: int = option(2000, help="bootstrap resamples of texts for the CIs")
    device: str = option("auto", help="auto, cpu, cuda, mps")
    out: str = option("results/neighbours", help="folder the CSV and JSON files are written to")

    def __post_init__(self) -> None:
        if self.runs and len(self.runs) != 2:
            raise ConfigError(f"--runs takes two .npy files separated by a comma, got {len(self.runs)}.")
        if self.runs and not self.texts:
            raise ConfigError("--runs needs --texts: the text file both runs embedded, to name the texts.")
        if not self.runs and not self.adapter:
            raise ConfigError("Give --runs A.npy,B.npy with --texts, or --adapter DIR to compare base and adapter.")
        for name, value, low in (
            ("--k", self.k, 1),
            ("--top", self.top, 0),
            ("--n", self.n, 5),
            ("--words", self.words, 1),
            ("--n-boot", self.n_boot, 100),
        ):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}.")
        if self.n_clusters == 1 or self.n_clusters < 0:
            raise ConfigError(f"--clusters must be 0 (gold labels) or at least 2, got {self.n_clusters}.")


def _from_runs(config: NeighboursConfig):
    from analysis.neighbours.runs import load_pair

    pair = load_pair(config.runs[0], config.runs[1], config.texts, config.text_column, config.label_column)
    extra = {
        "runs": [{"path": str(run.path), "settings": run.settings} for run in pair.runs],
        "texts_file": config.texts,
    }
    return pair.texts, pair.labels, (pair.runs[0].vectors, pair.runs[1].vectors), pair.names, extra


def _from_adapter(config: NeighboursConfig, chosen: dict):
    from analysis.sides import embed_sides
    from core.data import load_task, load_user_file, sample_dataset
    from core.encoding.encoder import Encoder
    from core.encoding.setting import EmbeddingSetting
    from core.models.adapters import read_metadata
    from core.models.registry import DEFAULT_MODEL

    path = Path(config.task)
    dataset = (
        load_user_file(path, config.text_column, config.label_column)
        if path.suffix and path.is_file()
        else load_task(config.task, "test")
    )
    dataset = sample_dataset(dataset, min(config.n, len(dataset)))
    metadata = read_metadata(config.adapter)
    model = config.model or metadata.get("base_model") or DEFAULT_MODEL
    setting = EmbeddingSetting.resolve(metadata, **chosen)
    encoder = Encoder(
        model,
        config.adapter,
        method=setting.method,
        prompt=setting.prompt,
        pooling=setting.pooling,
        layer=str(setting.layer),
        max_length=setting.max_length,
        device=config.device,
    )
    if not encoder.loaded.has_adapter:
        raise ConfigError(
            f"{config.adapter} loaded no adapter; give a LoRA adapter folder made by python -m core.train."
        )
    started = time.perf_counter()
    vectors = embed_sides(encoder, dataset.texts, lambda done, total: print(f"\rembedded {done}/{total}", end=""))
    print(f"\nembedded {len(dataset)} texts x 2 sides in {time.perf_counter() - started:.1f} s")
    extra = {"model": model, "adapter": config.adapter, "task": config.task, "setting": setting.to_dict()}
    return dataset.texts, dataset.labels, (vectors["base"], vectors["adapter"]), ("base", "adapter"), extra


def main(argv: Sequence[str] | None = None) -> int:
    from analysis.neighbours.report import build_report, check_out, write_report
    from core.encoding.setting import EmbeddingSetting

    parser = argparse.ArgumentParser(
        prog="python -m analysis.neighbours",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    add_arguments(parser, NeighboursConfig)
    add_arguments(parser.add_argument_group("embedding setting (with --adapter)"), EmbeddingSetting)
    args = parser.parse_args(argv)
    config = from_arguments(NeighboursConfig, args)
    check_out(Path(config.out))  # before the slow part
    if config.runs:
        texts, labels, spaces, names, extra = _from_runs(config)
    else:
        texts, labels, spaces, names, extra = _from_adapter(config, given(EmbeddingSetting, args))
    started = time.perf_counter()
    report = build_report(
        texts,
        labels,
        spaces,
        names,
        k=config.k,
        top=config.top,
        n_clusters=config.n_clusters,
        words=config.words,
        n_boot=config.n_boot,
    )
    seconds = time.perf_counter() - started
    write_report(report, config.out, {**extra, "seconds": round(seconds, 2)})
    jaccard = report.summary["jaccard"]
    print(
        f"{len(texts)} texts, k={config.k}: mean Jaccard@{config.k} {jaccard['mean']:.3f} "
        f"[{jaccard['ci_low']:.3f}, {jaccard['ci_high']:.3f}], {report.summary['unchanged']} texts kept every "
        f"neighbour, {len(report.movers)} movers listed; {seconds:.1f} s; wrote {config.out}/"
    )
    return 0
