"""The engine on the real packaged models: agreement with sentence-transformers, precision, mteb."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer, models

from core.data import Dataset, load_task
from core.embed import main as embed_main
from core.encoding.encoder import Encoder
from core.models.registry import load_model, resolve_model_path
from core.runtime.device import cpu_has_bf16
from core.runtime.errors import run_cli

pytestmark = pytest.mark.integration


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    trec, r8 = load_task("trec-fine").texts, load_task("r8").texts
    return trec[:6] + [" ".join(text.split()[:80]) for text in r8[:6]]


@pytest.mark.parametrize(("mode", "st_mode"), [("mean", "mean"), ("last", "lasttoken")])
def test_smollm2_matches_sentence_transformers(smollm2, real_texts, mode, st_mode):
    folder = resolve_model_path("smollm2-135m")
    # Plain text in, like ours: sentence-transformers would otherwise wrap an instruct model's input
    # in its chat template.
    transformer = models.Transformer(
        folder,
        max_seq_length=512,
        modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
        module_output_name="token_embeddings",
    )
    reference = SentenceTransformer(
        modules=[transformer, models.Pooling(transformer.get_embedding_dimension(), pooling_mode=st_mode)],
        device="cpu",
    ).encode(real_texts, batch_size=4, convert_to_numpy=True)
    ours = Encoder(smollm2, prompt="none", pooling=mode, precision="fp32", cache=False).encode(real_texts)
    assert cosine(ours, reference).min() >= 0.99999


def test_bf16_path_stays_close_to_fp32(smollm2, real_texts):
    # Runs on any CPU (emulated where it lacks bf16 units, slowly: keep the texts few).
    texts = real_texts[:4]
    fp32 = Encoder(smollm2, pooling="mean", precision="fp32", cache=False).encode(texts)
    bf16 = Encoder(smollm2, pooling="mean", precision="bf16", cache=False).encode(texts)
    assert cosine(fp32, bf16).min() >= 0.999


def test_auto_precision_follows_the_cpu(smollm2):
    assert Encoder(smollm2, cache=False).precision == ("bf16" if cpu_has_bf16() else "fp32")


def test_minilm_baseline_matches_its_own_sentence_transformer(real_texts):
    reference = SentenceTransformer(resolve_model_path("minilm"), device="cpu").encode(real_texts)
    ours = Encoder("minilm", pooling="mean", precision="fp32", cache=False).encode(real_texts, normalize=True)
    assert cosine(ours, reference).min() >= 0.99999
    with pytest.raises(ValueError, match="bidirectional encoder"):
        Encoder("minilm", pooling="last", cache=False)


def test_gemma3_loads_and_embeds():
    encoder = Encoder("gemma3-270m", prompt="eol", pooling="last", precision="fp32", cache=False)
    vectors = encoder.encode(["a man is driving a car", "a woman rides a bicycle"])
    assert vectors.shape == (2, 640) and np.isfinite(vectors).all()


def test_mteb_evaluate_accepts_the_encoder(smollm2):
    import mteb

    from analysis.clustering.mteb_encoder import MtebEncoder
    from analysis.clustering.mteb_tasks import local_clustering_task

    trec = load_task("trec-coarse")
    small = Dataset(trec.name, trec.texts[:120], trec.labels[:120], trec.sha256, trec.source)
    encoder = Encoder(smollm2, prompt="cluster", pooling="last", precision="fp32", cache=False)
    result = mteb.evaluate(MtebEncoder(encoder), local_clustering_task(small), cache=None)
    score = result.task_results[0].get_score()
    assert 0.0 < score < 1.0


def test_embed_cli_writes_matrix_and_settings(tmp_path, capsys):
    source = tmp_path / "texts.jsonl"
    source.write_text('{"text": "a man is driving a car"}\n{"text": "stocks fell on monday"}\n')
    output = tmp_path / "out.npy"
    code = embed_main(["--prompt", "eol", "--pooling", "last", "--input", str(source), "--output", str(output)])
    assert code == 0
    vectors = np.load(output)
    assert vectors.shape == (2, 576) and vectors.dtype == np.float32
    assert '"mode": "last"' in (tmp_path / "out.json").read_text()
    assert run_cli(embed_main, ["--prompt", "no placeholder", "--input", str(source), "--output", str(output)]) == 2
    assert "placeholder" in capsys.readouterr().err
