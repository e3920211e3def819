"""The training loop on a tiny Llama: gradient caching, the output folder, inference consistency, bad input, LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.encoding.prompts import PROMPTS
from core.models.adapters import ADAPTER_METADATA, read_adapter, render_card
from core.runtime.errors import PairFileError, TrainError
from core.training.trainer import Trainer
from tests.unit.training.common import WORDS, lora_weights, make_config, max_diff


def _grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in trainer.peft_model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_gradient_cache_equals_full_batch_gradients(tiny_dir, pair_file, tmp_path):
    trainer = Trainer(make_config(tiny_dir, pair_file), tmp_path / "run")
    torch.manual_seed(3)
    with torch.no_grad():  # non-zero LoRA B, so lora_A gets gradient too
        for name, param in trainer.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    trainer.peft_model.train()
    indices = trainer.batch_indices(0)
    assert trainer.config.micro_batch_size == 0
    full_loss = trainer.compute_gradients(indices)
    full = _grads(trainer)
    for micro in (3, 5):
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.config = trainer.config.replace(micro_batch_size=micro)
        assert trainer.compute_gradients(indices) == pytest.approx(full_loss, abs=1e-6)
        cached = _grads(trainer)
        assert max_diff(full, cached) <= 1e-5
        assert any(float(g.abs().max()) > 0 for n, g in cached.items() if "lora_A" in n)


@pytest.mark.slow
def test_hard_negatives_train_under_gradient_caching_and_need_one_per_pair(tiny_dir, pair_file, tmp_path):
    rows = [json.loads(line) for line in pair_file.read_text().splitlines()]
    with_negatives = tmp_path / "negatives.jsonl"
    with_negatives.write_text(
        "".join(
            json.dumps({**row, "negative": rows[(i + 7) % len(rows)]["anchor"]}) + "\n" for i, row in enumerate(rows)
        )
    )
    trainer = Trainer(make_config(tiny_dir, with_negatives, hard_negatives=True), tmp_path / "run")
    assert len(trainer.negatives) == len(trainer.pairs)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in trainer.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    trainer.peft_model.train()
    indices = trainer.batch_indices(0)
    full_loss = trainer.compute_gradients(indices)
    full = _grads(trainer)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.config = trainer.config.replace(micro_batch_size=5)
    assert trainer.compute_gradients(indices) == pytest.approx(full_loss, abs=1e-6)
    assert max_diff(full, _grads(trainer)) <= 1e-5
    # The same pairs without their negatives: a different (smaller-candidate) loss and fingerprint.
    plain = Trainer(make_config(tiny_dir, with_negatives), tmp_path / "plain")
    assert plain.negatives == [] and plain.pair_provenance["pairs_sha256"] != trainer.pair_provenance["pairs_sha256"]
    with pytest.raises(TrainError, match=r"needs a negative in every pair, but 40 of 40 .*core.pairs ... --negatives"):
        Trainer(make_config(tiny_dir, pair_file, hard_negatives=True), tmp_path / "none")


@pytest.mark.slow
def test_gradient_cache_replays_dropout_masks(tiny_dir, pair_file, tmp_path):
    trainer = Trainer(make_config(tiny_dir, pair_file, lora_dropout=0.3, micro_batch_size=4), tmp_path / "run")
    with torch.no_grad():
        for name, param in trainer.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    trainer.peft_model.train()
    items = trainer.anchors[:4]
    torch.manual_seed(0)
    with torch.no_grad():
        first = trainer.embed(items)
        second = trainer.embed(items)
    assert float((first - second).abs().max()) > 1e-4, "LoRA dropout is the noise source and must be active"
    # Two runs from the same RNG state give the same loss: masks are replayed, not redrawn.
    torch.manual_seed(5)
    loss_a = trainer.compute_gradients(trainer.batch_indices(0))
    torch.manual_seed(5)
    loss_b = trainer.compute_gradients(trainer.batch_indices(0))
    assert loss_a == pytest.approx(loss_b, abs=1e-7)


@pytest.fixture(scope="module")
def trained(tiny_dir, pair_file, tmp_path_factory) -> tuple[Path, Trainer]:
    out = tmp_path_factory.mktemp("trained") / "adapter"
    trainer = Trainer(make_config(tiny_dir, pair_file, steps=6, micro_batch_size=6), out)
    trainer.train()
    return out, trainer


def bare_peft(tiny_dir: Path, adapter: Path):
    """The adapter loaded by plain peft on the bare transformer (``AutoModel``: no LM head); every saved tensor
    must be in it."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModel

    model = PeftModel.from_pretrained(AutoModel.from_pretrained(str(tiny_dir)), str(adapter)).eval()
    assert max_diff(get_peft_model_state_dict(model), lora_weights(adapter)) == 0
    return model


