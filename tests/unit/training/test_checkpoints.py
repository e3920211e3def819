"""Checkpoints and resume on the tiny Llama: bit-identical resumes, data-only files, refusals before the model loads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

import core.training.trainer
from core.runtime.errors import TrainError
from core.training.checkpoints import (
    LegacyCheckpointError,
    decode_state,
    encode_state,
    interrupts_held,
    latest_checkpoint,
    read_resume_state,
    rng_states,
    set_rng_states,
    stop_signals_interrupt,
    write_resume_state,
)
from core.training.trainer import Trainer
from tests.unit.training.common import lora_weights, make_config, max_diff


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_resume_with_another_config_names_the_difference(tiny_dir, interrupted_run, tmp_path, monkeypatch):
    out, pairs = copy_run(interrupted_run, tmp_path)
    no_model_load(monkeypatch)
    changed = {**RESUME_SETTINGS, "temperature": 0.1, "lr": 0.5}
    with pytest.raises(TrainError, match=r"temperature: checkpoint 0\.2 vs now 0\.1") as error:
        Trainer(make_config(tiny_dir, pairs, **changed), out, resume=True)
    assert "lr: checkpoint 0.01 vs now 0.5" in str(error.value) and "new --out" in str(error.value)
    with pytest.raises(TrainError, match="--resume"):
        Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out)


@pytest.mark.slow
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
    assert card["data"]["sha256"] == hashlib.sha256(moved.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_truncated_checkpoint_falls_back_to_the_older_one(tiny_dir, interrupted_run, tmp_path, caplog):
    """Issue 16 #7: the newest checkpoint truncated -> a warning, resume from the one before; none -> TrainError."""
    out, pairs = copy_run(interrupted_run, tmp_path)
    checkpoints = out / "checkpoints"
    newest = checkpoints / "step-000004" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="core.training"):
        trainer = Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)
    assert trainer.step == 2
    assert "step-000004" in caplog.text and "resuming from step-000002" in caplog.text
    assert not (checkpoints / "step-000004").exists() and len(list(checkpoints.glob("damaged-step-000004-*"))) == 1
    del trainer

    older = checkpoints / "step-000002" / "trainer_state.safetensors"
    older.write_bytes(older.read_bytes()[:100])
    with pytest.raises(TrainError, match=r"no usable checkpoint .*step-000002 .*Start fresh"):
        Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)


# ----- data only: the resume state without pickle


def _stepped_optimizer() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(2):
        sum(p.square().sum() for p in params).backward()
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


@pytest.fixture
def restored_rng():
    """Leaves the global generators as the test found them (later tests draw from them)."""
    saved = rng_states()
    yield
    set_rng_states(saved)


def test_the_resume_state_round_trips_exactly_through_safetensors_and_json(tmp_path, restored_rng):
    optimizer, scheduler = _stepped_optimizer()
    random.seed(4)
    np.random.seed(4)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": {},
        "rng_by_rank": [rng_states()],
    }
    write_resume_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainer_state.safetensors"]
    back = read_resume_state(tmp_path)
    assert back["scheduler"] == state["scheduler"] and back["scaler"] == {}
    saved_opt, read_opt = state["optimizer"], back["optimizer"]
    assert read_opt["param_groups"] == saved_opt["param_groups"]
    assert isinstance(read_opt["param_groups"][0]["betas"], tuple)
    assert read_opt["state"].keys() == saved_opt["state"].keys() == {0, 1}  # integer keys, as the optimizer needs
    for index, tensors in saved_opt["state"].items():
        for name, tensor in tensors.items():
            assert (
                torch.equal(read_opt["state"][index][name], tensor)
                and read_opt["state"][index][name].dtype == tensor.dtype
            )
    rng, read_rng = state["rng_by_rank"][0], back["rng_by_rank"][0]
    assert torch.equal(read_rng["torch"], rng["torch"]) and read_rng["python"] == rng["python"]
    assert read_rng["numpy"][0] == "MT19937" and np.array_equal(read_rng["numpy"][1], rng["numpy"][1])
    assert read_rng["numpy"][1].dtype == rng["numpy"][1].dtype and read_rng["numpy"][2:] == rng["numpy"][2:]
    # Restored, every generator continues where the saved one would have.
    expected = (torch.rand(3), random.random(), np.random.rand())
    set_rng_states(read_rng)
    assert torch.equal(torch.rand(3), expected[0]) and (random.random(), np.random.rand()) == expected[1:]
    fresh, _ = _stepped_optimizer()
    fresh.load_state_dict(read_opt)
    assert fresh.state_dict()["state"][0]["exp_avg"].equal(saved_opt["state"][0]["exp_avg"])


