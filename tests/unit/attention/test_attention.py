"""Attention shares, shifts and statistics on the tiny model, with a random LoRA adapter; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.attention import (
    attention_entropy,
    attention_view,
    capture_corpus,
    pooled_attention_layers,
    query_title,
    query_token_for,
    role_shares,
    share_cis,
    shift_report,
    token_bars,
)
from analysis.attention.report import AttentionReportConfig, main, run_report, sample_texts
from analysis.categories import CATEGORIES, RENORMALISED, TextAttention
from analysis.plots import report_figures
from analysis.stats import paired_stats
from core.encoding.encoder import Encoder
from core.encoding.pooling import LayerChoice
from core.encoding.setting import EmbeddingSetting
from core.models.registry import load_model
from core.runtime.errors import ConfigError, run_cli

TEXTS = [
    "The red dog runs quickly in the garden.",
    "A cat sleeps.",
    "Teachers read old books near the river, often with happy children.",
    "The woman drives a new car on the street at night!",
    "An old man walks slowly from the market with bright blue flowers.",
    "a man is driving a car",
]


def make_random_adapter(model_dir: Path, out_dir: Path, scale: float = 1.0) -> Path:
    """A LoRA with random A and B (init_lora_weights=False), so adapter outputs differ from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager")
    config = LoraConfig(
        r=4, lora_alpha=4 * scale, target_modules=["q_proj", "k_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, config).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    return make_random_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def adapter_encoder(tiny_model_dir, adapter_dir) -> Encoder:
    loaded = load_model(str(tiny_model_dir), adapter_dir)
    return Encoder(loaded, prompt="cluster", pooling="last", cache=False, precision="fp32")


@pytest.fixture(scope="module")
def captures(adapter_encoder):
    base = capture_corpus(adapter_encoder, TEXTS, use_adapter=False)
    adapter = capture_corpus(adapter_encoder, TEXTS, use_adapter=True)
    return base, adapter


def test_rows_mode_matches_full_mode_and_keeps_vectors(adapter_encoder, captures):
    base, _ = captures
    full = capture_corpus(adapter_encoder, TEXTS, use_adapter=False, mode="full", keep_maps=True)
    for row_item, full_item in zip(base.items, full.items, strict=True):
        np.testing.assert_allclose(row_item.rows, full_item.rows, atol=1e-6)
        assert full_item.maps is not None and full_item.maps.shape[-1] == full_item.maps.shape[-2]
    plain = adapter_encoder.encode(TEXTS, use_adapter=False)
    np.testing.assert_allclose(base.embeddings, plain, atol=1e-5)
    np.testing.assert_allclose(full.embeddings, plain, atol=1e-5)


def test_categories_put_the_sink_first_and_text_roles_after(captures):
    base, _ = captures
    item = base.items[-1]  # 'a man is driving a car' in the cluster prompt
    assert CATEGORIES[item.categories[0]] == "sink"  # the tiny tokenizer's BOS
    named = [CATEGORIES[c] for c in item.categories]
    assert named[item.tokens.index(" car")] == "content" and "function" in named  # 'a', 'is'
    assert CATEGORIES[item.categories[-1]] == "prompt"  # the query: ':' of the template
    assert item.rows.shape[-1] == len(item.tokens) == len(item.categories)


def test_shares_sum_to_one_raw_and_renormalised(captures):
    base, _ = captures
    raw, renorm = role_shares(base), role_shares(base, renormalise=True)
    assert raw.shape == (len(TEXTS), 3, 4, len(CATEGORIES))
    np.testing.assert_allclose(raw.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(renorm.sum(-1), 1.0, atol=1e-9)
    assert np.all(renorm[..., [CATEGORIES.index("sink"), CATEGORIES.index("special")]] == 0)
    entropy = attention_entropy(base)
    assert entropy.shape == (len(TEXTS), 3, 4) and np.all(entropy >= 0)


def test_entropy_of_a_uniform_row_is_log_of_keys():
    rows = np.full((1, 1, 4), 0.25)
    item = TextAttention(["<s>", "a", "b", ":"], np.array([0, 2, 2, 2]), rows)
    corpus = type("C", (), {"items": [item]})()
    assert attention_entropy(corpus)[0, 0, 0] == pytest.approx(np.log(4))
    assert attention_entropy(corpus, renormalise=True)[0, 0, 0] == pytest.approx(np.log(3))


def test_adapter_moves_attention_and_the_report_has_cis(captures):
    base, adapter = captures
    report = shift_report(base, adapter, n_boot=500, seed=0)
    per_layer = report["per_layer_renormalised"]
    assert set(per_layer) == set(RENORMALISED)
    content = per_layer["content"]
    assert len(content["mean"]) == 3
    for mean, low, high in zip(content["mean"], content["ci_low"], content["ci_high"], strict=True):
        assert low <= mean + 1e-9 and mean <= high + 1e-9
    assert np.abs(np.array(report["per_layer_head_focus"]["mean"])).max() > 1e-4  # the random LoRA moved attention
    assert np.array(report["per_layer_head_focus"]["mean"]).shape == (3, 4)
    top = report["top_heads"][0]
    assert {"layer", "head", "shift", "ci_low", "ci_high", "cohens_d"} <= set(top)
    assert abs(top["shift"]) == pytest.approx(np.abs(np.array(report["per_layer_head_focus"]["mean"])).max(), abs=1e-6)
    json.dumps(report)  # serialisable


def test_base_against_itself_shifts_nothing(captures):
    base, _ = captures
    report = shift_report(base, base, n_boot=200)
    assert np.all(np.array(report["per_layer_raw"]["content"]["mean"]) == 0)
    assert np.all(np.array(report["per_layer_raw"]["content"]["cohens_d"]) == 0)


def test_paired_stats_recover_a_known_effect():
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.5, 1.0, size=(2000, 2))
    stats = paired_stats(diffs, n_boot=1000, seed=1)
    assert stats.mean == pytest.approx(diffs.mean(0))
    assert np.all(stats.low < 0.5) and np.all(stats.high > 0.5)
    assert np.all(stats.high - stats.low < 0.15)  # about 2 x 1.96 / sqrt(2000)
    assert stats.cohens_d == pytest.approx([0.5, 0.5], abs=0.06)
    again = paired_stats(diffs, n_boot=1000, seed=1)
    np.testing.assert_array_equal(stats.low, again.low)
    with pytest.raises(ValueError, match="at least 2 texts"):
        paired_stats(diffs[:1])


def test_token_bars_and_range_errors(captures):
    base, adapter = captures
    bars = token_bars(base.items[-1], adapter.items[-1])
    assert bars["layer"] == 2 and len(bars["base"]) == len(bars["adapter"]) == len(bars["tokens"])
    assert sum(bars["adapter_renormalised"]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match=r"Layer 3 is out of range: use 0\.\.2 or -3\.\.-1"):
        base.items[0].weights(layer=3)
    with pytest.raises(ValueError, match=r"Head 4 is out of range: this model has 4 heads, so use 0\.\.3"):
        base.items[0].weights(head=4)


def test_eos_query_token(adapter_encoder):
    corpus = capture_corpus(adapter_encoder, TEXTS[:2], use_adapter=False, token="eos")
    item = corpus.items[0]
    assert CATEGORIES[item.categories[-1]] == "special"  # the appended EOS attends to itself
    assert len(item.tokens) == len(adapter_encoder.prepare(TEXTS[:1])[0].input_ids)


def test_sample_texts_is_seeded_and_ordered():
    texts = [f"t{i}" for i in range(100)]
    first, again = sample_texts(texts, 10, seed=3), sample_texts(texts, 10, seed=3)
    assert first == again and first == sorted(first, key=texts.index)
    assert sample_texts(texts, 500, seed=0) == texts


def _texts_file(tmp_path: Path) -> Path:
    path = tmp_path / "texts.jsonl"
    lines = [json.dumps({"text": t, "label": str(i % 2)}) for i, t in enumerate(TEXTS * 2)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cli(tiny_model_dir, tmp_path, *extra: str) -> list[str]:
    return [
        "--model", str(tiny_model_dir), "--prompt", "cluster", "--task", str(_texts_file(tmp_path)), "--n", "8",
        "--out", str(tmp_path / "report"), "--bootstrap", "200", "--bench-n", "4", "--attribution-n", "2",
        "--ig-steps", "8", "--ig-max-steps", "64", *extra,
    ]  # fmt: skip


def test_cli_writes_the_report_with_an_adapter(tiny_model_dir, adapter_dir, tmp_path, capsys):
    assert main(_cli(tiny_model_dir, tmp_path, "--adapter", str(adapter_dir))) == 0
    out = capsys.readouterr().out
    assert "texts/s" in out and "peak RSS" in out and "rows" in out and "full" in out
    report = json.loads((tmp_path / "report" / "attention_report.json").read_text())
    assert report["shift"]["n_texts"] == 8
    assert set(report["speed"]["texts_per_second"]) == {"rows", "full"}
    assert report["examples"][0]["text"] == "a man is driving a car" and "adapter" in report["examples"][0]
    assert set(report["attribution"]) == {"base", "adapter"}
    assert "layer_shift.html" in report["figures"]["html"] and "head_shift.html" in report["figures"]["html"]
    assert (tmp_path / "report" / "layer_shift.html").is_file()
    assert set(report_figures(report)) >= {"layer_shift", "head_shift", "tokens_0", "attribution_example"}


def test_cli_without_adapter_reports_base_only(tiny_model_dir, tmp_path, capsys):
    assert main(_cli(tiny_model_dir, tmp_path, "--attribution-n", "0")) == 0
    assert "no shift is available" in capsys.readouterr().out
    report = json.loads((tmp_path / "report" / "attention_report.json").read_text())
    assert report["shift"] is None and "adapter" not in report["examples"][0]
    assert "base_shares.html" in report["figures"]["html"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "5"], r"--layer 5 is out of range: use 0\.\.2 or -3\.\.-1"),
        (["--head", "9"], r"--head 9 is out of range: this model has 4 heads, so use 0\.\.3"),
        (["--max-length", "6"], "leaves no room for text within max_length=6"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tiny_model_dir, tmp_path, capsys, extra, message):
    assert run_cli(main, _cli(tiny_model_dir, tmp_path, *extra)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]  # progress log lines may come before the error
    assert err.startswith("error: ") and not any("Traceback" in line for line in lines)
    assert __import__("re").search(message, err)


def test_cli_refuses_an_adapter_for_another_base(tiny_model_dir, adapter_dir, tmp_path, capsys):
    import shutil

    foreign = tmp_path / "foreign"
    shutil.copytree(adapter_dir, foreign)
    (foreign / "embedding_lens.json").write_text(json.dumps({"base_model": "other", "base_weights_sha256": "0" * 64}))
    assert run_cli(main, _cli(tiny_model_dir, tmp_path, "--adapter", str(foreign))) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on base model 'other'" in err and "\n" not in err


def test_run_report_takes_a_config_and_refuses_a_bad_layer(tiny_model_dir, tmp_path):
    config = AttentionReportConfig(
        model=str(tiny_model_dir), setting=EmbeddingSetting(prompt="cluster"), task=str(_texts_file(tmp_path)), n=4,
        out=str(tmp_path / "r"),
        bootstrap=50, bench_n=2, attribution_n=0, examples=("a man is driving a car",),
    )  # fmt: skip
    report = run_report(config)
    assert report["settings"]["n_texts"] == 4 and report["settings"]["query_token"] == "last"
    assert [e["text"] for e in report["examples"]] == ["a man is driving a car"]
    assert (tmp_path / "r" / "attention_report.json").is_file()
    with pytest.raises(ConfigError, match=r"--layer 7 is out of range"):
        run_report(AttentionReportConfig(**{**config.__dict__, "layer": 7}))


@pytest.mark.parametrize(
    ("pooling", "token", "words"),
    [
        ("last", "last", "last token (the pooled token)"),
        ("eos", "eos", "appended EOS token (the pooled token)"),
        ("mean", "last", "last token (mean pooling reads every token"),
        ("attention", "last", "last token (its layer -1 row weights the pooling)"),
    ],
)
def test_the_title_names_the_token_shown(pooling, token, words):
    assert query_token_for(pooling) == token
    assert words in query_title(pooling)


def test_pooled_attention_layers_follow_the_layer_choice():
    assert pooled_attention_layers(LayerChoice.parse(-1), 4) == (2,)  # 3 decoder layers: the last one's output
    assert pooled_attention_layers(LayerChoice.parse("last2"), 4) == (1, 2)
    assert pooled_attention_layers(LayerChoice.parse(0), 4) == ()  # the input embeddings: no attention layer
    with pytest.raises(ConfigError, match="Bad layer 'abc'"):
        LayerChoice.parse("abc")


@pytest.mark.parametrize("pooling", ["eos", "mean"])
def test_attention_view_shows_the_query_token_of_the_pooling(adapter_encoder, pooling):
    encoder = adapter_encoder.with_setting(pooling=pooling, layer="last2")
    view = attention_view(encoder, TEXTS[-1], renormalise=True)
    expected = capture_corpus(encoder, [TEXTS[-1]], use_adapter=True, token=query_token_for(pooling)).items[0]
    assert view.title == query_title(pooling) and view.pooled_layers == (1, 2)
    assert set(view.matrices) == set(view.role_shares) == {"base", "adapter"}
    assert view.tokens == expected.tokens and len(view.categories) == len(view.tokens)
    assert (view.categories[-1] == "special") == (pooling == "eos")  # the appended EOS is the query for eos
    np.testing.assert_allclose(view.matrices["adapter"][-1], expected.weights(-1, renormalise=True), atol=1e-6)
    np.testing.assert_allclose(view.difference, view.matrices["adapter"] - view.matrices["base"])
    np.testing.assert_allclose(view.role_shares["base"].sum(1), 1.0, atol=1e-5)
    assert view.matrices["base"].shape == (3, len(view.tokens))


def test_attention_view_without_an_adapter_has_no_difference(tiny_model_dir):
    encoder = Encoder(str(tiny_model_dir), prompt="cluster", pooling="last", cache=False, precision="fp32")
    view = attention_view(encoder, TEXTS[0])
    assert set(view.matrices) == {"base"} and view.difference is None


# ----- methods: echo's first copy, token prepending's placeholder


def _method_cli(tiny_model_dir, tmp_path, *extra: str) -> list[str]:
    """``_cli`` without its ``--prompt cluster``: echo and tp bring their own template."""
    argv = _cli(tiny_model_dir, tmp_path, *extra)
    at = argv.index("--prompt")
    return argv[:at] + argv[at + 2 :]


@pytest.mark.parametrize(("method", "category"), [("plain", None), ("echo", "first_copy"), ("tp:1-2", "placeholder")])
def test_method_categories_carry_the_pooled_tokens_attention(tiny_encoder_factory, method, category):
    encoder = tiny_encoder_factory(method=method, pooling="last")
    corpus = capture_corpus(encoder, TEXTS, use_adapter=False)
    cis = share_cis(corpus, n_boot=200)
    assert set(cis) == set(CATEGORIES)
    for name in ("first_copy", "placeholder"):
        overall = cis[name]["all_layers"]
        if name == category:  # the last token reads the first copy (echo) or the placeholder (tp)
            assert overall["ci_low"] > 0 and overall["ci_low"] <= overall["mean"] <= overall["ci_high"]
            assert len(cis[name]["per_layer"]["mean"]) == corpus.items[0].rows.shape[0]
        else:  # no such token under this method
            assert overall["mean"] == 0 and overall["ci_high"] == 0
    raw = role_shares(corpus)
    assert np.allclose(raw.sum(-1), 1.0, atol=1e-5)


def test_the_report_under_echo_records_the_method_and_its_share(tiny_model_dir, tmp_path, capsys):
    assert main(_method_cli(tiny_model_dir, tmp_path, "--attribution-n", "0", "--method", "echo")) == 0
    printed = capsys.readouterr().out
    assert "echo: pooled token's share on first_copy" in printed
    report = json.loads((tmp_path / "report" / "attention_report.json").read_text())
    assert report["settings"]["method"] == "echo" and report["settings"]["prompt"].count("{text}") == 2
    share = report["method_share"]
    assert share["category"] == "first_copy" and share["base"]["mean"] > 0
    assert report["shares_ci"]["base"]["first_copy"]["all_layers"] == share["base"]


def test_the_plain_report_has_shares_with_cis_and_no_method_share(tiny_model_dir, tmp_path):
    config = AttentionReportConfig(
        model=str(tiny_model_dir), task=str(_texts_file(tmp_path)), n=4, out=str(tmp_path / "r"),
        bootstrap=50, bench_n=2, attribution_n=0, examples=("a man is driving a car",),
    )  # fmt: skip
    report = run_report(config)
    assert report["settings"]["method"] == "plain" and "method_share" not in report
    assert report["shares_ci"]["base"]["first_copy"]["all_layers"]["mean"] == 0
    assert report["shares_ci"]["base"]["content"]["all_layers"]["mean"] > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "metaeol"], "attention follows one wrapped text"),
        (["--method", "echo", "--prompt", "cluster"], "needs {text} exactly twice"),
        (["--method", "tp:1-9"], "outside this model's 3 decoder layers"),
    ],
)
def test_a_method_attention_cannot_follow_is_a_clear_error(tiny_model_dir, tmp_path, capsys, extra, message):
    assert run_cli(main, _method_cli(tiny_model_dir, tmp_path, *extra)) == 2
    assert message in capsys.readouterr().err
