"""Adapter folders: reading, listing, settings, cards, scores and the hash committed results hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.models.adapters import (
    ADAPTER_METADATA,
    SHIPPED_ADAPTER,
    adapter_hash,
    adapter_name,
    list_adapters,
    made_for,
    read_adapter,
    read_card,
    record_scores,
    render_card,
    weight_names,
    write_card,
    write_metadata,
)
from core.runtime.errors import AdapterError

REPO = Path(__file__).resolve().parents[3]


def peft_folder(folder: Path, weights: bytes = b"weights") -> Path:
    """The files peft writes, enough for reading and hashing (not for loading into a model)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "base_model_name_or_path": "/some/base"}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def card(**extra) -> dict:
    """A card as ``core.train`` writes it (the fields ``render_card`` reads)."""
    settings = {
        "base_model": "tiny", "pooling": "last", "layer": "-1", "max_length": 64, "lora_r": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "target_modules": ["q_proj"], "lora_layers": 0, "batch_size": 4, "lr": 0.001,
        "warmup_steps": 0, "temperature": 0.05, "margin": 0.0, "symmetric": False,
    }  # fmt: skip
    return {
        "settings": settings,
        "metadata": {"prompt": "{text}", "pooling": "last", "layer": "-1", "steps_done": 3},
        "data": {
            "pairs": 8,
            "file": "p.jsonl",
            "sha256": "ab",
            "methods": {"file": 8},
            "sources": {"p.jsonl": 8},
            "truncated_texts": 0,
        },
        "run": {"train_seconds": 1.0, "pairs_per_s": 8.0, "peak_rss_mb": 100, "world_size": 1, "precision": "fp32"},
        "loss": {"first": 2.0, "last": 1.0},
        "best": None,
        **extra,
    }


TRACK = {
    "tasks": ["a", "b"],
    "rows": [{"label": "this adapter", "scores": {"a": 0.5, "b": 0.25}, "average": 0.375}],
    "results": "results/local-track",
}


# ----- reading


def test_read_adapter_gathers_config_weights_settings_and_card(tmp_path):
    folder = peft_folder(tmp_path / "ad")
    write_metadata(folder, {"base_model": "tiny", "base_weights_sha256": "1" * 64, "prompt": "{text}"})
    write_card(folder, card(local_track=TRACK))
    info = read_adapter(folder)
    assert (info.path, info.name, info.weights_file) == (folder, "ad", folder / "adapter_model.safetensors")
    assert info.metadata["prompt"] == "{text}" and info.base_model == "tiny" and info.base_weights_sha256 == "1" * 64
    assert info.card == read_card(folder) and info.card["loss"]["last"] == 1.0
    assert info.readme == render_card(info.card)
    assert info.local_track_rows == [("this adapter", 0.375)]
    assert info.hash == adapter_hash(folder)


def test_an_adapter_not_made_here_reads_with_empty_settings_and_no_card(tmp_path):
    info = read_adapter(peft_folder(tmp_path / "foreign"))
    assert info.metadata == {} and info.card is None and info.readme is None and info.local_track_rows == []
    assert info.base_model == "/some/base"  # peft's own record of its base
    info.check_base("anything", "0" * 64)  # nothing to compare against: accepted


def test_check_base_refuses_other_weights_naming_both_models(tmp_path):
    folder = peft_folder(tmp_path / "ad")
    write_metadata(folder, {"base_model": "tiny", "base_weights_sha256": "1" * 64})
    with pytest.raises(AdapterError, match=r"trained on base model 'tiny' \(weights 111111111111\), not on 'big'"):
        read_adapter(folder).check_base("big", "2" * 64)
    read_adapter(folder).check_base("tiny", "1" * 64)


def test_missing_folder_config_or_weights_are_adapter_errors_that_say_what_to_do(tmp_path):
    with pytest.raises(AdapterError, match=r"No adapter folder .*missing.*python -m core\.train"):
        read_adapter(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match=r"not an adapter folder \(no adapter_config\.json\).*--resume"):
        read_adapter(tmp_path / "empty")
    folder = peft_folder(tmp_path / "no-weights")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"no weights file \(adapter_model\.safetensors\)"):
        read_adapter(folder)


