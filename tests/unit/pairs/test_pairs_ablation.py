"""scripts/pairs_ablation.sh (`make ablation`) with a stand-in Python that records what it is asked to run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from core.runtime.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "pairs_ablation.sh"

# Records each call's arguments; for core.train it writes the adapter and two checkpoints, as a finished run does.
FAKE_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$CALLS"
if [ "$2" = core.pairs ]; then
    out=$(printf '%s\\n' "$@" | grep -A1 -x -- --out | tail -n 1)
    echo '{"anchor": "a", "positive": "b"}' > "$out"
elif [ "$2" = core.train ]; then
    run=$(printf '%s\\n' "$@" | grep -A1 -x -- --out | tail -n 1)
    mkdir -p "$run/checkpoints/step-00050" "$run/checkpoints/step-00100"
    touch "$run/adapter_config.json"
fi
"""


def run_script(tmp_path: Path, *mixes: str, **env_vars: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    env = {
        **os.environ,
        "PY": str(fake),
        "CALLS": str(calls),
        "PAIRS": str(tmp_path / "pairs"),
        "RUNS": str(tmp_path / "runs"),
        "RESULTS": str(tmp_path / "results"),
        **env_vars,
    }
    done = subprocess.run(["bash", str(SCRIPT), *mixes], env=env, capture_output=True, text=True, timeout=60)
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_each_mix_builds_only_its_pairs_trains_once_and_scores_both_checkpoints(tmp_path):
    done, calls = run_script(tmp_path, "bible", "dropout")
    assert done.returncode == 0, done.stderr
    built = [call for call in calls if " core.pairs " in f" {call} "]
    assert all("--check-tracks strict" in call for call in built)
    assert not any("paraphrase" in call for call in built)  # no mix asked for paraphrases: none generated
    assert sum(" core.train " in f" {call} " for call in calls) == 2
    grid = [call for call in calls if "analysis.clustering" in call][-1]
    models = grid.split("--models ")[1].split()[0].split(",")
    runs = tmp_path / "runs"
    assert models == [
        f"smollm2-135m+{runs}/bible/checkpoints/step-00050",
        f"smollm2-135m+{runs}/bible",
        f"smollm2-135m+{runs}/dropout/checkpoints/step-00050",
        f"smollm2-135m+{runs}/dropout",
    ]
    mix = [json.loads(line) for line in (tmp_path / "pairs" / "mix-dropout.jsonl").read_text().splitlines()]
    assert len(mix) == 3  # the three dropout sources, concatenated
    # A second run resumes: pair files and finished runs are kept, only the grid runs again (it skips scored cells).
    _, again = run_script(tmp_path, "bible", "dropout")
    assert len(again) == len(calls) + 1 and "analysis.clustering" in again[-1]


def test_an_unknown_mix_is_refused_before_any_work(tmp_path):
    done, calls = run_script(tmp_path, "nope")
    assert done.returncode == 2 and "unknown mix 'nope'; choose from:" in done.stderr and calls == []


def test_a_recipe_variant_trains_into_its_own_tagged_run(tmp_path):
    done, calls = run_script(tmp_path, "passages", RECIPE="--temperature 0.1 --lr 1e-4", TAG="t01")
    assert done.returncode == 0, done.stderr
    (built,) = [call for call in calls if " core.pairs " in f" {call} "]
    assert "--method bible-passages" in built and "--check-tracks strict" in built
    (train,) = [call for call in calls if " core.train " in f" {call} "]
    runs = tmp_path / "runs"
    assert train.endswith(f"--out {runs}/passages.t01 --no-progress --temperature 0.1 --lr 1e-4")
    models = calls[-1].split("--models ")[1].split()[0].split(",")
    assert models == [f"smollm2-135m+{runs}/passages.t01/checkpoints/step-00050", f"smollm2-135m+{runs}/passages.t01"]
    assert "--prompt eol-noquote --pooling last --out" in train and "--prompts eol-noquote --poolings last" in calls[-1]


def test_a_setting_variant_trains_and_scores_in_that_prompt_and_pooling(tmp_path):
    done, calls = run_script(tmp_path, "passages", PROMPT="summarize", POOLING="weighted", TAG="sum")
    assert done.returncode == 0, done.stderr
    (train,) = [call for call in calls if " core.train " in f" {call} "]
    assert f"--prompt summarize --pooling weighted --out {tmp_path / 'runs'}/passages.sum" in train
    assert "--prompts summarize --poolings weighted" in calls[-1]


def test_passages3k_samples_enough_passages_for_one_epoch_of_100_steps(tmp_path):
    done, calls = run_script(tmp_path, "passages3k")
    assert done.returncode == 0, done.stderr
    (built,) = [call for call in calls if " core.pairs " in f" {call} "]
    assert "--method bible-passages --n 3200" in built and built.endswith("--check-tracks strict")


def test_another_recipe_trains_its_base_model_in_its_own_prompt_and_pooling(tmp_path):
    recipe = json.loads((REPO_ROOT / "adapters" / "gemma3-270m-embed.json").read_text())
    config = tmp_path / "recipe.json"
    config.write_text(json.dumps({**recipe, "prompt": "summarize", "pooling": "mean"}, indent=2))
    done, calls = run_script(tmp_path, "passages", CONFIG=str(config), TAG="g")
    assert done.returncode == 0, done.stderr
    (train,) = [call for call in calls if " core.train " in f" {call} "]
    assert f"--config {config} " in train and "--prompt summarize --pooling mean --out" in train
    models = calls[-1].split("--models ")[1].split()[0].split(",")
    runs = tmp_path / "runs"
    assert models == [f"gemma3-270m+{runs}/passages.g/checkpoints/step-00050", f"gemma3-270m+{runs}/passages.g"]
    assert "--prompts summarize --poolings mean" in calls[-1]


def test_a_missing_recipe_is_refused_before_any_work(tmp_path):
    done, calls = run_script(tmp_path, "passages", CONFIG=str(tmp_path / "nope.json"))
    assert done.returncode == 2 and f"no recipe at CONFIG={tmp_path / 'nope.json'}" in done.stderr and calls == []


def test_a_hard_negative_mix_mines_negatives_from_the_passages_and_trains_with_them(tmp_path):
    done, calls = run_script(tmp_path, "passages-hn", RECIPE="--lr 1e-4", TAG="x")
    assert done.returncode == 0, done.stderr
    passages, mined = [call for call in calls if " core.pairs " in f" {call} "]
    assert "--method bible-passages" in passages
    assert f"--source {tmp_path / 'pairs'}/passages.jsonl --method file --negatives" in mined
    assert mined.endswith("--check-tracks strict")
    (train,) = [call for call in calls if " core.train " in f" {call} "]
    assert train.endswith("passages-hn.x --no-progress --hard-negatives --lr 1e-4")
    # Without -hn no negatives are asked for.
    (tmp_path / "plain").mkdir()
    _, plain = run_script(tmp_path / "plain", "passages")
    assert not any("--negatives" in call or "--hard-negatives" in call for call in plain)
