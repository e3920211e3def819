"""Speed check: the corpus lens and layer profile against one plain encode of the same sample, in one run.

    python -m analysis.lens.bench --adapter adapters/smollm2-135m-embed --n 600

Prints seconds of (1) one plain encode of the sample (the adapter's setting, one pooling, one layer, no cache),
(2) the lens path: every layer and pooling for base and adapter from one shared forward per text, the lens of
every layer for both variants (raw and first-PC-removed, LM-head products batched, top-k kept) and the layer
profile (V-measure per pooling and layer, anisotropy, effective rank), and their ratio; the target is at most 3.
With ``--repeats R`` the two alternate (A B A B ...) and each pair gives a ratio, so a drift in the machine's
speed hits both sides of a pair alike; the median ratio is the answer.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.runtime.arguments import add_arguments, from_arguments, option
from core.runtime.errors import ConfigError, run_cli

__all__ = ["BenchConfig", "main", "run_bench"]


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark settings; ``n >= 10``."""

    adapter: str = option("adapters/smollm2-135m-embed", help="adapter folder (its base model is loaded)")
    model: str | None = option(None, help="model name or folder (default: the adapter's base model)")
    task: str = option("trec-coarse", help="labelled task the sample comes from")
    n: int = option(600, help="texts in the sample")
    seed: int = option(0, help="sampling seed")
    kmeans_seeds: int = option(1, help="k-means seeds per V-measure in the profile")
    repeats: int = option(1, help="alternating (plain encode, lens path) pairs; the median ratio is reported")
    check: bool = option(False, help="also compare the lens with the per-layer reference (project) at every layer")
    device: str = option("auto", help="auto, cpu, cuda, cuda:N or mps")

    def __post_init__(self) -> None:
        if self.n < 10:
            raise ConfigError(f"--n {self.n}: use at least 10 texts.")
        if self.kmeans_seeds < 1:
            raise ConfigError("--kmeans-seeds must be at least 1.")
        if self.repeats < 1:
            raise ConfigError("--repeats must be at least 1.")


def run_bench(config: BenchConfig) -> dict[str, float]:
    """Seconds of the plain encode and of each part of the lens path (medians over the repeats), every pair's ratio
    (``ratio_1``, ``ratio_2``, ...) and their median ``ratio`` (lens path / plain encode)."""
    from analysis.lens.corpus import lens_corpora
    from analysis.lens.inputs import encode_layers, layer_combos
    from analysis.lens.profile import layer_profile
    from analysis.lens.report import DEFAULT_POOLINGS, LensConfig, build_encoder
    from analysis.lens.vocabulary import content_token_ids, lens_head
    from core.data import resolve_dataset
    from core.data.sampling import sample_indices

    encoder, setting = build_encoder(LensConfig(adapter=config.adapter, model=config.model, device=config.device))
    dataset = resolve_dataset(config.task)
    index = sample_indices(len(dataset.texts), config.n, config.seed)
    texts = [dataset.texts[i] for i in index]
    labels = [dataset.labels[i] for i in index] if dataset.labels else None
    loaded = encoder.loaded
    states = loaded.num_layers + 1
    encoder.encode(texts[:4])  # warm-up: first-call allocations are not part of either side
    poolings = tuple(dict.fromkeys((setting.pooling, *DEFAULT_POOLINGS)))
    seeds = list(range(42, 42 + config.kmeans_seeds))
    runs: list[dict[str, float]] = []
    for _ in range(config.repeats):
        tick = time.perf_counter()
        encoder.encode(texts)
        run = {"plain_encode": time.perf_counter() - tick}
        tick = time.perf_counter()
        grid = encode_layers(encoder, texts, layer_combos(poolings, states), (False, True))
        run["forward_all_layers_both"] = time.perf_counter() - tick
        tick = time.perf_counter()
        head = lens_head(loaded)
        targets = content_token_ids(encoder.prepare(texts))
        by_variant = {name: {i: grid[name][(setting.pooling, i)] for i in range(states)} for name in grid}
        spent: dict[str, float] = {}
        lenses = lens_corpora(head, by_variant, loaded.num_layers, targets, top_k=10, timings=spent)
        run["lens_all_layers_both"] = time.perf_counter() - tick
        run["  of which LM-head products"] = spent["lm_head_products"]
        distinct = int(spent["distinct_layers"])
        if config.check:
            print(f"lens equals the per-layer reference: {_differences(head, by_variant, lenses, targets, states)}")
        tick = time.perf_counter()
        layer_profile(grid, labels, None, poolings, states, seeds)
        run["profile"] = time.perf_counter() - tick
        run["lens_path_total"] = run["forward_all_layers_both"] + run["lens_all_layers_both"] + run["profile"]
        run["distinct_layers"] = distinct
        runs.append(run)
    result = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    ratios = [run["lens_path_total"] / run["plain_encode"] for run in runs]
    result.update({f"ratio_{i + 1}": r for i, r in enumerate(ratios)})
    result["ratio"] = float(np.median(ratios))
    return result


def _differences(head, by_variant, lenses, targets, states: int) -> str:
    """Where the batched lens differs from separate ``project`` calls per layer and variant (the reference)."""
    import torch

    from analysis.lens.corpus import LENS_VIEWS, RANK_CAP
    from analysis.lens.vocabulary import alignment_measures, first_component, project

    differing, compared, probs = 0, 0, 0.0
    for name, by_layer in by_variant.items():
        for layer in range(states):
            normed = head.normed(torch.as_tensor(by_layer[layer]), already_normed=layer == states - 1)
            component = first_component(normed.numpy())
            reference = project(head, normed, top_k=10, targets=targets, removals=(None, component), rank_cap=RANK_CAP)
            for view, projection in zip(LENS_VIEWS, reference, strict=True):
                lens = lenses[name]
                for measure, values in alignment_measures(projection.target_ranks, 10).items():
                    got = lens.measures[view][measure][:, layer]
                    differing += int((~np.isclose(got, values, rtol=0, atol=0, equal_nan=True)).sum())
                    compared += len(values)
                differing += int((lens.top1[view][:, layer] != projection.top_ids[:, 0]).sum())
                compared += len(projection.top_ids)
                shown = len(lens.example_probs[view])
                probs = max(
                    probs, float(np.abs(lens.example_probs[view][:, layer] - projection.top_probs[:shown]).max())
                )
    verdict = "yes" if differing == 0 else "NO"
    return f"{verdict} ({differing} of {compared} per-text values differ; largest shown-probability gap {probs:.1e})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.lens.bench", description=__doc__.splitlines()[0])
    add_arguments(parser, BenchConfig)
    config = from_arguments(BenchConfig, parser.parse_args(argv))
    result = run_bench(config)
    print(f"{config.n} texts of {config.task}, adapter {config.adapter}")
    print(f"  {int(result.pop('distinct_layers'))} distinct (variant, hidden state) vector sets read by the lens "
          "(base and adapter share the layers below the LoRA)")  # fmt: skip
    for key, value in result.items():
        if not key.startswith("ratio"):
            share = f" = {value / result['plain_encode']:.2f} encodes" if key != "plain_encode" else ""
            print(f"  {key:28s} {value:8.1f} s{share}" + (" (median)" if config.repeats > 1 else ""))
    pairs = ", ".join(f"{result[f'ratio_{i + 1}']:.2f}" for i in range(config.repeats))
    verdict = "within" if result["ratio"] <= 3 else "over"
    print(f"ratio lens path / plain encode: {result['ratio']:.2f} ({verdict} the target of 3); per pair: {pairs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
