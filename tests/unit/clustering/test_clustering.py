"""analysis.clustering on a tiny Llama: grid, resume, scores equal mteb's evaluator, summary, bad input."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from analysis import clustering
from analysis.clustering import (
    score_embeddings,
    summary_tables,
)
from analysis.clustering.__main__ import main as grid_main
from analysis.clustering.mteb_tasks import local_clustering_task
from core.data import Dataset, content_sha256, mteb_subsample, mteb_subsample_indices
from core.encoding.encoder import Encoder
from core.runtime.errors import run_cli


def main(argv: list[str]) -> int:
    """The CLI as ``python -m analysis.clustering`` runs it: errors become ``error: ...`` and exit 2."""
    return run_cli(grid_main, argv)


TOPICS = {
    "animals": ["dog", "cat", "horse", "bird", "cow", "sheep"],
    "city": ["street", "car", "house", "market", "bus", "road"],
    "nature": ["river", "tree", "garden", "flower", "forest", "lake"],
}


def synthetic_rows(per_label: int = 8, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(per_label):
            rows.append({"text": "The " + " ".join(rng.choices(words, k=rng.randint(3, 7))) + ".", "label": label})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = ("text", "label")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, row.get("text")) for c in columns})
    return path


@pytest.fixture
def labelled_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "topics.csv", synthetic_rows())


class GridCalls(list):
    """The (pooling, layer) combos of each grid forward; ``variants`` holds each call's use_adapter values."""

    def __init__(self) -> None:
        super().__init__()
        self.variants: list[tuple[bool, ...]] = []

    def clear(self) -> None:
        super().clear()
        self.variants.clear()


@pytest.fixture
def grid_calls(monkeypatch) -> GridCalls:
    """Records every top-level Encoder.encode_grid call: one call = one forward pass per batch, shared by
    base and adapter when both are asked for (an ensemble's per-prompt passes inside it are not counted)."""
    calls = GridCalls()
    original = Encoder.encode_grid
    depth = [0]

    def counting(self, texts, combos=None, *, variants=None, **kwargs):
        if depth[0] == 0:
            calls.append([(mode, str(layer)) for mode, layer in combos])
            calls.variants.append(tuple(variants))
        depth[0] += 1
        try:
            return original(self, texts, combos, variants=variants, **kwargs)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(Encoder, "encode_grid", counting)
    return calls


def cli(model_dir: Path, task: str, out: Path, *extra: str) -> list[str]:
    return [
        "--models",
        str(model_dir),
        "--prompts",
        "none,cluster",
        "--poolings",
        "mean,last",
        "--tasks",
        task,
        "--out",
        str(out),
        "--no-baseline",
        "--no-cache",
        "--quiet",
        "--precision",
        "fp32",
        *extra,
    ]


def cell_files(out: Path) -> list[Path]:
    return sorted((out / "cells").rglob("*.json"))


# --------------------------------------------------------------------------------------------
# The grid


