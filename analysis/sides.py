"""Base and adapter vectors of the same texts, for the side-by-side pages (cluster explorer, embed & compare).

Both sides come from one shared-trunk pass (``Encoder.encode_grid``, both variants): the decoder layers below
the adapter's lowest LoRA layer run once per batch, so the pair costs about (L + k) / L passes instead of two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from analysis.categories import sides


def embed_sides(
    encoder: Any,
    texts: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
    chunk: int = 64,
    *,
    prompt: str | None = None,
    pooling: str | None = None,
    layer: int | str | None = None,
) -> dict[str, np.ndarray]:
    """``{"base": vectors}``, plus ``"adapter"`` when the encoder has an adapter (float32, not normalised).

    With ``progress`` the texts go in chunks of ``chunk``, calling ``progress(done, total)`` after each (and once
    with 0 first), so a page can show a bar with an ETA; the vectors are the same as in one call.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}.")
    texts = list(texts)
    compared = sides(encoder.loaded.has_adapter)
    options: dict[str, Any] = {"prompt": prompt, "pooling": pooling, "layer": layer}

    def embed(part: list[str]) -> tuple[np.ndarray, ...]:
        if "adapter" in compared:
            grids = encoder.encode_grid(part, variants=(False, True), **options)
            return tuple(next(iter(grids[variant].values())) for variant in (False, True))
        return (encoder.encode(part, use_adapter=False, **options),)

    step = chunk if progress is not None else max(len(texts), 1)
    parts: list[tuple[np.ndarray, ...]] = []
    if progress is not None:
        progress(0, len(texts))
    for start in range(0, len(texts), step):
        parts.append(embed(texts[start : start + step]))
        if progress is not None:
            progress(min(start + step, len(texts)), len(texts))
    empty = np.zeros((0, encoder.dim), dtype=np.float32)
    return {side: np.concatenate([part[i] for part in parts]) if parts else empty for i, side in enumerate(compared)}