def test_unreadable_settings_are_an_adapter_error(tmp_path):
    folder = peft_folder(tmp_path / "ad")
    (folder / ADAPTER_METADATA).write_text("{not json")
    with pytest.raises(AdapterError, match=r"Cannot read the adapter settings .*embedding_lens\.json"):
        read_adapter(folder)
    (folder / ADAPTER_METADATA).write_text("[1, 2]")
    with pytest.raises(AdapterError, match="not a JSON object"):
        read_adapter(folder)


def test_weight_names_lists_the_stored_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "w"
    folder.mkdir()
    tensors = {"b.lora_B.weight": torch.zeros(2, 1), "a.lora_A.weight": torch.ones(1, 2)}
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    torch.save(tensors, folder / "adapter_model.bin")
    assert sorted(weight_names(folder / "adapter_model.safetensors")) == sorted(tensors)
    with pytest.raises(AdapterError, match=r"only adapter_model\.bin, a pickle file.*adapter_model\.safetensors"):
        weight_names(folder / "adapter_model.bin")


def test_a_pickle_only_adapter_is_refused_naming_safetensors(tmp_path, tiny_adapter_dir):
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_adapter_dir, folder)
    torch.save(load_file(str(folder / "adapter_model.safetensors")), folder / "adapter_model.bin")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match=r"a pickle file: Embedding Lens does not load pickles.*safetensors"):
        read_adapter(folder)


# ----- the shipped adapter (committed: read as it is)


def test_the_shipped_adapter_reads_unchanged_and_keeps_the_hash_committed_results_hold():
    info = read_adapter(SHIPPED_ADAPTER)
    assert info.base_model == "smollm2-135m" and info.metadata["pooling"] == "last"
    assert info.metadata == json.loads((SHIPPED_ADAPTER / "embedding_lens.json").read_text())
    assert info.card is not None and info.readme == render_card(info.card)  # the committed README, regenerated
    assert [label for label, _ in info.local_track_rows]
    committed = json.loads((REPO / "results" / "attention" / "attention_report.json").read_text())
    hashes = {value for key, value in _walk(committed) if key == "adapter_sha256" and value}
    assert hashes == {info.hash}


@pytest.mark.parametrize("name", ["smollm2-135m-embed", "gemma3-270m-embed"])
def test_the_shipped_recipes_are_leave_one_corpus_out(name):
    """Their pair files are built with the strict track check from no evaluation corpus, and each card says so."""
    from core.data import LOCAL_TASKS, TRANSFER_TASKS

    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    recipe = makefile.split("\nadapter: install\n")[1].split("\n\n")[0]
    builds = [line.split() for line in recipe.splitlines() if "-m core.pairs" in line]
    assert builds and all("--check-tracks strict" in " ".join(words) for words in builds)
    tasks = {*LOCAL_TASKS, *TRANSFER_TASKS}
    assert not {words[words.index("--source") + 1] for words in builds} & tasks
    adapter = read_adapter(REPO / "adapters" / name)
    recipe = json.loads((REPO / "adapters" / f"{name}.json").read_text())
    assert adapter.base_model == recipe["base_model"] and adapter.metadata["pooling"] == recipe["pooling"]
    card = adapter.card
    assert card is not None and adapter.readme == render_card(card)  # the committed README, regenerated
    assert not [s for s in card["data"]["sources"] if any(task in s for task in tasks)]
    quality = card["data"]["quality"]
    assert quality["track_overlap"]["overlapping_pairs"] > 0  # found and dropped before training, as reported
    assert set(quality["track_overlap"]["tasks_checked"]) == tasks
    assert {"local_track", "transfer_track"} <= card.keys()