def test_grid_writes_cells_and_summary_then_resumes(tiny_model_dir, labelled_csv, tmp_path, grid_calls, capsys):
    out = tmp_path / "grid"
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    printed = capsys.readouterr().out
    assert "wall time" in printed and "texts/s" in printed
    files = cell_files(out)
    assert len(files) == 4  # 2 prompts x 2 poolings
    assert len(grid_calls) == 2  # one forward per prompt serves both poolings
    assert sorted(map(sorted, grid_calls)) == [[("last", "-1"), ("mean", "-1")]] * 2
    cell = json.loads(files[0].read_text())
    for field in ("model", "weights_sha256", "adapter_sha256", "prompt", "pooling", "layer", "precision", "versions"):
        assert field in cell
    assert cell["precision"] == "fp32" and cell["adapter_sha256"] is None
    assert set(cell["prompt"]) == {"name", "template"}
    assert cell["task"]["dataset_sha256"] == content_sha256(
        *zip(*[(r["text"], r["label"]) for r in synthetic_rows()], strict=True)
    )
    assert cell["task"]["texts"] == 24 and cell["task"]["clusters"] == 3
    assert cell["kmeans"]["seeds"] == list(clustering.DEFAULT_KMEANS_SEEDS)
    assert len(cell["scores"]["v_measure_per_seed"]) == 5
    assert {"v_measure", "v_measure_std", "ami", "ami_std", "ari", "ari_std"} <= set(cell["scores"])
    assert set(cell["versions"]) >= {"torch", "transformers", "mteb", "scikit-learn"}
    assert "git_commit" in cell
    timing = cell["timing"]
    assert timing["forward_batches"] >= 1 and timing["texts_per_second"] > 0 and timing["tokens"] > 24
    for name in ("summary.md", "summary.csv", "summary.html"):
        assert (out / name).is_file()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 4 and {"topics", "average", "topics_std"} <= set(rows[0])
    assert "| none | mean | -1 |" in (out / "summary.md").read_text()

    # Rerun: every cell is already scored, so nothing is embedded and no file changes.
    before = {p: p.read_bytes() for p in files}
    grid_calls.clear()
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    assert grid_calls == []
    assert {p: p.read_bytes() for p in cell_files(out)} == before
    assert "0 computed, 4 already done" in capsys.readouterr().out

    # A missing cell is recomputed alone (one forward, only its pooling); the others stay as they were.
    missing = next(p for p in files if "__cluster__last__" in p.name)
    missing.unlink()
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    assert grid_calls == [[("last", "-1")]]
    assert missing.is_file()
    assert all(p.read_bytes() == data for p, data in before.items() if p != missing)
    assert json.loads(missing.read_text())["scores"] == json.loads(before[missing])["scores"]


def test_grid_writes_each_cell_as_an_mteb_result_that_mteb_reads(tiny_model_dir, labelled_csv, tmp_path, grid_calls):
    from mteb import ResultCache

    from analysis.clustering.mteb_results import MTEB_FOLDER, cell_model_name

    out = tmp_path / "grid"
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    cells = {cell_model_name(cell): cell for cell in map(json.loads, map(Path.read_text, cell_files(out)))}

    def read_back() -> dict[str, float]:
        results = ResultCache(out / MTEB_FOLDER).load_results(include_remote=False)
        scores = {}
        for model in results.model_results:
            [task] = model.task_results
            assert task.task_name == "topics" and (Path(out / MTEB_FOLDER) / "results").is_dir()
            assert model.model_revision == cells[model.model_name]["weights_sha256"][:12]
            scores[model.model_name] = task.get_score()
        return scores

    assert read_back() == pytest.approx({name: cell["scores"]["v_measure"] for name, cell in cells.items()}, abs=1e-6)
    assert len(list((out / MTEB_FOLDER).rglob("model_meta.json"))) == 4

    # A stored cell whose mteb result is missing (a run cut off between the two writes) gets it back, unembedded.
    missing = next((out / MTEB_FOLDER).rglob("topics.json"))
    missing.unlink()
    grid_calls.clear()
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    assert grid_calls == [] and missing.is_file()
    assert len(read_back()) == 4


def test_summary_covers_the_folder_and_the_run_supersedes_stored_rows(tiny_model_dir, labelled_csv, tmp_path):
    """A second run into the same folder adds its rows; a row it recomputes with other settings replaces the old."""
    out = tmp_path / "grid"
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    second = cli(tiny_model_dir, str(labelled_csv), out, "--kmeans-seeds", "1,2")
    second[second.index("--prompts") + 1] = "cluster,eol"
    assert main(second) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["prompt"], r["pooling"]) for r in rows] == [
        ("none", "mean"),
        ("none", "last"),
        ("eol", "mean"),
        ("eol", "last"),
        ("cluster", "mean"),
        ("cluster", "last"),
    ]  # fmt: skip: the canonical order (prompts and poolings as registered), not the runs' order
    assert len(cell_files(out)) == 8  # the superseded cluster cells stay on disk
    assert "seeds [1, 2], [42, 43, 44, 45, 46]" in (out / "summary.md").read_text()


