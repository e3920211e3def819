"""core.train on a tiny Llama: loss, gradient caching, resume, distributed, output folder, bad input."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import core.training.trainer
from core.models.adapters import ADAPTER_METADATA, read_adapter, render_card
from core.runtime.errors import PairFileError, run_cli
from core.training.trainer import TrainConfig, Trainer, TrainError, clean_pairs, info_nce, main

WORDS = [
    "the",
    "a",
    "man",
    "woman",
    "dog",
    "cat",
    "car",
    "drives",
    "runs",
    "eats",
    "quickly",
    "slowly",
    "red",
    "blue",
    "house",
    "street",
    "city",
    "in",
    "on",
    "at",
    "with",
    "is",
    "are",
    "was",
    "were",
    "this",
    "that",
    "sentence",
    "means",
    "one",
    "word",
    "belongs",
    "to",
    "following",
    "cluster",
]


@pytest.fixture(scope="session")
def tiny_dir(tiny_model_dir) -> Path:
    return Path(tiny_model_dir)


@pytest.fixture(scope="session")
def pair_file(tmp_path_factory) -> Path:
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    lines = []
    for i in range(40):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        positive = words[:]
        rng.shuffle(positive)
        if positive == words:  # an anchor equal to its positive would be dropped as a trivial pair
            positive.append("too")
        lines.append(json.dumps({"anchor": " ".join(words), "positive": " ".join(positive), "source": "t", "id": i}))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_config(tiny_dir: Path, pair_file: Path, **overrides) -> TrainConfig:
    settings = dict(
        pairs=str(pair_file),
        base_model=str(tiny_dir),
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        steps=4,
        warmup_steps=1,
        batch_size=8,
        micro_batch_size=0,
        lr=1e-2,
        max_length=64,
        checkpoint_every=0,
        progress=False,
        precision="fp32",  # the equality tests need it; "auto" would pick bf16 on a CPU with bf16 units
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ----- loss


def test_info_nce_matches_a_hand_computation():
    torch.manual_seed(0)
    a, p = torch.randn(5, 7), torch.randn(5, 7)
    cos = torch.nn.functional.cosine_similarity(a[:, None], p[None], dim=-1)
    cos_m = cos - 0.1 * torch.eye(5)
    expected = -(torch.log_softmax(cos_m / 0.2, dim=1).diagonal()).mean()
    assert torch.allclose(info_nce(a, p, 0.2, margin=0.1), expected, atol=1e-6)
    backward = -(torch.log_softmax(cos_m.T / 0.2, dim=1).diagonal()).mean()
    assert torch.allclose(info_nce(a, p, 0.2, 0.1, symmetric=True), (expected + backward) / 2, atol=1e-6)
    # A margin makes the task harder: the loss rises.
    assert info_nce(a, p, 0.2, margin=0.3) > info_nce(a, p, 0.2)


def test_hard_negatives_join_each_anchors_candidates():
    torch.manual_seed(0)
    a, p, n = torch.randn(5, 7), torch.randn(5, 7), torch.randn(5, 7)
    candidates = torch.cat([p, n])
    cos = torch.nn.functional.cosine_similarity(a[:, None], candidates[None], dim=-1)
    cos_m = cos - 0.1 * torch.eye(5, 10)
    expected = -(torch.log_softmax(cos_m / 0.2, dim=1).diagonal()).mean()
    assert torch.allclose(info_nce(a, p, 0.2, margin=0.1, negatives=n), expected, atol=1e-6)
    backward = -(torch.log_softmax(cos_m[:, :5].T / 0.2, dim=1).diagonal()).mean()
    both = info_nce(a, p, 0.2, 0.1, symmetric=True, negatives=n)
    assert torch.allclose(both, (expected + backward) / 2, atol=1e-6)
    # A negative equal to its anchor is the hardest there is: the loss rises over random ones.
    assert info_nce(a, p, 0.2, negatives=a) > info_nce(a, p, 0.2, negatives=n)


# ----- gradient caching


def _grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in trainer.peft_model.named_parameters() if p.requires_grad}


def test_gradient_cache_equals_full_batch_gradients(tiny_dir, pair_file, tmp_path):
    trainer = Trainer(make_config(tiny_dir, pair_file), tmp_path / "run")
    torch.manual_seed(3)
    with torch.no_grad():  # non-zero LoRA B, so lora_A gets gradient too
        for name, param in trainer.peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    trainer.peft_model.train()
    indices = trainer.batch_indices(0)
    trainer.config.micro_batch_size = 0
    full_loss = trainer.compute_gradients(indices)
    full = _grads(trainer)
    for micro in (3, 5):
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.config.micro_batch_size = micro
        assert trainer.compute_gradients(indices) == pytest.approx(full_loss, abs=1e-6)
        cached = _grads(trainer)
        assert max_diff(full, cached) <= 1e-5
        assert any(float(g.abs().max()) > 0 for n, g in cached.items() if "lora_A" in n)


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
    trainer.config.micro_batch_size = 5
    assert trainer.compute_gradients(indices) == pytest.approx(full_loss, abs=1e-6)
    assert max_diff(full, _grads(trainer)) <= 1e-5
    # The same pairs without their negatives: a different (smaller-candidate) loss and fingerprint.
    plain = Trainer(make_config(tiny_dir, with_negatives), tmp_path / "plain")
    assert plain.negatives == [] and plain.pair_provenance["pairs_sha256"] != trainer.pair_provenance["pairs_sha256"]
    with pytest.raises(TrainError, match=r"needs a negative in every pair, but 40 of 40 .*core.pairs ... --negatives"):
        Trainer(make_config(tiny_dir, pair_file, hard_negatives=True), tmp_path / "none")


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


# ----- training, output folder, inference consistency


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
    assert meta["prompt"] == 'This sentence: "{text}" belongs to the following cluster:'
    card = adapter.card
    assert card is not None and card["metadata"] == meta
    assert card["run"]["pairs_per_s"] > 0 and card["run"]["peak_rss_mb"] > 0
    assert card["data"]["pairs"] == 40 and card["data"]["sha256"]
    assert adapter.readme == render_card(card) and "LoRA r=4" in adapter.readme
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]
    assert all({"loss", "lr", "pairs_per_s"} <= row.keys() for row in log)


def test_inference_encoder_reproduces_training_embeddings(trained):
    from core.encoding.encoder import Encoder

    out, trainer = trained
    # max_length is not (yet) an adapter default of the Encoder: pass the training one.
    encoder = Encoder(
        trainer.config.base_model, adapter=out, cache=False, precision="fp32", max_length=trainer.config.max_length
    )
    assert encoder.prompt.template == trainer.encoder.prompt.template and encoder.pooling == "last"
    texts = [p["anchor"] for p in trainer.pairs[:6]]
    trainer.peft_model.eval()
    with torch.no_grad():
        during_training = trainer.embed(trainer.encoder.prepare(texts)).numpy()
    assert abs(encoder.encode(texts) - during_training).max() <= 1e-4
    base = encoder.encode(texts, use_adapter=False)
    assert abs(base - during_training).max() > 1e-3  # the adapter changed something


def test_training_lowers_the_loss(trained):
    _, trainer = trained
    assert sum(trainer.losses[-2:]) < sum(trainer.losses[:2])


# ----- checkpoints and resume


def test_interrupted_and_resumed_run_ends_at_the_same_adapter(tiny_dir, pair_file, tmp_path):
    settings = dict(steps=6, lora_dropout=0.2, micro_batch_size=5, checkpoint_every=2)
    straight = tmp_path / "straight"
    Trainer(make_config(tiny_dir, pair_file, **settings), straight).train()

    resumed = tmp_path / "resumed"

    def interrupt(result):
        if result.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(make_config(tiny_dir, pair_file, **settings), resumed).train(callback=interrupt)
    assert (resumed / "checkpoints" / "step-000003").is_dir()
    assert not list((resumed / "checkpoints").glob(".tmp*"))
    trainer = Trainer(make_config(tiny_dir, pair_file, **settings), resumed, resume=True)
    assert trainer.step == 3
    trainer.train()
    assert max_diff(lora_weights(straight), lora_weights(resumed)) == 0
    steps = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


RESUME_SETTINGS = dict(steps=5, lora_dropout=0.2, micro_batch_size=5, checkpoint_every=2)


@pytest.fixture(scope="module")
def straight_run(tiny_dir, pair_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "adapter"
    Trainer(make_config(tiny_dir, pair_file, **RESUME_SETTINGS), out).train()
    return out


def resume_to_the_end(tiny_dir, pair_file, out: Path, at_step: int) -> None:
    trainer = Trainer(make_config(tiny_dir, pair_file, **RESUME_SETTINGS), out, resume=True)
    assert trainer.step == at_step
    trainer.train()


def test_ctrl_c_in_the_middle_of_a_step_resumes_bit_identically(tiny_dir, pair_file, straight_run, tmp_path):
    """Issue 16 #3: a Ctrl-C that lands while step 4 draws its dropout masks (gradient caching, micro-batches)."""
    out = tmp_path / "run"
    trainer = Trainer(make_config(tiny_dir, pair_file, **RESUME_SETTINGS), out)
    embed, calls_in_step_4 = trainer.embed, []

    def embed_then_interrupt(items):
        if trainer.step == 3:
            calls_in_step_4.append(1)
            if len(calls_in_step_4) == 6:  # after the no-gradient pass, inside the replayed one
                raise KeyboardInterrupt
        return embed(items)

    trainer.embed = embed_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert (out / "checkpoints" / "step-000003").is_dir()
    resume_to_the_end(tiny_dir, pair_file, out, at_step=3)
    assert max_diff(lora_weights(straight_run), lora_weights(out)) == 0
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_sigint_during_the_update_waits_for_the_step_to_end(tiny_dir, pair_file, straight_run, tmp_path):
    """A real SIGINT sent while the optimizer updates the weights: the step completes, then the run stops."""
    out = tmp_path / "run"
    trainer = Trainer(make_config(tiny_dir, pair_file, **RESUME_SETTINGS), out)

    def sigint_in_step_2(optimizer, args, kwargs):
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    trainer.optimizer.register_step_pre_hook(sigint_in_step_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.step == 2 and (out / "checkpoints" / "step-000002").is_dir()
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2]
    resume_to_the_end(tiny_dir, pair_file, out, at_step=2)
    assert max_diff(lora_weights(straight_run), lora_weights(out)) == 0


