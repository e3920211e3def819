"""2-D projections of embeddings (UMAP) with a disk cache (k-means labels for colouring: ``core.metrics``).

The cache key is the SHA-256 of the matrix bytes plus every UMAP parameter, so a revisit of the
same embeddings is a file read; files are written atomically. :func:`aligned_pair` projects two embeddings of
the same texts and turns the second layout onto the first (orthogonal Procrustes with scale), so a point's
move between the two plots is a change of the embedding, not of UMAP's arbitrary rotation or mirror.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float

from core.runtime.errors import run_cli

__all__ = ["UmapSettings", "aligned_pair", "procrustes_align", "project_umap", "projection_key"]
from core.runtime.files import atomic_write
from core.runtime.paths import cache_root


@dataclass(frozen=True)
class UmapSettings:
    n_neighbors: int = 15
    min_dist: float = 0.1
    metric: str = "cosine"
    seed: int = 42

    def check(self, n_points: int) -> None:
        if n_points < 4:
            raise ValueError(f"UMAP needs at least 4 texts, got {n_points}.")
        if not self.n_neighbors >= 2:
            raise ValueError(f"n_neighbors must be >= 2, got {self.n_neighbors}.")
        if not 0.0 <= self.min_dist <= 1.0:
            raise ValueError(f"min_dist must be in [0, 1], got {self.min_dist}.")


def projection_key(vectors: np.ndarray, settings: UmapSettings) -> str:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    digest = hashlib.sha256(matrix.tobytes())
    digest.update(json.dumps({"shape": matrix.shape, **asdict(settings)}, sort_keys=True).encode())
    return digest.hexdigest()[:24]


def project_umap(
    vectors: Float[np.ndarray, "texts hidden"],
    settings: UmapSettings = UmapSettings(),
    cache_dir: str | Path | None = None,
) -> Float[np.ndarray, "texts 2"]:
    """UMAP to 2-D, served from the disk cache when the same matrix and settings were projected before."""
    settings.check(len(vectors))
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "projections"
    path = folder / f"{projection_key(vectors, settings)}.npy"
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(vectors), 2):
                return cached
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    import umap  # slow import (numba): only on a cache miss

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(settings.n_neighbors, len(vectors) - 1),
        min_dist=settings.min_dist,
        metric=settings.metric,
        random_state=settings.seed,
        n_jobs=1,  # random_state makes UMAP single-threaded anyway; say so to silence its warning
    )
    points = reducer.fit_transform(np.asarray(vectors, dtype=np.float32)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, points, allow_pickle=False)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return points


def procrustes_align(
    reference: Float[np.ndarray, "texts 2"], moving: Float[np.ndarray, "texts 2"]
) -> Float[np.ndarray, "texts 2"]:
    """``moving`` rotated (or mirrored), scaled and shifted to lie as close as possible to ``reference``.

    The least-squares similarity transform (Schoenemann's orthogonal Procrustes): row ``i`` of both is the same
    text. Invariant: a layout that already is a rotation, mirror, scaling or shift of ``reference`` lands on it.
    """
    ref = np.asarray(reference, dtype=np.float64)
    mov = np.asarray(moving, dtype=np.float64)
    if ref.shape != mov.shape:
        raise ValueError(f"layouts of {ref.shape} and {mov.shape}: align two layouts of the same texts.")
    ref_centre, mov_centre = ref.mean(axis=0), mov.mean(axis=0)
    a, b = ref - ref_centre, mov - mov_centre
    u, singular, vt = np.linalg.svd(b.T @ a)
    rotation = u @ vt
    spread = float((b**2).sum())
    scale = float(singular.sum()) / spread if spread > 0 else 1.0
    return (scale * b @ rotation + ref_centre).astype(np.float32)


def aligned_pair(
    first: Float[np.ndarray, "texts dim_a"],
    second: Float[np.ndarray, "texts dim_b"],
    settings: UmapSettings = UmapSettings(),
    cache_dir: str | Path | None = None,
) -> tuple[Float[np.ndarray, "texts 2"], Float[np.ndarray, "texts 2"]]:
    """UMAP layouts of two embeddings of the same texts (each cached as by :func:`project_umap`), the second
    Procrustes-aligned onto the first."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} and {len(second)} rows: align embeddings of the same texts.")
    reference = project_umap(first, settings, cache_dir)
    return reference, procrustes_align(reference, project_umap(second, settings, cache_dir))


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.projections``: UMAP cold and warm times for N texts of a local task (a benchmark)."""
    import argparse
    import tempfile
    import time

    from core.data import load_task, sample_items
    from core.encoding.encoder import Encoder
    from core.models.registry import DEFAULT_MODEL
    from core.runtime.device import DEVICE_HELP

    parser = argparse.ArgumentParser(prog="python -m analysis.projections", description=main.__doc__)
    parser.add_argument("--task", default="trec-coarse")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = parser.parse_args(argv)
    dataset = load_task(args.task, "test")
    texts = sample_items(dataset.texts, args.n, 42)
    started = time.perf_counter()
    vectors = Encoder(args.model, adapter=args.adapter, device=args.device).encode(texts)
    print(f"embedded {len(texts)} texts of {args.task} in {time.perf_counter() - started:.1f} s (disk cache on)")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        project_umap(vectors, cache_dir=folder)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        project_umap(vectors, cache_dir=folder)
        warm = time.perf_counter() - started
        started = time.perf_counter()
        project_umap(vectors, UmapSettings(seed=7), cache_dir=folder)
        second = time.perf_counter() - started
    print(f"UMAP of {len(texts)} x {vectors.shape[1]}: cold {cold:.1f} s (first call in the process, numba JIT "
          f"included), another seed {second:.1f} s, warm (disk cache) {warm * 1000:.0f} ms")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
