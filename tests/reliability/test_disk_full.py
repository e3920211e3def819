"""No space left on the device: a 4 MB tmpfs (``small_disk``) filled to the last byte while results are on it.

A real full filesystem, not a simulation: the writes fail with ENOSPC in the kernel (sqlite's SQLITE_FULL for
the cache). Mounting needs root; elsewhere these cases are skipped. Training's checkpoints on a full disk are
in test_training.py (they compare against its reference run).
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np

from tests.reliability.cases import Case, cases
from tests.reliability.test_inputs import assert_one_line_error
from tests.reliability.test_storage import cache_entries, english_like_sentences


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with a file (returned: deleting it frees the space again)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        for block in (65536, 4096, 1):  # big writes, then the last pages a little at a time
            try:
                while handle.write(b"\0" * block):
                    pass
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    return filler


def write_texts(path, count: int, seed: int):
    path.write_text("\n".join(english_like_sentences(count, seed)) + "\n", encoding="utf-8")
    return path


@cases(
    Case(
        "disk-full-output",
        "`core.embed --output` onto a disk that is full by the time the vectors are written (an earlier output there)",
        "`error: cannot write .../v.npy: No space left on device (the disk or quota of ... is full). Free some space "
        "there (df -h ...) and run the same command again: what was written before is intact ...`, exit 2",
        "the earlier v.npy and its sidecar unchanged, no temporary file; once there is room the same command writes",
        "storage",
    )
)
def test_a_full_disk_keeps_the_earlier_output(embed, small_disk, tmp_path, case):
    output = small_disk / "v.npy"
    first = embed("--precision", "fp32", input=write_texts(tmp_path / "a.txt", 40, seed=31), output=output)
    assert first.code == 0, first.stderr
    before = {p.name: p.read_bytes() for p in small_disk.iterdir()}
    filler = fill(small_disk)
    texts = write_texts(tmp_path / "b.txt", 400, seed=32)
    full = embed("--precision", "fp32", input=texts, output=output)
    assert full.code == 2, full.stderr
    assert_one_line_error(full.stderr, rf"cannot write {output}: No space left on device .*run the same command again")
    assert {p.name: p.read_bytes() for p in small_disk.iterdir() if p != filler} == before  # no temporary file
    filler.unlink()
    again = embed("--precision", "fp32", input=texts, output=output)
    assert again.code == 0, again.stderr
    assert np.load(output).shape == (400, 32)


@cases(
    Case(
        "disk-full-cache",
        "the embedding cache on a full disk (new texts to add to it)",
        "a warning `The embedding cache ... cannot be written: the disk of ... is full (...). Free some space there "
        "to cache again; vectors cached before are kept: embedding without the cache in this process.`; `wrote ...`",
        "the vectors (written elsewhere); the cache's earlier entries, intact and readable once there is room",
        "storage",
    )
)
def test_a_full_disk_under_the_cache_does_not_stop_the_embedding(cli, tiny_model_dir, small_disk, tmp_path, case):
    env = {"EMBEDDING_LENS_HOME": str(small_disk)}
    cache = small_disk / "embeddings.sqlite"

    def embed(texts, output):
        run = cli("core.embed", "--model", tiny_model_dir, "--precision", "fp32", "--input", texts, "--output", output,
                  env=env)  # fmt: skip
        return run.wait(), run

    code, _ = embed(write_texts(tmp_path / "a.txt", 40, seed=33), tmp_path / "a.npy")
    assert code == 0 and cache_entries(cache) == 40
    filler = fill(small_disk)
    code, run = embed(write_texts(tmp_path / "b.txt", 400, seed=34), tmp_path / "b.npy")
    assert code == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert f"The embedding cache {cache} cannot be written: the disk of {small_disk} is full" in run.stderr, run.stderr
    assert np.load(tmp_path / "b.npy").shape == (400, 32)
    filler.unlink()  # sqlite needs a little room even to read a WAL database
    assert cache_entries(cache) == 40
