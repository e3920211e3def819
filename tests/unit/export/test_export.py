"""core.export on the tiny model: both folder kinds load in sentence-transformers and match the workbench."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.export.folder import MANIFEST, MODULE_FILE, PROBE_TEXTS, export, main
from core.runtime.errors import AdapterError, ConfigError


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def workbench_vectors(model: str, adapter: str | None = None, **settings) -> np.ndarray:
    from core.encoding.encoder import Encoder

    return Encoder(model, adapter, precision="fp32", cache=False, **settings).encode(list(PROBE_TEXTS))


def st_vectors(folder: Path, texts=PROBE_TEXTS, trust_remote_code: bool = True):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=trust_remote_code)
    return model, model.encode(list(texts), convert_to_numpy=True)


@pytest.fixture(scope="module")
def lens_adapter(tiny_model_dir, tiny_adapter_dir, tmp_path_factory) -> Path:
    """The tiny LoRA adapter with the metadata core.train writes (base model, prompt, pooling, card)."""
    folder = tmp_path_factory.mktemp("lens-adapter") / "tiny-embed"
    shutil.copytree(tiny_adapter_dir, folder)
    metadata = {"base_model": str(tiny_model_dir), "prompt": "eol", "pooling": "last", "layer": "-1", "max_length": 24}
    metadata["training"] = {"steps": 3, "lr": 0.001, "lora_r": 4}
    (folder / "embedding_lens.json").write_text(json.dumps(metadata))
    card = {"local_track": {"tasks": ["r8"], "rows": [{"label": "adapter row", "scores": {"r8": 0.5}, "average": 0.5}]}}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_stock_export_matches_workbench_without_remote_code(tiny_model_dir, tmp_path):
    out = tmp_path / "stock"
    report = export(str(tiny_model_dir), out, prompt="Represent this sentence: {text}", pooling="mean", max_length=24)
    assert report.kind == "stock"
    assert not (out / MODULE_FILE).exists()
    model, vectors = st_vectors(out, trust_remote_code=False)
    # The tiny tokenizer has a chat template: the folder must keep sentence-transformers from applying it.
    assert "message" not in model[0].modality_config
    reference = workbench_vectors(
        str(tiny_model_dir), prompt="Represent this sentence: {text}", pooling="mean", max_length=24
    )
    assert cosines(vectors, reference).min() >= 0.99999
    config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert config["similarity_fn_name"] == "cosine"
    assert config["prompts"] == {"default": "Represent this sentence: "}


def test_stock_export_last_token_pooling(tiny_model_dir, tmp_path):
    out = tmp_path / "last"
    report = export(str(tiny_model_dir), out, prompt="none", pooling="last", max_length=24)
    assert report.kind == "stock"
    _model, vectors = st_vectors(out, trust_remote_code=False)
    reference = workbench_vectors(str(tiny_model_dir), prompt="none", pooling="last", max_length=24)
    assert cosines(vectors, reference).min() >= 0.99999


def test_chat_template_would_change_the_vectors(tiny_model_dir, tmp_path):
    """The regression the pinned modality guards against is real: with the template, vectors move."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    out = tmp_path / "stock"
    export(str(tiny_model_dir), out, prompt="none", pooling="mean", max_length=24)
    plain = SentenceTransformer(str(out), device="cpu")
    chat = SentenceTransformer(modules=[Transformer(str(out)), plain[1]], device="cpu")
    assert "message" in chat[0].modality_config
    texts = ["The red dog runs quickly in the garden."]
    plain_ids = plain.preprocess(texts)["input_ids"]
    chat_ids = chat.preprocess(texts)["input_ids"]
    assert chat_ids.shape[1] > plain_ids.shape[1]
    assert cosines(plain.encode(texts), chat.encode(texts)).min() < 0.9999


@pytest.mark.parametrize(
    "settings",
    [
        {"prompt": "eol", "pooling": "last"},
        {"prompt": "eol", "pooling": "eos", "layer": "last2"},
        {"prompt": "cluster", "pooling": "text_mean", "layer": "1"},
        {"prompt": "none", "pooling": "weighted"},
    ],
)
def test_custom_module_export_matches_workbench(tiny_model_dir, tmp_path, settings):
    out = tmp_path / "custom"
    report = export(str(tiny_model_dir), out, max_length=24, **settings)
    assert report.kind == "custom"
    assert (out / MODULE_FILE).is_file()
    assert "trust_remote_code=True" in (out / "README.md").read_text()
    _model, vectors = st_vectors(out)
    reference = workbench_vectors(str(tiny_model_dir), max_length=24, **settings)
    assert cosines(vectors, reference).min() >= 0.99999
    assert json.loads((out / MANIFEST).read_text())["min_cosine_to_workbench"] >= 0.99999


