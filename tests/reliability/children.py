"""What the reliability cases need beyond the tiny model folder: a tiny GGUF "package", and the setup a forked
CLI run calls to see it as a packaged model (``runner.start_cli(..., setup=...)``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PACKAGE = "tiny_gguf_package"
MEMBER = "tiny.gguf"
PACKAGED_NAME = "tiny-gguf"

# Hugging Face Llama tensor names -> GGUF names (what transformers' GGUF loader maps back).
_GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
_GLOBAL["lm_head.weight"] = "output.weight"
_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_tiny_gguf(model_dir: Path, root: Path) -> Path:
    """``root/tiny_gguf_package/`` holding the tiny Llama of tests/conftest.py as an F32 GGUF (a package as pip would
    install it; its weights need not equal the folder's, only convert the same way every time)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = {**tokenizer["model"]["vocab"], **{t["content"]: t["id"] for t in tokenizer["added_tokens"]}}
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    package = root / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    writer = gguf.GGUFWriter(str(package / MEMBER), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"])
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i < 3 else 1 for i in range(len(tokens))])  # pad, bos, eos are control tokens
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    for name, array in load_file(str(model_dir / "model.safetensors")).items():
        parts = name.split(".")
        target = _GLOBAL.get(name) or f"blk.{parts[2]}.{_LAYER['.'.join(parts[3:-1])]}.weight"
        writer.add_tensor(target, array.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return package


def register_tiny_gguf(root: str) -> None:
    """In a forked CLI run: ``tiny-gguf`` is a packaged model whose package lives under ``root``."""
    from core.models.registry import PACKAGED, PackagedModel

    sys.path.insert(0, root)
    PACKAGED[PACKAGED_NAME] = PackagedModel(PACKAGE, "gguf", MEMBER, "the tiny test Llama as GGUF", "(test package)")