def no_model_load(monkeypatch) -> None:
    """Resume checks must fail before the model loads (16 s for the real one)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the resume was checked")

    monkeypatch.setattr(core.training.trainer, "load_model", refuse)


@pytest.fixture(scope="module")
def interrupted_run(tiny_dir, pair_file, tmp_path_factory) -> Path:
    """Checkpoints at steps 2 and 4 of a run stopped after step 4 (its pairs file copied beside it)."""
    root = tmp_path_factory.mktemp("interrupted")
    pairs = root / "pairs.jsonl"
    pairs.write_bytes(pair_file.read_bytes())

    def stop(result):
        if result.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), root / "run").train(callback=stop)
    return root


def copy_run(interrupted_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    shutil.copytree(interrupted_run, tmp_path / "copy")
    return tmp_path / "copy" / "run", tmp_path / "copy" / "pairs.jsonl"


def test_a_checkpoint_saved_on_the_causal_lm_resumes_to_the_same_adapter(
    tiny_dir, interrupted_run, straight_run, tmp_path
):
    """Runs checkpointed before adapters moved to the backbone saved tensors as base_model.model.model.layers..."""
    from safetensors.torch import save_file

    out, pairs = copy_run(interrupted_run, tmp_path)
    checkpoint = out / "checkpoints" / "step-000004" / "adapter_model.safetensors"
    weights = lora_weights(checkpoint.parent)
    save_file({k.replace("base_model.model.", "base_model.model.model.", 1): v for k, v in weights.items()}, checkpoint)
    trainer = Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)
    assert trainer.step == 4
    trainer.train()
    assert max_diff(lora_weights(straight_run), lora_weights(out)) == 0


def test_resume_with_another_config_names_the_difference(tiny_dir, interrupted_run, tmp_path, monkeypatch):
    out, pairs = copy_run(interrupted_run, tmp_path)
    no_model_load(monkeypatch)
    changed = {**RESUME_SETTINGS, "temperature": 0.1, "lr": 0.5}
    with pytest.raises(TrainError, match=r"temperature: checkpoint 0\.2 vs now 0\.1") as error:
        Trainer(make_config(tiny_dir, pairs, **changed), out, resume=True)
    assert "lr: checkpoint 0.01 vs now 0.5" in str(error.value) and "new --out" in str(error.value)
    with pytest.raises(TrainError, match="--resume"):
        Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out)


def test_resume_after_the_pairs_file_changed_is_refused(tiny_dir, interrupted_run, tmp_path, monkeypatch):
    """Issue 16 #5: same path, other content -> refused, naming the file and the way out."""
    out, pairs = copy_run(interrupted_run, tmp_path)
    original = pairs.read_text()
    pairs.write_text(original.replace("the", "a"))
    with monkeypatch.context() as patch:
        no_model_load(patch)
        with pytest.raises(TrainError, match=r"pairs file .*pairs\.jsonl is not the one trained on") as error:
            Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)
    assert "sha256" in str(error.value) and "start fresh" in str(error.value)
    # Content, not path: the same pairs under another name resume, and the card names the file used.
    pairs.write_text(original)
    moved = pairs.rename(pairs.with_name("moved.jsonl"))
    trainer = Trainer(make_config(tiny_dir, moved, **RESUME_SETTINGS), out, resume=True)
    assert trainer.step == 4
    card = trainer.train()
    assert card["data"]["file"] == str(moved)
    assert card["data"]["sha256"] == core.training.trainer.hashlib.sha256(moved.read_bytes()).hexdigest()