def test_custom_module_needs_trust_remote_code(tiny_model_dir, tmp_path):
    out = tmp_path / "custom"
    export(str(tiny_model_dir), out, prompt="eol", pooling="last", max_length=24)
    with pytest.raises(ValueError, match="trust_remote_code"):
        st_vectors(out, trust_remote_code=False)


@pytest.mark.parametrize("merge", [False, True])
def test_adapter_export_kept_or_merged(lens_adapter, tiny_model_dir, tmp_path, merge):
    out = tmp_path / "adapter"
    report = export(str(lens_adapter), out, merge=merge)
    assert report.kind == "custom"  # the eol prompt has a suffix
    assert (out / "adapter" / "adapter_config.json").is_file() != merge
    _model, vectors = st_vectors(out)
    reference = workbench_vectors(str(tiny_model_dir), str(lens_adapter))
    base = workbench_vectors(str(tiny_model_dir), prompt="eol", pooling="last", max_length=24)
    assert cosines(vectors, reference).min() >= 0.99999
    assert cosines(vectors, base).min() < 0.9999  # the adapter is really in there
    card = (out / "README.md").read_text()
    assert "adapter row" in card and "Training recipe" in card and "sha256" in card
    assert ("the LoRA adapter is kept as a peft adapter" in card) != merge  # the card says why remote code


def test_kept_adapter_loads_with_plain_peft_on_automodel(lens_adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModel

    from core.encoding.encoder import Encoder

    out = tmp_path / "adapter"
    export(str(lens_adapter), out)
    encoder = Encoder(
        json.loads((lens_adapter / "embedding_lens.json").read_text())["base_model"],
        lens_adapter,
        precision="fp32",
        cache=False,
    )
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(out), out / "adapter").eval()
    batch = encoder.collate(encoder.prepare(["The red dog runs quickly in the garden."]))
    with torch.inference_mode():
        mine = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        theirs = encoder.forward(batch).hidden[encoder.num_hidden_states - 1]
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def test_existing_folder_refused_unless_force(tiny_model_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        export(str(tiny_model_dir), out)
    assert (out / "keep.txt").read_text() == "mine"
    export(str(tiny_model_dir), out, force=True, max_length=24)
    assert not (out / "keep.txt").exists() and (out / "modules.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no staging or moved-aside folder left


def test_interrupted_export_leaves_no_folder(tiny_model_dir, tmp_path, monkeypatch):
    import core.export.folder as export_module

    def fail(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "_encode_with_sentence_transformers", fail)
    with pytest.raises(KeyboardInterrupt):
        export(str(tiny_model_dir), tmp_path / "out", max_length=24)
    assert list(tmp_path.iterdir()) == []


def test_adapter_with_missing_base_is_refused(lens_adapter, tmp_path):
    broken = tmp_path / "orphan"
    shutil.copytree(lens_adapter, broken)
    metadata = json.loads((broken / "embedding_lens.json").read_text())
    metadata["base_model"] = str(tmp_path / "no-such-model")
    (broken / "embedding_lens.json").write_text(json.dumps(metadata))
    with pytest.raises(AdapterError, match="not available"):
        export(str(broken), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_method_and_unexportable_settings_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="plain"):
        export(str(tiny_model_dir), tmp_path / "a", method="echo")
    with pytest.raises(ConfigError, match="attention"):
        export(str(tiny_model_dir), tmp_path / "b", pooling="attention")
    with pytest.raises(ConfigError, match="--merge"):
        export(str(tiny_model_dir), tmp_path / "c", merge=True)
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_errors_and_exit_codes(tiny_model_dir, tmp_path, capsys):
    from core.runtime.errors import run_cli

    (tmp_path / "taken").mkdir()
    assert run_cli(main, [str(tiny_model_dir), "--out", str(tmp_path / "taken")]) == 2
    assert "error:" in capsys.readouterr().err
    assert run_cli(main, [str(tiny_model_dir), "--out", str(tmp_path / "ok"), "--max-length", "24"]) == 0
    assert "min cosine" in capsys.readouterr().out


def test_bidirectional_encoder_exports_with_stock_modules(tiny_bert_dir, tmp_path):
    out = tmp_path / "bert"
    report = export(str(tiny_bert_dir), out, pooling="mean", max_length=24)
    assert report.kind == "stock"
    _model, vectors = st_vectors(out, trust_remote_code=False)
    reference = workbench_vectors(str(tiny_bert_dir), pooling="mean", max_length=24)
    assert cosines(vectors, reference).min() >= 0.99999


def test_out_that_is_or_holds_or_lies_in_the_source_is_refused_even_with_force(lens_adapter, tmp_path):
    source = tmp_path / "adapter"
    shutil.copytree(lens_adapter, source)
    before = sorted(p.name for p in source.iterdir())
    for out, relation in ((source, "is"), (tmp_path, "contains"), (source / "export", "lies inside")):
        with pytest.raises(ConfigError, match=f"--out {out} {relation} the folder you export"):
            export(str(source), out, force=True)
    assert sorted(p.name for p in source.iterdir()) == before
