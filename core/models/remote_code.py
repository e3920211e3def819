"""A model folder's own Python code (``auto_map`` in its config): refused unless the user opts in.

transformers runs such code only with ``trust_remote_code``; without it, it asks ``[y/N]`` on a terminal (and runs
the code on ``y``) or fails with a traceback. Embedding Lens asks nothing and runs nothing: it refuses, naming the
opt-in (``--trust-remote-code`` on ``core.embed``, or :data:`TRUST_REMOTE_CODE_ENV` = 1 anywhere).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.runtime.errors import ModelNotFoundError

__all__ = ["TRUST_REMOTE_CODE_ENV", "refuse_remote_code", "remote_code_trusted"]

# The explicit opt-in to run a model folder's own Python (``auto_map`` in its config): off unless a user sets it,
# e.g. through ``python -m core.embed --trust-remote-code``.
TRUST_REMOTE_CODE_ENV = "EMBEDDING_LENS_TRUST_REMOTE_CODE"


def remote_code_trusted() -> bool:
    """Whether the user opted in to running model folders' own code (:data:`TRUST_REMOTE_CODE_ENV` = 1)."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def refuse_remote_code(path: str, name: str, trusted: bool) -> None:
    """A :class:`ModelNotFoundError` if the folder ``path`` asks to run its own Python and the user did not opt in.

    transformers would otherwise ask ``[y/N]`` on a terminal (and run the code on ``y``) or fail with a traceback.
    """
    if trusted or not Path(path).is_dir():
        return
    for file in ("config.json", "tokenizer_config.json"):
        try:
            config = json.loads((Path(path) / file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(config, dict) and config.get("auto_map"):
            raise ModelNotFoundError(
                f"Model {name!r} ships its own Python code ({file} has auto_map: "
                f"{', '.join(map(str, config['auto_map']))}), which Embedding Lens does not run unless you ask: "
                f"pass --trust-remote-code (or set {TRUST_REMOTE_CODE_ENV}=1) if you trust the folder's author, "
                "or use a model whose architecture transformers ships."
            )
