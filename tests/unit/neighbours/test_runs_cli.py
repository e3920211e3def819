"""Two saved runs as a pair (refused when the texts differ) and ``python -m analysis.neighbours`` writing CSVs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.neighbours import load_pair
from analysis.neighbours.cli import main
from core.runtime.errors import ConfigError, UserFileError

TOPICS = {"sport": "football match goal", "food": "bread cheese soup", "music": "guitar song concert"}


@pytest.fixture()
def runs(tmp_path):
    """A labelled CSV of 30 texts and two runs of it: A, and B = A with text 0 moved onto the food cluster."""
    rng = np.random.default_rng(0)
    rows, vectors = [], []
    centres = {topic: rng.normal(size=12) * 4 for topic in TOPICS}
    for n in range(30):
        topic = list(TOPICS)[n % 3]
        rows.append({"text": f"{TOPICS[topic]} number {n}", "label": topic})
        vectors.append(centres[topic] + rng.normal(size=12))
    pd.DataFrame(rows).to_csv(tmp_path / "texts.csv", index=False)
    first = np.array(vectors, dtype=np.float32)
    second = first.copy()
    second[0] = centres["food"] + rng.normal(size=12) * 0.1
    for name, matrix in (("a", first), ("b", second)):
        np.save(tmp_path / f"{name}.npy", matrix)
        (tmp_path / f"{name}.json").write_text(json.dumps({"input": str(tmp_path / "texts.csv"), "layer": "-1"}))
    return tmp_path


def test_a_pair_lines_up_texts_labels_and_rows(runs):
    pair = load_pair(runs / "a.npy", runs / "b.npy", runs / "texts.csv", label_column="label")
    assert len(pair.texts) == 30 and pair.labels[:3] == ["sport", "food", "music"] and pair.names == ("a", "b")
    assert pair.runs[0].settings["layer"] == "-1" and pair.runs[1].vectors.dtype == np.float32


def test_a_pair_of_other_texts_is_refused_with_the_reason(runs):
    pd.DataFrame({"text": [f"other {n}" for n in range(30)]}).to_csv(runs / "other.csv", index=False)
    with pytest.raises(UserFileError, match="text lists differ"):
        load_pair(runs / "a.npy", runs / "b.npy", runs / "other.csv")
    pd.DataFrame({"text": [f"other {n}" for n in range(29)]}).to_csv(runs / "short.csv", index=False)
    with pytest.raises(UserFileError, match=r"has 30 rows but .* 29 texts"):
        load_pair(runs / "a.npy", runs / "b.npy", runs / "short.csv")
    np.save(runs / "bad.npy", np.array(["a", "b"]))
    with pytest.raises(UserFileError, match="float"):
        load_pair(runs / "a.npy", runs / "bad.npy", runs / "texts.csv")


def test_the_cli_writes_the_tables_and_names_the_mover(runs, capsys):
    out = runs / "report"
    argv = ["--runs", f"{runs / 'a.npy'},{runs / 'b.npy'}", "--texts", str(runs / "texts.csv"), "--label-column",
            "label", "--k", "4", "--n-boot", "200", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    movers = pd.read_csv(out / "movers.csv")
    assert movers["index"].iloc[0] == 0 and movers["jaccard"].iloc[0] == 0.0
    assert "bread cheese soup" in movers["after"].iloc[0] and "football" in movers["before"].iloc[0]
    neighbours = pd.read_csv(out / "neighbours.csv")
    assert len(neighbours) == 30 and {"jaccard_at_4", "neighbours_a", "neighbours_b"} <= set(neighbours.columns)
    clusters = pd.read_csv(out / "clusters.csv")
    assert set(clusters["cluster"]) == set(TOPICS) and "bread" in clusters.set_index("cluster").loc["food", "top_words"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["jaccard"]["ci_low"] <= summary["jaccard"]["mean"] <= summary["jaccard"]["ci_high"] < 1
    assert summary["sides"] == ["a", "b"] and summary["k"] == 4
    assert "mean Jaccard@4" in capsys.readouterr().out
    assert main(argv) == 0  # its own folder may be written again


def test_the_cli_never_overwrites_files_it_did_not_write(runs):
    out = runs / "taken"
    out.mkdir()
    (out / "movers.csv").write_text("someone else's\n")
    with pytest.raises(ConfigError, match="did not write"):
        main(["--runs", f"{runs / 'a.npy'},{runs / 'b.npy'}", "--texts", str(runs / "texts.csv"), "--out", str(out)])
    assert (out / "movers.csv").read_text() == "someone else's\n"


def test_the_cli_refuses_incomplete_sources():
    with pytest.raises(ConfigError, match=r"--runs A\.npy,B\.npy"):
        main(["--out", "x"])
    with pytest.raises(ConfigError, match="needs --texts"):
        main(["--runs", "a.npy,b.npy"])


@pytest.mark.slow
def test_the_cli_compares_base_and_adapter_on_a_user_file(tiny_model_dir, tiny_adapter_dir, tmp_path):
    words = ["apple pie", "green tea", "red car", "fast bike", "old song", "new film"]
    rows = [{"text": f"{words[n % 6]} number {n}", "topic": words[n % 6].split()[1]} for n in range(24)]
    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    out = tmp_path / "out"
    argv = ["--model", str(tiny_model_dir), "--adapter", str(tiny_adapter_dir), "--task", str(tmp_path / "data.csv"),
            "--label-column", "topic", "--n", "24", "--k", "3", "--n-boot", "200", "--max-length", "32",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sides"] == ["base", "adapter"] and summary["texts"] == 24 and summary["setting"]["max_length"] == 32
    assert 0 <= summary["jaccard"]["ci_low"] <= summary["jaccard"]["mean"] <= summary["jaccard"]["ci_high"] <= 1
    neighbours = pd.read_csv(out / "neighbours.csv")
    assert list(neighbours["text"]) == [row["text"] for row in rows]  # every text, in file order
    assert set(pd.read_csv(out / "clusters.csv")["cluster"]) == {"pie", "tea", "car", "bike", "song", "film"}
