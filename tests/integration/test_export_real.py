"""Exports of the real model and the shipped adapter, loaded in a process that knows only sentence-transformers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.encoding.encoder import Encoder
from core.export.folder import export
from core.models.adapters import list_adapters, read_adapter
from core.models.registry import DEFAULT_MODEL, resolve_model_path, upgrade_adapter
from core.runtime.paths import REPO_ROOT

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
    local_average = read_adapter(ADAPTER).card["local_track"]["rows"][0]["average"]  # the adapter's own row
    assert f"{local_average:.4f}" in card and "Training recipe" in card and "trust_remote_code=True" in card


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


@pytest.mark.parametrize("adapter", list_adapters(), ids=lambda path: path.name)
def test_every_shipped_adapter_loads_with_plain_peft_on_a_bare_automodel(adapter, shipped_export, tmp_path):
    """``PeftModel.from_pretrained(AutoModel.from_pretrained(base), adapter)`` gives the workbench's last hidden
    states (fp32), with every saved tensor in the model; so does the exported ``adapter/`` on the exported folder."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from transformers import AutoModel

    info = read_adapter(adapter)
    encoder = Encoder(info.base_model, adapter, precision="fp32", cache=False)
    batch = encoder.collate(encoder.prepare(TEXTS[:3]))
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids")}
    exported = shipped_export if adapter == ADAPTER else tmp_path / "exported"
    if adapter != ADAPTER:
        export(str(adapter), exported)
    with torch.inference_mode():
        expected = encoder.forward(batch).hidden[encoder.num_hidden_states - 1]
        for model_dir, adapter_dir in (
            (resolve_model_path(info.base_model), adapter),
            (exported, exported / "adapter"),
        ):
            # The attention kernel the workbench ran (SDPA unless it captures attention): eager vs sdpa alone
            # moved these hidden states by up to 3.6e-5 (measured on the shipped adapter).
            attention = encoder.loaded.model.config._attn_implementation
            model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention)
            bare = PeftModel.from_pretrained(model, adapter_dir)
            saved = load_file(Path(adapter_dir) / "adapter_model.safetensors")
            assert get_peft_model_state_dict(bare).keys() == saved.keys()
            got = bare.eval()(**inputs).last_hidden_state
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_the_shipped_adapter_in_the_old_causal_format_loads_and_upgrades_to_the_shipped_files(tmp_path):
    """Adapters saved on the causal LM (core.train before) still load, with the very vectors of the backbone format,
    and ``upgrade_adapter`` turns one into the shipped files: the same tensors and config."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    info = read_adapter(ADAPTER)
    config = LoraConfig.from_pretrained(str(ADAPTER))
    config.layers_pattern = None  # on the causal LM, peft finds 'model.layers.N' without it
    causal = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model_path(DEFAULT_MODEL)), config)
    shipped = load_file(ADAPTER / "adapter_model.safetensors")
    loaded = set_peft_model_state_dict(
        causal, {name.replace("base_model.model.", "base_model.model.model.", 1): t for name, t in shipped.items()}
    )
    assert not loaded.unexpected_keys
    old = tmp_path / "old-format"
    causal.save_pretrained(old)
    shutil.copy(ADAPTER / "embedding_lens.json", old)
    assert all(
        name.startswith("base_model.model.model.layers.") for name in load_file(old / "adapter_model.safetensors")
    )

    for pooling in ("last", "mean"):
        np.testing.assert_array_equal(
            Encoder(DEFAULT_MODEL, old, pooling=pooling, precision="fp32", cache=False).encode(TEXTS),
            Encoder(DEFAULT_MODEL, ADAPTER, pooling=pooling, precision="fp32", cache=False).encode(TEXTS),
        )
    assert upgrade_adapter(old) is True
    upgraded = load_file(old / "adapter_model.safetensors")
    assert upgraded.keys() == shipped.keys() and all(torch.equal(upgraded[k], shipped[k]) for k in shipped)
    ignore = ("base_model_name_or_path", "peft_version")

    def meaning(config: dict) -> dict:  # peft writes target_modules from a set: the order is arbitrary
        return {k: sorted(v) if k == "target_modules" else v for k, v in config.items() if k not in ignore}

    assert meaning(read_adapter(old).config) == meaning(info.config)