def test_changed_settings_make_new_cells(tiny_model_dir, labelled_csv, tmp_path, grid_calls):
    out = tmp_path / "grid"
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    grid_calls.clear()
    assert main(cli(tiny_model_dir, str(labelled_csv), out, "--kmeans-seeds", "1,2")) == 0
    assert len(grid_calls) == 2 and len(cell_files(out)) == 8
    assert main(cli(tiny_model_dir, str(labelled_csv), out, "--max-texts", "12")) == 0
    assert len(cell_files(out)) == 12
    sampled = [json.loads(p.read_text()) for p in cell_files(out)]
    assert {c["task"]["subsample_size"] for c in sampled} == {None, 12}


def test_adapter_and_base_come_from_one_model(tiny_model_dir, labelled_csv, tmp_path, grid_calls):
    from peft import LoraConfig, get_peft_model

    from core.models.registry import load_model

    adapter_dir = tmp_path / "adapter"
    loaded = load_model(str(tiny_model_dir))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(loaded.model, lora).save_pretrained(adapter_dir)

    out = tmp_path / "grid"
    assert main(cli(tiny_model_dir, str(labelled_csv), out)) == 0
    base_cells = {p.name: p.read_bytes() for p in cell_files(out)}
    grid_calls.clear()
    argv = _with_models(cli(tiny_model_dir, str(labelled_csv), out), f"{tiny_model_dir}+{adapter_dir}")
    assert main(argv) == 0
    cells = [json.loads(p.read_text()) for p in cell_files(out)]
    assert len(cells) == 8
    assert len(grid_calls) == 2  # the base cells were already there; adapter: one forward per prompt
    adapter_cells = [c for c in cells if c["use_adapter"]]
    assert len(adapter_cells) == 4 and all(c["adapter_sha256"] for c in adapter_cells)
    assert {p.name: p.read_bytes() for p in cell_files(out) if p.name in base_cells} == base_cells
    scores, _ = summary_tables(cells)
    assert len(scores) == 8 and scores.index.get_level_values("variant").nunique() == 2


def test_base_and_adapter_rows_share_one_trunk(tiny_model_dir, labelled_csv, tmp_path, grid_calls):
    """A fresh base+adapter grid runs each (task, method, prompt) once for both rows, with the layers below the
    adapter's top-layer LoRA run once per batch, and writes the same cells as the rows computed one at a time."""
    from peft import LoraConfig, get_peft_model

    from core.models.registry import load_model
    from tests.conftest import TINY_LAYERS

    adapter_dir = tmp_path / "adapter"
    loaded = load_model(str(tiny_model_dir))
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[TINY_LAYERS - 1],
        init_lora_weights=False,
    )  # fmt: skip
    get_peft_model(loaded.model, lora).save_pretrained(adapter_dir)
    pair = f"{tiny_model_dir}+{adapter_dir}"

    apart, together = tmp_path / "apart", tmp_path / "together"
    assert main(cli(tiny_model_dir, str(labelled_csv), apart)) == 0  # base rows alone, then the adapter rows alone
    assert main(_with_models(cli(tiny_model_dir, str(labelled_csv), apart), pair)) == 0
    assert grid_calls.variants == [(False,)] * 2 + [(True,)] * 2
    grid_calls.clear()
    assert main(_with_models(cli(tiny_model_dir, str(labelled_csv), together), pair)) == 0
    assert grid_calls.variants == [(False, True)] * 2  # one call per prompt serves both rows

    def cells(out: Path) -> dict[str, dict]:
        return {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in cell_files(out)}

    separate, shared = cells(apart), cells(together)
    assert sorted(shared) == sorted(separate) and len(shared) == 8  # same keys, so the same files
    base_batches = {
        (c["prompt"]["name"], c["pooling"]): c["timing"]["forward_batches"]
        for c in separate.values()
        if not c["use_adapter"]
    }
    rows = [Path(tiny_model_dir).name, f"{Path(tiny_model_dir).name}+adapter"]
    for name, cell in shared.items():
        assert cell["key"] == separate[name]["key"]
        for score in ("v_measure", "ami", "ari"):
            assert cell["scores"][score] == pytest.approx(separate[name]["scores"][score], abs=1e-6)
        assert cell["timing"]["variants_sharing_forward"] == rows
        # The backbone ran whole once per batch for both rows (the adapter row reran its top layer only).
        assert cell["timing"]["forward_batches"] == base_batches[(cell["prompt"]["name"], cell["pooling"])]
    adapter_cells = [c for c in shared.values() if c["use_adapter"]]
    assert len(adapter_cells) == 4 and all(c["adapter_sha256"] for c in adapter_cells)


