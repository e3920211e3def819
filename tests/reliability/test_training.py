"""Reliability cases of training (issue 16): interruptions and bad resumes of ``python -m core.train``.

Each test is one row of the README's reliability table (its ``Case``). The runs use the tiny Llama of
tests/conftest.py in subprocesses (one thread each, so weights compare bit for bit across processes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.reliability.cases import Case, cases

REPO = Path(__file__).resolve().parents[2]
STEPS = 8

CTRL_C = Case(
    "train-sigint-resume",
    "Ctrl-C (SIGINT) to `core.train` mid-run, then the same command with `--resume`",
    "exit 130, `interrupted after step N: checkpoint ...; continue with --resume`",
    "the checkpoint of the last completed step; the resumed adapter equals an uninterrupted run's bit for bit",
    area="interrupt",
)
SIGKILL = Case(
    "train-sigkill-resume",
    "SIGKILL to `core.train` mid-run, then `--resume`",
    "the shell's `Killed`; the resume says `from step N`",
    "the last periodic checkpoint; the resumed adapter equals an uninterrupted run's bit for bit",
    area="interrupt",
)
CHANGED = Case(
    "train-resume-changed",
    "`core.train --resume` with changed hyperparameters, or after the pairs file changed",
    "`error: cannot resume ...: lr: checkpoint 0.01 vs now 0.02 ...` / `... is not the one trained on (sha256 ...)`,"
    " before the model loads",
    "checkpoints untouched, no adapter written",
)
TRUNCATED = Case(
    "train-truncated-checkpoint",
    "`core.train --resume` with the newest checkpoint truncated",
    "a warning naming the damaged checkpoint and the one resumed from",
    "the damaged one renamed `damaged-step-*`; the resumed adapter equals an uninterrupted run's bit for bit",
    area="storage",
)
IDENTICAL = Case(
    "train-identical-pairs",
    "`core.train` on sixteen identical pairs",
    "`error: only 1 usable pair(s) ... (dropped 15 duplicate pair(s) ...)`",
    "nothing written",
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    words = ["the", "a", "man", "woman", "dog", "cat", "car", "drives", "runs", "red", "blue", "house", "city"]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    rows = [{"anchor": f"{w} {v} runs", "positive": f"{v} {w} runs fast"} for w in words for v in words[:3]]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def command(tiny_model_dir: Path, pairs: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "core.train", "--out", str(out), "--pairs", str(pairs),
        "--base-model", str(tiny_model_dir), "--steps", str(STEPS), "--batch-size", "4", "--micro-batch-size", "3",
        "--lora-r", "2", "--lora-dropout", "0.2", "--lr", "0.01", "--precision", "fp32", "--checkpoint-every", "2",
        "--no-progress", *extra,
    ]  # fmt: skip


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


def logged_steps(out: Path) -> int:
    path = out / "train_log.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def start_and_signal(args: list[str], out: Path, sig: int, after_steps: int) -> subprocess.CompletedProcess:
    process = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while logged_steps(out) < after_steps and process.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before the signal"
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa), "weights differ"


@pytest.fixture(scope="module")
def reference(tiny_model_dir, pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "adapter"
    result = run(command(tiny_model_dir, pairs, out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def interrupted(tiny_model_dir, pairs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("interrupted") / "adapter"
    result = start_and_signal(command(tiny_model_dir, pairs, out), out, signal.SIGINT, after_steps=3)
    return out, result


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / folder.name)
    return tmp_path / folder.name


@cases(CTRL_C)
def test_ctrl_c_then_resume_is_bit_identical(case, tiny_model_dir, pairs, reference, interrupted, tmp_path):
    """training: Ctrl-C mid-run, then --resume -> exit 130 naming the checkpoint -> resumed weights identical."""
    folder, result = interrupted
    assert result.returncode == 130, result.stderr[-2000:]
    assert "interrupted after step" in result.stderr and "--resume" in result.stderr
    out = copy_of(folder, tmp_path)
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference, out)
    assert [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()] == list(
        range(1, STEPS + 1)
    )


@cases(SIGKILL)
def test_sigkill_then_resume_is_bit_identical(case, tiny_model_dir, pairs, reference, tmp_path):
    """training: SIGKILL mid-run, then --resume -> resumes from the last periodic checkpoint -> weights identical."""
    out = tmp_path / "adapter"
    killed = start_and_signal(command(tiny_model_dir, pairs, out), out, signal.SIGKILL, after_steps=3)
    assert killed.returncode == -signal.SIGKILL
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert re.search(r"from step [246] to 8", resumed.stdout), resumed.stdout
    assert_same_weights(reference, out)


@cases(CHANGED)
def test_resume_with_changed_settings_or_pairs_is_refused(case, tiny_model_dir, pairs, interrupted, tmp_path):
    """training: --resume with changed hyperparameters, or changed pairs -> exit 2 naming them -> nothing.

    Both are refused before the model loads: the refusal must not wait for a (16 s) model load.
    """
    folder, _ = interrupted
    out = copy_of(folder, tmp_path)
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    changed = run(command(tiny_model_dir, pairs, out, "--resume", "--lr", "0.02", "--temperature", "0.1"))
    assert changed.returncode == 2
    assert "lr: checkpoint 0.01 vs now 0.02" in changed.stderr
    assert "temperature: checkpoint 0.2 vs now 0.1" in changed.stderr
    edited = tmp_path / "pairs.jsonl"
    edited.write_text(pairs.read_text().replace("dog", "wolf"))
    moved = run(command(tiny_model_dir, edited, out, "--resume"))
    assert moved.returncode == 2 and "is not the one trained on" in moved.stderr and "sha256" in moved.stderr
    for result in (changed, moved):
        assert "error: cannot resume" in result.stderr and "Traceback" not in result.stderr
        assert "from step" not in result.stdout  # the run never started
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    assert not (out / "adapter_model.safetensors").exists()


@cases(TRUNCATED)
def test_a_truncated_checkpoint_falls_back_to_the_older_one(
    case, tiny_model_dir, pairs, reference, interrupted, tmp_path
):
    """training: --resume with the newest checkpoint truncated -> a warning -> set aside, resumed from the older one."""
    folder, _ = interrupted
    out = copy_of(folder, tmp_path)
    newest = sorted((out / "checkpoints").glob("step-*"))[-1]
    target = newest / "adapter_model.safetensors"
    target.write_bytes(target.read_bytes()[:1000])
    resumed = run(command(tiny_model_dir, pairs, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"damaged checkpoint(s) {newest.name}" in resumed.stderr and "Traceback" not in resumed.stderr
    assert list((out / "checkpoints").glob(f"damaged-{newest.name}-*"))
    assert_same_weights(reference, out)


@cases(IDENTICAL)
def test_sixteen_identical_pairs_are_refused(case, tiny_model_dir, tmp_path):
    """training: sixteen identical pairs -> exit 2 naming the 15 duplicates dropped -> nothing written."""
    same = tmp_path / "same.jsonl"
    same.write_text((json.dumps({"anchor": "the cat runs", "positive": "a cat runs"}) + "\n") * 16)
    out = tmp_path / "adapter"
    result = run(command(tiny_model_dir, same, out, "--batch-size", "16"))
    assert result.returncode == 2
    assert "error: only 1 usable pair(s)" in result.stderr and "15 duplicate pair(s)" in result.stderr
    assert not out.exists()