def test_a_truncated_checkpoint_falls_back_to_the_older_one(tiny_dir, interrupted_run, tmp_path, caplog):
    """Issue 16 #7: the newest checkpoint truncated -> a warning, resume from the one before; none -> TrainError."""
    out, pairs = copy_run(interrupted_run, tmp_path)
    checkpoints = out / "checkpoints"
    newest = checkpoints / "step-000004" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="core.training.trainer"):
        trainer = Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)
    assert trainer.step == 2
    assert "step-000004" in caplog.text and "resuming from step-000002" in caplog.text
    assert not (checkpoints / "step-000004").exists() and len(list(checkpoints.glob("damaged-step-000004-*"))) == 1
    del trainer

    older = checkpoints / "step-000002" / "trainer_state.pt"
    older.write_bytes(older.read_bytes()[:100])
    with pytest.raises(TrainError, match=r"no usable checkpoint .*step-000002 .*Start fresh"):
        Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)


# ----- bad input


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


def test_degenerate_pairs_are_dropped_and_counted_or_refused(tiny_dir, pair_file, tmp_path, caplog):
    """Issue 16 #4: sixteen identical pairs trained at loss ln(batch) and wrote an adapter."""
    sixteen = tmp_path / "sixteen.jsonl"
    sixteen.write_text((json.dumps({"anchor": "the cat runs", "positive": "a cat runs"}) + "\n") * 16)
    with pytest.raises(TrainError, match=r"only 1 usable pair\(s\) .*15 duplicate pair\(s\).*lower --batch-size"):
        Trainer(make_config(tiny_dir, sixteen), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    # Without "method": "dropout", an anchor equal to its positive is a trivial positive: dropped.
    echoes = tmp_path / "echoes.jsonl"
    echoes.write_text("".join(json.dumps({"anchor": f"the cat {w}", "positive": f"the cat {w}"}) + "\n" for w in WORDS))
    with pytest.raises(TrainError, match=r"only 0 usable .*35 pair\(s\) whose anchor equals the positive.*dropout"):
        Trainer(make_config(tiny_dir, echoes), tmp_path / "b")
    # A few duplicates and echoes among good pairs: dropped, said, counted in the card.
    rows = [json.loads(line) for line in pair_file.read_text().splitlines()]
    mixed = tmp_path / "mixed.jsonl"
    extra = [rows[0], rows[1], {"anchor": "same text", "positive": "same text"}]
    mixed.write_text("".join(json.dumps(row) + "\n" for row in rows + extra))
    # The pair-quality report core.pairs wrote beside the file goes into the card and its README.
    quality = {
        "sources": [{"source": "quotes", "package": "inspirational-quotes", "version": "2.0.1", "texts": 43}],
        "counts": {"kept": 43, "source_texts": 50, "steps": [{"filter": "length_ratio", "dropped": 7}]},  # 43 lines
        "examples": [{"anchor": "the cat runs", "positive": "a cat runs"}],
    }
    (tmp_path / "mixed.report.json").write_text(json.dumps(quality))
    with caplog.at_level(logging.WARNING, logger="core.training.trainer"):
        trainer = Trainer(make_config(tiny_dir, mixed, steps=1), tmp_path / "c")
    assert len(trainer.pairs) == 40
    assert "dropped 2 duplicate pair(s)" in caplog.text and "dropped 1 pair(s) whose anchor" in caplog.text
    card = trainer.train()
    assert (card["data"]["pairs"], card["data"]["duplicates_dropped"], card["data"]["identical_dropped"]) == (40, 2, 1)
    assert card["data"]["quality"] == quality
    readme = (tmp_path / "c" / "README.md").read_text()
    assert "## Training pairs" in readme and "| quotes | inspirational-quotes | 2.0.1 |  | 43 |" in readme
    assert "| length_ratio | 7 |" in readme and "| the cat runs | a cat runs |" in readme
    # A report of other pairs (the file edited since) is left out, with a warning.
    mixed.write_text("".join(json.dumps(row) + "\n" for row in rows[:-1] + extra))
    with caplog.at_level(logging.WARNING, logger="core.training.trainer"):
        card = Trainer(make_config(tiny_dir, mixed, steps=1), tmp_path / "d").train()
    assert card["data"]["quality"] is None and "describes 43 pairs, " in caplog.text


def test_clean_pairs_keeps_dropout_views_and_first_occurrences():
    pairs = [
        {"anchor": "a", "positive": "b", "id": 1},
        {"anchor": "a", "positive": "b", "id": 2},
        {"anchor": "b", "positive": "a", "id": 3},
        {"anchor": "c", "positive": "c", "method": "dropout"},
        {"anchor": "c", "positive": "c", "method": "dropout"},
        {"anchor": "d", "positive": "d", "method": "augment"},
    ]
    kept, dropped = clean_pairs(pairs)
    assert [p.get("id", p["anchor"]) for p in kept] == [1, 3, "c"]
    assert (dropped.duplicates, dropped.identical) == (2, 1)


def test_long_pairs_are_truncated_and_counted(tiny_dir, tmp_path):
    path = tmp_path / "long.jsonl"
    long_text = " ".join(WORDS * 3)
    rows = [{"anchor": long_text if i < 3 else f"the dog {w}", "positive": f"a cat {w}"} for i, w in enumerate(WORDS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = Trainer(make_config(tiny_dir, path, max_length=40, prompt="none"), tmp_path / "run")
    assert trainer.truncated == 3
    assert max(len(item.input_ids) for item in trainer.anchors) <= 40


def test_cli_errors_are_one_line_and_exit_2(tiny_dir, pair_file, tmp_path, capsys):
    code = run_cli(
        main,
        [
            "--out",
            str(tmp_path / "x"),
            "--pairs",
            str(pair_file),
            "--base-model",
            str(tiny_dir),
            "--batch-size",
            "1",
            "--no-progress",
        ],
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lora_rank": 8}))
    assert run_cli(main, ["--out", str(tmp_path / "y"), "--config", str(config)]) == 2
    assert "unknown keys: lora_rank" in capsys.readouterr().err


def test_cli_config_file_and_flags(tiny_dir, pair_file, tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"pairs": str(pair_file), "base_model": str(tiny_dir), "lora_r": 2, "steps": 5}))
    out = tmp_path / "out"
    code = main(
        [
            "--config",
            str(config),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--target-modules",
            "q,v",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert card["settings"]["lora_r"] == 2 and card["settings"]["steps"] == 2
    assert card["settings"]["target_modules"] == ["q", "v"]
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2


# ----- distributed


def test_two_processes_match_one_with_the_same_global_batch(tiny_dir, pair_file, tmp_path):
    # A small lr: Adam's first updates are ~lr * sign(grad), which magnifies float noise in near-zero grads.
    common = [
        "-m",
        "core.train",
        "--pairs",
        str(pair_file),
        "--base-model",
        str(tiny_dir),
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--micro-batch-size",
        "6",
        "--lora-r",
        "4",
        "--lora-dropout",
        "0",
        "--lr",
        "0.001",
        "--warmup-steps",
        "1",
        "--precision",
        "fp32",
        "--no-progress",
        "--checkpoint-every",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    root = Path(__file__).resolve().parents[2]
    single = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    double = subprocess.run(
        [*torchrun, *common, "--out", str(tmp_path / "two")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "card.json").read_text())["run"]["world_size"] == 2
    losses = [
        [json.loads(x)["loss"] for x in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
        for d in ("one", "two")
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert max_diff(lora_weights(tmp_path / "one"), lora_weights(tmp_path / "two")) <= 1e-5


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
