"""A converted model folder written so transformers 4.4x reads it too, without changing what transformers 5 reads.

transformers 5 saves three things that 4.4x (e.g. llm2vec's pinned 4.44) cannot use:

- ``tokenizer_config.json`` names the class ``TokenizersBackend``, unknown to 4.x. Its old name,
  ``PreTrainedTokenizerFast`` (the class that reads ``tokenizer.json`` alone), is an alias of the same class in 5.
- ``tokenizer.json`` stores BPE merges as pairs (``["a", "b"]``), which ``tokenizers`` < 0.20 cannot parse; the old
  form is one string ``"a b"``, which every version parses. It is written only when no merged part holds a space
  (then the string form is unambiguous); otherwise the pairs are kept.
- ``config.json`` carries the RoPE base only inside ``rope_parameters``; 4.x reads ``rope_theta`` (and Gemma 3's
  ``rope_local_base_freq``) and silently falls back to its default base without them. Both keys are written
  beside ``rope_parameters``, with the same values.

Only files of a folder this process is converting are rewritten (the registry's staging folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.runtime.files import write_json

__all__ = ["LEGACY_TOKENIZER_CLASS", "legacy_rope_keys", "write_legacy_forms"]

LEGACY_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
_NEW_TOKENIZER_CLASS = "TokenizersBackend"


def legacy_rope_keys(config: dict[str, Any]) -> dict[str, float]:
    """The 4.x RoPE keys for a transformers 5 ``config.json``: ``rope_theta`` from ``rope_parameters`` (its
    ``full_attention`` entry where it is per layer type, with ``sliding_attention``'s as ``rope_local_base_freq``).
    Empty when the config has no ``rope_parameters`` with a ``rope_theta``."""
    parameters = config.get("rope_parameters")
    if not isinstance(parameters, dict):
        return {}
    if isinstance(parameters.get("rope_theta"), (int, float)):
        return {"rope_theta": float(parameters["rope_theta"])}
    keys = {}
    for layer_type, key in (("full_attention", "rope_theta"), ("sliding_attention", "rope_local_base_freq")):
        entry = parameters.get(layer_type)
        if isinstance(entry, dict) and isinstance(entry.get("rope_theta"), (int, float)):
            keys[key] = float(entry["rope_theta"])
    return keys


def write_legacy_forms(folder: str | Path) -> list[str]:
    """Rewrite ``folder``'s config and tokenizer files in the forms transformers 4.4x reads (see the module
    docstring); returns the names of the files changed. Keys already present are left as they are."""
    folder, changed = Path(folder), []
    config_path = folder / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        missing = {key: value for key, value in legacy_rope_keys(config).items() if key not in config}
        if missing:
            write_json(config_path, {**config, **missing})
            changed.append(config_path.name)
    tokenizer_config_path = folder / "tokenizer_config.json"
    if tokenizer_config_path.is_file():
        tokenizer_config = json.loads(tokenizer_config_path.read_text(encoding="utf-8"))
        if tokenizer_config.get("tokenizer_class") == _NEW_TOKENIZER_CLASS:
            write_json(tokenizer_config_path, {**tokenizer_config, "tokenizer_class": LEGACY_TOKENIZER_CLASS})
            changed.append(tokenizer_config_path.name)
    tokenizer_path = folder / "tokenizer.json"
    if tokenizer_path.is_file():
        tokenizer = json.loads(tokenizer_path.read_text(encoding="utf-8"))
        merges = (tokenizer.get("model") or {}).get("merges")
        pairs = isinstance(merges, list) and merges and all(isinstance(merge, list) for merge in merges)
        if pairs and not any(" " in part for merge in merges for part in merge):
            tokenizer["model"]["merges"] = [" ".join(merge) for merge in merges]
            write_json(tokenizer_path, tokenizer)
            changed.append(tokenizer_path.name)
    return changed