@pytest.mark.slow
def test_output_is_a_plain_peft_folder_with_metadata_and_card(trained, tiny_dir):
    out, trainer = trained
    assert all(name.startswith("base_model.model.layers.") for name in lora_weights(out))  # saved on the backbone
    model = bare_peft(tiny_dir, out)
    inputs = {"input_ids": torch.tensor([[5, 17, 42, 9, 3]])}
    trainer.peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(**inputs).last_hidden_state, trainer.loaded.backbone(**inputs).last_hidden_state, rtol=0, atol=1e-5
        )
    adapter = read_adapter(out)
    meta = json.loads((out / ADAPTER_METADATA).read_text())
    assert adapter.metadata == meta
    for key in ("base_model", "base_weights_sha256", "prompt", "pooling", "layer", "max_length", "training"):
        assert key in meta
    assert adapter.base_weights_sha256 == trainer.loaded.weights_hash
    assert meta["prompt"] == PROMPTS["eol-noquote"]  # the recipe's prompt, the default
    card = adapter.card
    assert card is not None and card["metadata"] == meta
    assert card["run"]["pairs_per_s"] > 0 and card["run"]["peak_rss_mb"] > 0
    assert card["data"]["pairs"] == 40 and card["data"]["sha256"]
    assert adapter.readme == render_card(card) and "LoRA r=4" in adapter.readme
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "pairs_per_s"} <= row.keys() for row in log)


@pytest.mark.slow
def test_inference_encoder_reproduces_training_embeddings(trained):
    from core.encoding.encoder import Encoder

    out, trainer = trained
    # The adapter's trained setting (prompt, pooling, layer, max length) is the encoder's default.
    encoder = Encoder(trainer.config.base_model, adapter=out, cache=False, precision="fp32")
    assert encoder.prompt.template == trainer.encoder.prompt.template and encoder.pooling == "last"
    assert encoder.max_length == trainer.config.embedding.max_length
    texts = [p["anchor"] for p in trainer.pairs[:6]]
    trainer.peft_model.eval()
    with torch.no_grad():
        during_training = trainer.embed(trainer.encoder.prepare(texts)).numpy()
    assert abs(encoder.encode(texts) - during_training).max() <= 1e-4
    base = encoder.encode(texts, use_adapter=False)
    assert abs(base - during_training).max() > 1e-3  # the adapter changed something


@pytest.mark.slow
def test_training_lowers_the_loss(trained):
    _, trainer = trained
    assert sum(trainer.losses[-2:]) < sum(trainer.losses[:2])


@pytest.mark.slow
def test_bad_inputs_fail_with_clear_messages(tiny_dir, pair_file, tmp_path):
    with pytest.raises(TrainError, match="no in-batch negatives"):
        Trainer(make_config(tiny_dir, pair_file, batch_size=1), tmp_path / "a")
    with pytest.raises(TrainError, match=r"its linear modules are: .*q_proj"):
        Trainer(make_config(tiny_dir, pair_file, target_modules=["q_proj", "qkv"]), tmp_path / "b")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(PairFileError, match="empty"):
        Trainer(make_config(tiny_dir, empty), tmp_path / "c")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "a"\n')
    with pytest.raises(PairFileError, match="line 2"):
        Trainer(make_config(tiny_dir, bad), tmp_path / "d")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(TrainError, match=r"cannot create --out .*choose a writable folder"):
        Trainer(make_config(tiny_dir, pair_file), not_a_folder / "out")
    same = tmp_path / "same.jsonl"
    views = [{"anchor": f"the cat {w}", "positive": f"the cat {w}", "method": "dropout"} for w in WORDS]
    same.write_text("".join(json.dumps(row) + "\n" for row in views))
    with pytest.raises(TrainError, match="lora-dropout"):
        Trainer(make_config(tiny_dir, same), tmp_path / "e")


@pytest.mark.slow
def test_lora_on_top_layers_only(tiny_dir, pair_file, tmp_path):
    """--lora-layers k adapts the top k layers alone (cheaper backward) and is checked against the model."""
    from transformers import AutoConfig

    n_layers = AutoConfig.from_pretrained(tiny_dir).num_hidden_layers
    trainer = Trainer(make_config(tiny_dir, pair_file, lora_layers=1, steps=2), tmp_path / "top")
    trainer.train()
    trainer.finish()
    adapted = {int(k.split(".layers.")[1].split(".")[0]) for k in lora_weights(tmp_path / "top")}
    assert adapted == {n_layers - 1}
    assert read_adapter(tmp_path / "top").config["layers_pattern"] == "layers"
    bare_peft(tiny_dir, tmp_path / "top")  # peft finds the chosen layer on AutoModel too
    assert "of the top 1 layers" in (tmp_path / "top" / "README.md").read_text()
    with pytest.raises(TrainError, match=f"exceeds the model's {n_layers} layers"):
        Trainer(make_config(tiny_dir, pair_file, lora_layers=n_layers + 1), tmp_path / "too-many")


@pytest.mark.slow
def test_a_finished_adapter_is_not_trained_over_without_force(trained, tiny_dir, pair_file, tmp_path, monkeypatch):
    """Issue 30: what ``make adapter`` leaves (adapter files, no checkpoints/) was overwritten, its log appended to."""
    import shutil

    import core.training.trainer

    out = tmp_path / "adapter"
    shutil.copytree(trained[0], out)
    assert not (out / "checkpoints").exists()
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    with monkeypatch.context() as patch:
        patch.setattr(core.training.trainer, "load_model", lambda *a, **k: pytest.fail("refused after the model load"))
        with pytest.raises(TrainError, match=r"holds a finished adapter: .*Choose a new --out, or pass --force"):
            Trainer(make_config(tiny_dir, pair_file, steps=2), out)
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    Trainer(make_config(tiny_dir, pair_file, steps=2), out, force=True).train()
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and json.loads((out / ADAPTER_METADATA).read_text())["steps_done"] == 2