def _with_models(argv: list[str], models: str) -> list[str]:
    argv = list(argv)
    argv[argv.index("--models") + 1] = models
    return argv


def test_mteb_task_name_runs_through_mteb_task_data(tiny_model_dir, labelled_csv, tmp_path, monkeypatch):
    from analysis.clustering import mteb_tasks

    rows = synthetic_rows()
    dataset = Dataset("topics", [r["text"] for r in rows], [r["label"] for r in rows], "x", "test")
    monkeypatch.setattr(mteb_tasks, "get_mteb_clustering_task", lambda name: local_clustering_task(dataset))
    out = tmp_path / "grid"
    assert main(cli(tiny_model_dir, "FakeClustering.v2", out)) == 0
    cell = json.loads(cell_files(out)[0].read_text())
    assert cell["task"]["kind"] == "mteb" and cell["task"]["texts"] == 24
    assert cell["task"]["dataset_sha256"] == content_sha256(dataset.texts, dataset.labels)


# --------------------------------------------------------------------------------------------
# Scores and subsampling equal mteb's


def clustered_matrix(n: int = 300, k: int = 6, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(size=(k, dim)) * 1.2
    vectors = (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return vectors, [f"c{label}" for label in labels]


class FixedVectors:
    """A stand-in encoder that returns a fixed matrix, whatever mteb asks."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def encode(self, inputs, **_kwargs):
        texts = [text for batch in inputs for text in batch["text"]]
        assert len(texts) == len(self.vectors)
        return self.vectors


def test_scores_equal_mtebs_clustering_evaluator():
    import datasets
    from mteb._evaluators import ClusteringEvaluator
    from mteb.timing import TimingStack
    from sklearn.metrics import v_measure_score

    vectors, labels = clustered_matrix()
    texts = [f"text {i}" for i in range(len(labels))]
    metadata = local_clustering_task(Dataset("m", texts, labels, "x", "test")).metadata
    seeds = (42, 7, 123, 0, 5)
    ours = score_embeddings(vectors, labels, seeds)
    theirs = []
    for seed in seeds:
        evaluator = ClusteringEvaluator(
            datasets.Dataset.from_dict({"sentences": texts, "labels": labels}),
            input_column_name="sentences",
            label_column_name="labels",
            task_metadata=metadata,
            hf_split="test",
            hf_subset="default",
            timer=TimingStack(),
            seed=seed,
        )
        assignment = evaluator(FixedVectors(vectors), encode_kwargs={"batch_size": 64})
        theirs.append(v_measure_score(labels, assignment))
    assert ours["v_measure_per_seed"] == pytest.approx(theirs, abs=1e-12)
    assert ours["v_measure"] == pytest.approx(np.mean(theirs), abs=1e-12)
    assert ours["v_measure_std"] == pytest.approx(np.std(theirs), abs=1e-12)
    assert 0.3 < ours["v_measure"] <= 1.0 and len(set(theirs)) > 1  # seeds matter, so the test has teeth


def test_subsample_is_the_one_mteb_embeds():
    import mteb
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta

    rows = synthetic_rows(per_label=30)
    dataset = Dataset("topics", [r["text"] + f" {i}" for i, r in enumerate(rows)], [r["label"] for r in rows], "x", "t")
    seen: list[str] = []

    class Recorder(AbsEncoder):
        mteb_model_meta = ModelMeta.create_empty(overwrites={"name": "test/recorder", "embed_dim": 4})

        def encode(self, inputs, **_kwargs):
            texts = [text for batch in inputs for text in batch["text"]]
            seen.extend(texts)
            return np.random.default_rng(0).normal(size=(len(texts), 4)).astype(np.float32)

    mteb.evaluate(Recorder(), local_clustering_task(dataset, max_documents=40, seed=42), cache=None)
    assert seen == mteb_subsample(dataset, 40, 42).texts
    assert mteb_subsample_indices(10, None, 1) == list(range(10))
    assert mteb_subsample_indices(10, 50, 1) == list(range(10))


def test_score_embeddings_rejects_no_seeds():
    vectors, labels = clustered_matrix(n=30)
    with pytest.raises(ValueError, match="seed"):
        score_embeddings(vectors, labels, ())


# --------------------------------------------------------------------------------------------
# Summary and figure


def fake_cell(variant: str, prompt: str, pooling: str, task: str, v: float) -> dict:
    return {
        "variant": variant,
        "prompt": {"name": prompt, "template": "{text}"},
        "pooling": pooling,
        "layer": "-1",
        "max_length": 128,
        "task": {"name": task, "texts": 10, "clusters": 2},
        "kmeans": {"seeds": [42]},
        "scores": {"v_measure": v, "v_measure_std": 0.01},
    }


def test_summary_table_average_and_missing_tasks(tmp_path):
    cells = [
        fake_cell("m", "none", "mean", "a", 0.2),
        fake_cell("m", "none", "mean", "b", 0.4),
        fake_cell("minilm", "none", "mean", "a", 0.5),
    ]
    scores, _ = summary_tables(cells)
    assert list(scores.columns) == ["a", "b", "average"]
    assert scores.loc[("m", "none", "mean", "-1"), "average"] == pytest.approx(0.3)
    assert np.isnan(scores.loc[("minilm", "none", "mean", "-1"), "average"])  # not run on every task
    files = clustering.write_summary(tmp_path, cells)
    assert Path(files["html"]).is_file() and Path(files["csv"]).is_file()
    assert ("png" in files) != ("png_error" in files)


def make_card_adapter(tmp_path: Path) -> Path:
    from core.encoding.prompts import PROMPTS
    from core.training.config import TrainConfig

    adapter = tmp_path / "run1"
    adapter.mkdir()
    meta = {"prompt": PROMPTS["eol"], "pooling": "last", "layer": "-1", "steps_done": 1}
    (adapter / "embedding_lens.json").write_text(json.dumps(meta))
    settings = {**TrainConfig().to_dict(), "base_model": "m"}
    card = {
        "settings": settings,
        "metadata": meta,
        "data": {"pairs": 2, "file": "p.jsonl", "sha256": "0", "methods": {}, "truncated_texts": 0},
        "run": {"train_seconds": 1, "pairs_per_s": 1, "peak_rss_mb": 1, "world_size": 1, "precision": "fp32"},
        "loss": {"first": 1.0, "last": 0.5},
        "best": None,
    }
    (adapter / "card.json").write_text(json.dumps(card))
    return adapter


def track_cells(tasks: tuple[str, ...]) -> list[dict]:
    rows = [
        ("m", "none", "mean", 0.4), ("m", "eol", "last", 0.3), ("m+run1", "eol", "mean", 0.9),
        ("m+run1", "eol", "last", 0.6), ("minilm", "none", "mean", 0.5),
    ]  # fmt: skip
    cells = []
    for i, task in enumerate(tasks):
        for variant, prompt, pooling, v in rows:
            cell = fake_cell(variant, prompt, pooling, task, v + (0.01 if i == 0 and variant == "m" else 0.0))
            cell["created"], cell["git_commit"] = f"2026-01-0{1 + i % 9}T00:00:00+00:00", f"commit{i}"
            cells.append(cell)
    return cells


def test_adapter_card_gets_its_row_the_best_base_row_and_minilm(tmp_path):
    from core.data import LOCAL_TASKS
    from core.models.adapters import render_card

    adapter = make_card_adapter(tmp_path)
    cells = track_cells(tuple(LOCAL_TASKS))
    track = clustering.record_adapter_scores(clustering.ModelSpec("m", str(adapter)), cells, tmp_path)
    assert [(row["label"].split(":")[0], row["average"]) for row in track["rows"]] == [
        ("adapter", 0.6),
        ("best prompt-only base", round(0.4 + 0.01 / 6, 4)),
        ("MiniLM", 0.5),
    ]  # fmt: skip: the adapter's own prompt and pooling, not its best row
    assert (track["track"], track["tasks"], track["date"], track["commit"]) == (
        "local",
        list(LOCAL_TASKS),
        "2026-01-06",
        "commit5",
    )
    stored = json.loads((adapter / "card.json").read_text())
    assert stored["local_track"] == track
    assert (
        "| best prompt-only base: m, prompt none, mean pooling, layer -1 | 0.4100 | 0.4000 |"
        in (adapter / "README.md").read_text()
    )
    assert render_card(stored) == (adapter / "README.md").read_text()
    # Without the baseline on every task there is nothing fair to write.
    assert clustering.record_adapter_scores(clustering.ModelSpec("m", str(adapter)), cells[:-1], tmp_path) is None


def test_only_a_full_track_touches_the_card(tmp_path):
    from core.data import LOCAL_TASKS

    adapter = make_card_adapter(tmp_path)
    before = (adapter / "card.json").read_bytes()
    spec = clustering.ModelSpec("m", str(adapter))
    # Five of six local tasks, or other tasks: the card stays as it was.
    assert clustering.record_adapter_scores(spec, track_cells(tuple(LOCAL_TASKS)[:5]), tmp_path) is None
    assert clustering.record_adapter_scores(spec, track_cells(("my", "other")), tmp_path) is None
    assert (adapter / "card.json").read_bytes() == before and not (adapter / "README.md").exists()
    # Which runs may write: the full track at its own budgets, however it is spelt.
    assert clustering.card_tracks(["local"]) == ["local"]
    assert clustering.card_tracks(list(reversed(LOCAL_TASKS))) == ["local"]
    # The whole local track beside another task still is the whole local track; the CSV's scores stay out.
    assert clustering.card_tracks([*LOCAL_TASKS, "my.csv:text:label"]) == ["local"]
    assert clustering.card_tracks(["my.csv:text:label"]) == []
    assert clustering.card_tracks(list(LOCAL_TASKS)[:5]) == []
    assert clustering.card_tracks(["local", "transfer"]) == ["local", "transfer"]
    assert clustering.card_tracks(["transfer"]) == ["transfer"]
    assert clustering.card_tracks(["local"], max_texts=50) == []
    assert clustering.card_tracks(["local"], max_length=64) == []


def test_a_custom_task_grid_leaves_the_adapter_card_alone(tiny_model_dir, labelled_csv, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from analysis.clustering import runner
    from core.models.registry import load_model

    recorded: list[str] = []
    real = runner.record_adapter_scores
    monkeypatch.setattr(runner, "record_adapter_scores", lambda *a, **k: recorded.append(a[-1]) or real(*a, **k))

    adapter_dir = make_card_adapter(tmp_path)
    loaded = load_model(str(tiny_model_dir))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(loaded.model, lora).save_pretrained(adapter_dir)
    before = {name: (adapter_dir / name).read_bytes() for name in ("card.json", "README.md")}
    argv = _with_models(cli(tiny_model_dir, str(labelled_csv), tmp_path / "grid"), f"{tiny_model_dir}+{adapter_dir}")
    assert main(argv) == 0
    assert recorded == []  # not even asked: a CSV is no track
    assert {name: (adapter_dir / name).read_bytes() for name in before} == before


def test_plots_are_pure_figures():
    import pandas as pd
    import plotly.graph_objects as go

    from analysis.plots import clustering_bars, clustering_heatmap

    scores = pd.DataFrame({"a": [0.1, 0.2], "average": [0.1, np.nan]}, index=["r1", "r2"])
    figure = clustering_heatmap(scores, scores * 0.1)
    assert isinstance(figure, go.Figure) and figure.data[0].z.shape == (2, 2)
    table = pd.DataFrame({"prompt": ["none", "eol"], "pooling": ["mean", "mean"], "average": [0.2, 0.3]})
    assert isinstance(clustering_bars(table), go.Figure)
