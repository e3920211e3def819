"""Device and precision resolution, and the encoder on an explicit device (this machine: CPU only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.runtime.device import available_devices, resolve_device, resolve_precision
from core.runtime.errors import ConfigError


def test_auto_picks_what_is_there():
    device = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "mps" if "mps" in available_devices() else "cpu"
    assert device.type == expected
    assert resolve_device(None) == device


def test_cpu_by_name_and_by_object():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this test needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_absent_cuda_names_the_devices_present(name):
    with pytest.raises(ConfigError, match=r"not available on this machine; it has: cpu"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "tpu:0", "cuda:x", ""])
def test_unknown_name_lists_choices_and_devices(name):
    with pytest.raises(ConfigError, match=r"choose auto, cpu, cuda, cuda:N or mps \(this machine has: cpu"):
        resolve_device(name)


def test_precision_per_device(monkeypatch):
    import core.runtime.device as device_module

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("fp16", cpu) == "fp16"
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    # A GPU without bf16 gets fp16 (the encoder then checks it against fp32); mps has no bf16 autocast here.
    assert resolve_precision("auto", torch.device("mps")) == "fp16"
    with pytest.raises(ConfigError, match="choose one of: auto, fp32, bf16, fp16"):
        resolve_precision("int8", cpu)  # type: ignore[arg-type]


def test_encoder_on_explicit_cpu_matches_default(tiny_loaded, tiny_encoder, sample_texts):
    from core.encoding.encoder import Encoder

    by_name = Encoder(tiny_loaded, precision="fp32", cache=False, device="cpu")
    by_object = Encoder(tiny_loaded, precision="fp32", cache=False, device=torch.device("cpu"))
    assert by_name.device == by_object.device == torch.device("cpu")
    reference = tiny_encoder.encode(sample_texts)
    np.testing.assert_array_equal(by_name.encode(sample_texts), reference)
    np.testing.assert_array_equal(by_object.encode(sample_texts), reference)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this test needs a machine without CUDA")
def test_encoder_on_absent_device_fails_before_loading(tiny_model_dir):
    from core.encoding.encoder import Encoder

    with pytest.raises(ConfigError, match="'cuda' is not available on this machine; it has: cpu"):
        Encoder(str(tiny_model_dir), cache=False, device="cuda")


def test_fp16_probe_measures_agreement(tiny_encoder):
    """The check behind precision auto on a GPU without bf16, run here with CPU fp16 autocast."""
    cosine = tiny_encoder.precision_agreement("fp16", ["The red dog runs.", "A cat sleeps on the mat."])
    assert 0.99 < cosine <= 1.0 + 1e-6
    assert tiny_encoder.precision_agreement("fp32", ["The red dog runs."]) == pytest.approx(1.0, abs=1e-6)


def test_cache_key_of_cpu_vectors_has_no_device(tiny_encoder):
    settings = tiny_encoder.settings(tiny_encoder.prompt, tiny_encoder.plan().poolings[0], False)
    assert "device" not in settings


@pytest.mark.parametrize(("threshold", "expected"), [(0.99, "fp16"), (1.01, "fp32")])
def test_auto_fp16_is_kept_only_where_the_probe_agrees(tiny_loaded, monkeypatch, threshold, expected):
    """Precision auto on a GPU without bf16 resolves to fp16, then the probe decides (simulated on the CPU)."""
    import core.encoding.encoder as encoder_module
    from core.encoding.encoder import Encoder

    monkeypatch.setattr(encoder_module, "resolve_precision", lambda precision, device: "fp16")
    monkeypatch.setattr(encoder_module, "FP16_MIN_COSINE", threshold)
    tiny_loaded.fp16_verdicts.clear()
    try:
        assert Encoder(tiny_loaded, precision="auto", cache=False).precision == expected
    finally:
        tiny_loaded.fp16_verdicts.clear()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this test needs a machine without CUDA")
@pytest.mark.parametrize("cli", ["embed", "train", "clustering", "attention", "faithfulness"])
def test_every_cli_refuses_an_absent_device_in_one_line(cli, tiny_model_dir, tmp_path, capsys):
    """``--device cuda`` here: exit 2 and ``error: Device 'cuda' is not available ...; it has: cpu``."""
    from core.runtime.errors import run_cli

    model = str(tiny_model_dir)
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\n" + "".join(f"text number {i},{i % 2}\n" for i in range(6)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(f'{{"anchor": "a{i} b", "positive": "c{i} d"}}\n' for i in range(8)))
    if cli == "embed":
        from core.embed import main

        argv = ["--model", model, "--input", str(texts), "--output", str(tmp_path / "v.npy")]
    elif cli == "train":
        from core.training.cli import main

        argv = ["--base-model", model, "--pairs", str(pairs), "--out", str(tmp_path / "adapter"), "--batch-size", "4"]
    elif cli == "clustering":
        from analysis.clustering.__main__ import main

        argv = ["--models", model, "--tasks", str(texts), "--out", str(tmp_path / "grid"), "--no-baseline", "--quiet"]
    elif cli == "attention":
        from analysis.attention.report import main

        argv = ["--model", model, "--task", str(texts), "--out", str(tmp_path / "report")]
    else:
        from analysis.faithfulness.__main__ import main

        argv = ["--model", model, "--tasks", "trec-fine", "--out", str(tmp_path / "faithfulness")]
    assert run_cli(main, [*argv, "--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert "error: Device 'cuda' is not available on this machine; it has: cpu" in error, error
    assert "Traceback" not in error
