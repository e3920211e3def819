"""Converted folders in the forms transformers 4.4x reads, read back as JSON and loaded again by transformers 5."""

from __future__ import annotations

import json
import shutil

import torch

from core.models.legacy import LEGACY_TOKENIZER_CLASS, legacy_rope_keys, write_legacy_forms

TEXTS = ["A man is playing a guitar.", "Is the market open today?"]


def _read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_old_forms_are_written_and_transformers_5_reads_the_same_model(tiny_model_dir, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = tmp_path / "converted"
    shutil.copytree(tiny_model_dir, folder)
    config = _read(folder / "config.json")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**_read(folder / "tokenizer_config.json"), "tokenizer_class": "TokenizersBackend"})
    )  # as transformers 5 saves a tokenizer converted from GGUF
    merges_before = _read(folder / "tokenizer.json")["model"]["merges"]
    assert "rope_theta" not in config and isinstance(merges_before[0], list)

    changed = write_legacy_forms(folder)

    assert set(changed) == {"config.json", "tokenizer_config.json", "tokenizer.json"}
    written = _read(folder / "config.json")
    assert written["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert {key: written[key] for key in config} == config  # only keys added
    assert _read(folder / "tokenizer_config.json")["tokenizer_class"] == LEGACY_TOKENIZER_CLASS
    merges = _read(folder / "tokenizer.json")["model"]["merges"]
    assert merges == [" ".join(pair) for pair in merges_before]
    assert write_legacy_forms(folder) == []  # a second pass changes nothing

    old, new = AutoTokenizer.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(folder)
    assert new(TEXTS)["input_ids"] == old(TEXTS)["input_ids"]
    assert (
        AutoConfig.from_pretrained(folder).rope_parameters == AutoConfig.from_pretrained(tiny_model_dir).rope_parameters
    )
    batch = old(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        before = AutoModel.from_pretrained(tiny_model_dir)(**batch).last_hidden_state
        after = AutoModel.from_pretrained(folder)(**batch).last_hidden_state
    assert torch.equal(before, after)


def test_gemma_style_rope_per_layer_type_gives_both_old_keys():
    config = {
        "rope_parameters": {
            "full_attention": {"rope_theta": 1000000.0, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
        }
    }
    assert legacy_rope_keys(config) == {"rope_theta": 1000000.0, "rope_local_base_freq": 10000.0}
    assert legacy_rope_keys({"rope_parameters": {"rope_theta": 100000.0}}) == {"rope_theta": 100000.0}
    assert legacy_rope_keys({"hidden_size": 8}) == {}


def test_merges_holding_a_space_keep_the_pair_form(tmp_path):
    tokenizer = {"model": {"type": "BPE", "merges": [["a", "b"], ["c d", "e"]]}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert write_legacy_forms(tmp_path) == []
    assert _read(tmp_path / "tokenizer.json") == tokenizer