def _walk(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


# ----- listing


def test_list_adapters_puts_the_shipped_one_first_and_skips_other_folders(tmp_path, monkeypatch):
    import core.models.adapters as adapters_module

    for name in ("b", "shipped", "a"):
        peft_folder(tmp_path / name)
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "train_log.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "notes").mkdir()
    (tmp_path / "file.txt").write_text("not a folder")
    monkeypatch.setattr(adapters_module, "SHIPPED_ADAPTER", tmp_path / "shipped")
    assert [p.name for p in list_adapters(tmp_path)] == ["shipped", "a", "b"]
    assert [p.name for p in list_adapters(tmp_path, in_training=True)] == ["shipped", "a", "b", "training"]
    assert list_adapters(tmp_path / "missing") == []


def test_made_for_keeps_an_adapter_unless_its_settings_name_another_base_model(tmp_path):
    folder = peft_folder(tmp_path / "ad")
    assert made_for(folder, "anything")  # no settings of ours: loading it decides
    write_metadata(folder, {"base_model": "/models/qwen3"})
    assert made_for(folder, "/models/qwen3/") and not made_for(folder, "smollm2-135m")
    (folder / ADAPTER_METADATA).write_text("{not json")
    assert made_for(folder, "smollm2-135m")  # unreadable: kept, so that loading it says what is wrong


def test_the_repository_lists_its_shipped_adapter_first():
    assert list_adapters()[0] == SHIPPED_ADAPTER


# ----- cards and scores


def test_record_scores_extends_card_and_readme(tmp_path):
    folder = peft_folder(tmp_path / "ad")
    write_card(folder, card())
    assert "Local-track" not in (folder / "README.md").read_text()
    record_scores(folder, TRACK)
    stored = read_card(folder)
    assert stored == card(local_track=TRACK)
    readme = (folder / "README.md").read_text()
    assert readme == render_card(stored) and "| this adapter | 0.5000 | 0.2500 | **0.3750** |" in readme
    assert "- pair sources (pairs each): p.jsonl (8)" in readme
    # The transfer track goes beside the local one (each track's own table), and both averages are listed.
    transfer = {**TRACK, "track": "transfer", "rows": [{**TRACK["rows"][0], "average": 0.125}]}
    record_scores(folder, transfer)
    stored = read_card(folder)
    assert stored == card(local_track=TRACK, transfer_track=transfer)
    readme = (folder / "README.md").read_text()
    assert "## Local-track clustering" in readme and "## Transfer-track clustering" in readme
    assert "- clustering average, own setting: local track 0.3750, transfer track 0.1250" in readme


def test_record_scores_leaves_an_adapter_without_card_alone(tmp_path):
    folder = peft_folder(tmp_path / "foreign")
    before = sorted(p.name for p in folder.iterdir())
    record_scores(folder, TRACK)
    assert sorted(p.name for p in folder.iterdir()) == before


# ----- the hash


def test_adapter_hash_ignores_target_module_order_but_not_weights(tmp_path):
    """peft writes target_modules from a set: two saves of one adapter differ in order only."""
    first, second = tmp_path / "a", tmp_path / "b"
    for folder, modules in ((first, ["q_proj", "v_proj"]), (second, ["v_proj", "q_proj"])):
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": modules}, indent=2))
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
    assert adapter_hash(first) == adapter_hash(second)
    (second / "adapter_model.safetensors").write_bytes(b"other weights")
    assert adapter_hash(first) != adapter_hash(second)


def test_adapter_hash_covers_config_and_weights_not_settings_or_card(tmp_path):
    folder = peft_folder(tmp_path / "ad")
    before = adapter_hash(folder)
    write_metadata(folder, {"prompt": "{text}"})
    write_card(folder, card())
    assert adapter_hash(folder) == before
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    (copy / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "/some/base"}))
    assert adapter_hash(copy) != before


def test_adapter_name_tells_checkpoints_of_different_runs_apart(tmp_path):
    from analysis.clustering.grid import ModelSpec, Variant

    assert adapter_name(tmp_path / "run-a") == "run-a"
    first, second = (tmp_path / run / "checkpoints" / "step-00100" for run in ("mix-a", "mix-b"))
    assert (adapter_name(first), adapter_name(second)) == ("mix-a@step-00100", "mix-b@step-00100")
    labels = {Variant(ModelSpec("smollm2-135m", str(folder)), True).label for folder in (first, second)}
    assert labels == {"smollm2-135m+mix-a@step-00100", "smollm2-135m+mix-b@step-00100"}
