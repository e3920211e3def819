"""Exports of the real model and the shipped adapter, loaded in a process that knows only sentence-transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.encoder import Encoder
from core.export import export
from core.models import DEFAULT_MODEL, resolve_model_path
from core.paths import REPO_ROOT

pytestmark = pytest.mark.integration

ADAPTER = REPO_ROOT / "adapters" / "smollm2-135m-embed"
# An 8-token TREC question: sentence-transformers 6.2 would wrap it in SmolLM2's chat template (34 tokens).
QUESTION = "What is the capital of France?"
TEXTS = [
    QUESTION,
    "How many people live in Tokyo?",
    "The central bank raised interest rates again, and the stock market fell sharply on Monday.",
    " ".join(["The committee reviewed the proposal in detail and discussed its costs at length."] * 10),
]

# Runs in a fresh interpreter, cwd outside the repository, PYTHONPATH without it: only sentence-transformers.
LOADER = """
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
folder, trust, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
texts = json.loads(sys.stdin.read())
assert not any(name == "core" or name.startswith("core.") for name in sys.modules), "the repository leaked in"
model = SentenceTransformer(folder, device="cpu", trust_remote_code=trust, local_files_only=True)
ids = model.preprocess([texts[0]])["input_ids"][0].tolist()
np.save(out, model.encode(texts, convert_to_numpy=True))
print(json.dumps({"question_ids": ids, "modalities": sorted(getattr(model[0], "modality_config", {"text": 0}))}))
"""


def load_elsewhere(folder: Path, tmp_path: Path, trust_remote_code: bool) -> tuple[np.ndarray, dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf-modules"))
    out = tmp_path / "vectors.npy"
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, str(folder), "1" if trust_remote_code else "0", str(out)],
        input=json.dumps(TEXTS),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out), json.loads(result.stdout.strip().splitlines()[-1])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory) -> Path:
    """The shipped adapter exported once (with its peft adapter kept) for every test of this module."""
    out = tmp_path_factory.mktemp("export") / "smollm2-135m-embed-st"
    report = export(str(ADAPTER), out)
    assert report.kind == "custom" and (out / "adapter" / "adapter_model.safetensors").is_file()
    return out


def test_shipped_adapter_export_reproduces_the_workbench(shipped_export, tmp_path):
    out = shipped_export
    vectors, seen = load_elsewhere(out, tmp_path, trust_remote_code=True)
    encoder = Encoder(DEFAULT_MODEL, ADAPTER, precision="fp32", cache=False)
    reference = encoder.encode(TEXTS)
    assert cosines(vectors, reference).min() >= 0.99999
    # The exact tokens the workbench runs (PromptEOL wrap + EOS), not a chat-templated sequence.
    assert seen["question_ids"] == list(encoder.prepare([QUESTION])[0].input_ids)
    card = (out / "README.md").read_text()
    assert "0.42" in card and "Training recipe" in card and "trust_remote_code=True" in card


def test_stock_export_keeps_the_chat_template_off(tmp_path):
    out = tmp_path / "smollm2-mean"
    report = export(DEFAULT_MODEL, out, prompt="none", pooling="mean", max_length=64)
    assert report.kind == "stock"
    vectors, seen = load_elsewhere(out, tmp_path, trust_remote_code=False)
    encoder = Encoder(DEFAULT_MODEL, prompt="none", pooling="mean", max_length=64, precision="fp32", cache=False)
    assert seen["modalities"] == ["text"]
    question_ids = list(encoder.prepare([QUESTION])[0].input_ids)
    assert seen["question_ids"] == question_ids[:-1]  # the workbench's appended EOS, which mean pooling skips
    assert len(seen["question_ids"]) < 12  # 34 with the chat template
    assert cosines(vectors, encoder.encode(TEXTS)).min() >= 0.99999


def test_shipped_adapter_loads_with_plain_peft(shipped_export):
    """Plain peft gives the workbench's last hidden states: the shipped adapter on the causal LM, the exported
    ``adapter/`` on ``AutoModel``."""
    from peft import PeftModel
    from transformers import AutoModel, AutoModelForCausalLM

    base = resolve_model_path(DEFAULT_MODEL)
    encoder = Encoder(DEFAULT_MODEL, ADAPTER, precision="fp32", cache=False)
    batch = encoder.collate(encoder.prepare(TEXTS[:3]))
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    with torch.inference_mode():
        expected = encoder.forward(batch).hidden[encoder.num_hidden_states - 1]
        causal = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), ADAPTER).eval()
        got = causal.get_base_model().model(**inputs).last_hidden_state
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        out = shipped_export
        bare = PeftModel.from_pretrained(AutoModel.from_pretrained(out), out / "adapter").eval()
        torch.testing.assert_close(bare(**inputs).last_hidden_state, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.xfail(
    strict=True, reason="peft 0.21: layers_to_transform needs a dot before 'layers.N', absent on AutoModel"
)
def test_shipped_adapter_on_bare_automodel_needs_the_exported_copy():
    from peft import PeftModel
    from transformers import AutoModel

    PeftModel.from_pretrained(AutoModel.from_pretrained(resolve_model_path(DEFAULT_MODEL)), ADAPTER)