def test_the_codec_refuses_what_it_cannot_store_as_data():
    tensors: dict = {}
    assert decode_state(encode_state({"__x": (1, [2.5, None])}, tensors), tensors) == {"__x": (1, [2.5, None])}
    with pytest.raises(TypeError, match="cannot store a object"):
        encode_state({"a": object()}, {})


class _Planted:
    """A pickle that writes a file when it is loaded: what an attacker would plant in a run folder."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def plant_pickle(folder: Path, marker: Path) -> None:
    torch.save({"optimizer": _Planted(marker)}, folder / "trainer_state.pt")


def test_a_pickle_checkpoint_is_refused_and_never_loaded(tmp_path):
    root = tmp_path / "checkpoints"
    old = root / "step-000002"
    old.mkdir(parents=True)
    (old / "trainer_state.json").write_text(json.dumps({"step": 2}))
    marker = tmp_path / "ran.txt"
    plant_pickle(old, marker)
    pattern = r"trainer_state.pt \(the pickle format of older versions\) holds more than tensors and plain data"
    with pytest.raises(LegacyCheckpointError, match=pattern + r", so it is not loaded: .*Start fresh"):
        latest_checkpoint(root, set_aside=True)
    assert not marker.exists() and old.is_dir()  # refused, not set aside as damaged


@pytest.mark.slow
def test_a_checkpoint_of_the_older_pickle_format_still_resumes(tiny_dir, interrupted_run, straight_run, tmp_path):
    """What older versions wrote (torch.save of the same state) is read by the weights-only unpickler: data only."""
    out, pairs = copy_run(interrupted_run, tmp_path)
    for folder in (out / "checkpoints").glob("step-*"):
        torch.save(read_resume_state(folder), folder / "trainer_state.pt")
        (folder / "trainer_state.safetensors").unlink()
    trainer = Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)
    assert trainer.step == 4
    trainer.train()
    assert max_diff(lora_weights(straight_run), lora_weights(out)) == 0


@pytest.mark.slow
def test_a_pickle_beside_a_data_checkpoint_is_ignored(tiny_dir, interrupted_run, straight_run, tmp_path):
    out, pairs = copy_run(interrupted_run, tmp_path)
    marker = tmp_path / "ran.txt"
    for folder in (out / "checkpoints").glob("step-*"):
        assert not (folder / "trainer_state.pt").exists()  # what this version writes: data only
        plant_pickle(folder, marker)
    trainer = Trainer(make_config(tiny_dir, pairs, **RESUME_SETTINGS), out, resume=True)
    trainer.train()
    assert not marker.exists()
    assert max_diff(lora_weights(straight_run), lora_weights(out)) == 0


# ----- interrupts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_an_update_takes_effect_after_it(sig):
    done = []
    with pytest.raises(KeyboardInterrupt), stop_signals_interrupt(), interrupts_held():
        os.kill(os.getpid(), sig)
        done.append("the rest of the update")
    assert done == ["the rest of the update"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_as_ctrl_c_does(sig):
    before = signal.getsignal(sig)
    with pytest.raises(KeyboardInterrupt), stop_signals_interrupt():
        os.kill(os.getpid(), sig)
        pytest.fail("the signal did not stop the block")
    assert signal.getsignal(sig) == before
