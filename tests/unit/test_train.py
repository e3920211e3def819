"""core.train on a tiny Llama: loss, gradient caching, resume, distributed, output folder, bad input."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.adapters import ADAPTER_METADATA, read_adapter, render_card
from core.pairs import PairFileError
from core.train import TrainConfig, Trainer, TrainError, info_nce, main

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


def test_output_is_a_plain_peft_folder_with_metadata_and_card(trained, tiny_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, trainer = trained
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_dir)), str(out))
    assert max_diff(lora_weights(out), {k: v for k, v in lora_weights(out).items()}) == 0
    assert any("lora_A" in n for n, _ in model.named_parameters())
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
    from core.encoder import Encoder

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
    assert max_diff(lora_weights(straight), lora_weights(resumed)) <= 1e-6
    steps = [json.loads(line)["step"] for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_with_another_config_names_the_difference(tiny_dir, pair_file, tmp_path):
    out = tmp_path / "run"
    Trainer(make_config(tiny_dir, pair_file, steps=2, checkpoint_every=1), out).train()
    with pytest.raises(TrainError, match=r"temperature: checkpoint 0\.2 vs now 0\.1"):
        Trainer(make_config(tiny_dir, pair_file, steps=2, checkpoint_every=1, temperature=0.1), out, resume=True)
    with pytest.raises(TrainError, match="--resume"):
        Trainer(make_config(tiny_dir, pair_file, steps=2), out)


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
    same = tmp_path / "same.jsonl"
    same.write_text("".join(json.dumps({"anchor": f"the cat {w}", "positive": f"the cat {w}"}) + "\n" for w in WORDS))
    with pytest.raises(TrainError, match="lora-dropout"):
        Trainer(make_config(tiny_dir, same), tmp_path / "e")


def test_long_pairs_are_truncated_and_counted(tiny_dir, tmp_path):
    path = tmp_path / "long.jsonl"
    long_text = " ".join(WORDS * 3)
    rows = [{"anchor": long_text if i < 3 else f"the dog {w}", "positive": f"a cat {w}"} for i, w in enumerate(WORDS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    trainer = Trainer(make_config(tiny_dir, path, max_length=40, prompt="none"), tmp_path / "run")
    assert trainer.truncated == 3
    assert max(len(item.input_ids) for item in trainer.anchors) <= 40


def test_cli_errors_are_one_line_and_exit_2(tiny_dir, pair_file, tmp_path, capsys):
    code = main(
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
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lora_rank": 8}))
    assert main(["--out", str(tmp_path / "y"), "--config", str(config)]) == 2
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
    assert "of the top 1 layers" in (tmp_path / "top" / "README.md").read_text()
    with pytest.raises(TrainError, match=f"exceeds the model's {n_layers} layers"):
        Trainer(make_config(tiny_dir, pair_file, lora_layers=n_layers + 1), tmp_path / "too-many")
