from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.faithfulness import report as faithfulness
from analysis.faithfulness.config import METHODS, FaithfulnessConfig
from analysis.faithfulness.perturbation import content_text, variants
from analysis.faithfulness.rankers import RANKERS, gradient_x_input_scores, random_order, register, rollout
from analysis.faithfulness.records import append_records, read_records
from analysis.faithfulness.report import run_report, text_curves
from analysis.faithfulness.statistics import aopc
from core.encoding.batching import without_appended_eos
from core.encoding.encoder import Encoder
from core.encoding.setting import EmbeddingSetting
from core.models.adapters import ADAPTER_METADATA
from core.models.registry import load_model
from core.runtime.errors import ConfigError

SAMPLE = [
    ("toy:0", "The red dog runs quickly in the garden."),
    ("toy:1", "An old man walks slowly from the market with bright blue flowers."),
    ("toy:2", "The woman drives a new car on the street at night!"),
    ("toy:3", "The city"),
    ("toy:4", "in the"),  # only stopwords (as the tiny tokenizer splits them): skipped and counted
    ("toy:5", "Teachers read old books near the river."),
]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir, tiny_adapter_dir) -> Encoder:
    loaded = load_model(str(tiny_model_dir), tiny_adapter_dir)
    return Encoder(loaded, prompt="eol", pooling="last", cache=False, precision="fp32")


def config(tmp_path: Path, **overrides) -> FaithfulnessConfig:
    values = dict(k=3, random_seeds=2, ig_steps=4, chunk=2, bootstrap=200, png=False, out=str(tmp_path / "faith"))
    values.update(overrides)
    return FaithfulnessConfig(**values)


def test_deletion_removes_text_tokens_and_keeps_the_template(encoder):
    text = content_text(encoder, "The red dog runs quickly in the garden.")
    assert text.tokens and all(token.strip() for token in text.tokens)
    deletion, insertion = variants(text, list(range(len(text.positions))), 2)
    for variant in deletion + insertion:
        wrapped = encoder.prompt.wrap(variant).string
        assert wrapped.startswith(encoder.prompt.prefix) and wrapped.endswith(encoder.prompt.suffix)
    removed = text.tokens[0].strip()
    assert removed in text.text and removed not in deletion[0]
    assert "the" in deletion[-1].lower()  # function words stay
    assert insertion[-1] == text.without(list(range(2, len(text.positions))))


def test_aopc_arithmetic_on_a_hand_made_curve():
    assert aopc([0.0, 0.2, 0.4, 0.6], "deletion") == pytest.approx(0.4)
    assert aopc([0.6, 0.3, 0.1], "insertion") == pytest.approx((0.3 + 0.5) / 2)
    with pytest.raises(ConfigError):
        aopc([0.1], "deletion")


def test_random_floor_is_seeded():
    first = random_order(10, 0, "toy:0", 0)
    assert first == random_order(10, 0, "toy:0", 0)
    assert sorted(first) == list(range(10))
    assert first != random_order(10, 0, "toy:0", 1) or first != random_order(10, 1, "toy:0", 0)


def test_rollout_of_identity_attention_stays_on_the_query():
    maps = np.broadcast_to(np.eye(4), (2, 3, 4, 4))
    np.testing.assert_allclose(rollout(maps, 2), [0, 0, 1, 0])
    uniform = np.tril(np.ones((3, 3)))
    uniform = np.broadcast_to(uniform / uniform.sum(-1, keepdims=True), (1, 1, 3, 3))
    np.testing.assert_allclose(rollout(uniform, 2), [1 / 6, 1 / 6, 2 / 3])


def test_report_measures_every_method_base_and_adapter(encoder, tmp_path):
    report = run_report(config(tmp_path), encoder, SAMPLE)
    assert report["n_texts"] == 5 and report["n_skipped_no_content"] == 1 and report["skipped"] == ["toy:4"]
    assert report["n_truncated"] >= 1  # "The city" has one content token, fewer than K
    for label in ("base", "adapter"):
        methods = report[label]["methods"]
        assert set(methods) == set(METHODS)
        for entry in methods.values():
            d = entry["aopc_deletion"]
            assert d["ci_low"] <= d["mean"] <= d["ci_high"]
            assert entry["curves"]["deletion"]["mean"][0] == 0.0
            assert entry["curves"]["deletion"]["n"][1] == 5
        spread = methods["random"]["random_spread"]
        assert len(spread["aopc_deletion_per_draw"]) == 2 and spread["sd_between_draws"] >= 0
        assert spread["sd_over_texts"] > 0
        assert report[label]["most_faithful"]["deletion"]["method"] in METHODS
    assert set(report["adapter_minus_base"]) == set(METHODS)
    assert report["speed"]["settings"] == ["base", "adapter"]
    assert set(report["speed"]["texts_per_second"]) == set(METHODS)
    speed = report["speed"]
    assert 0 < speed["sample_encode_seconds"] < speed["total_seconds"] and speed["total_in_sample_encodes"] > 1
    convergence = report["adapter"]["integrated_gradients_convergence"]
    assert convergence["tolerance"] == 0.05 and sum(convergence["steps"]["counts"].values()) == 5
    assert 4 <= convergence["steps"]["q50"] <= convergence["steps"]["max"] <= 128
    assert convergence["relative_delta"]["q50"] <= convergence["relative_delta"]["max"]
    assert (tmp_path / "faith" / "report.json").is_file()
    assert "deletion_base.html" in report["figures"]["html"]


def test_integrated_gradients_run_on_the_first_texts_of_each_task_only(encoder, tmp_path):
    sample = [*SAMPLE, ("other:0", "Farmers sell fresh apples at the market."), ("other:1", "Old ships sail far.")]
    assert faithfulness.ig_subsample([key for key, _ in sample], 2) == {"toy:0", "toy:1", "other:0", "other:1"}
    assert faithfulness.ig_subsample([key for key, _ in sample], 0) is None  # 0: every text
    report = run_report(config(tmp_path, ig_texts=2), encoder, sample)
    records = [json.loads(line) for line in (tmp_path / "faith" / "records.jsonl").read_text().splitlines()]
    with_ig = {r["key"] for r in records if "integrated_gradients" in r["methods"]}
    assert with_ig == {"toy:0", "toy:1", "other:0", "other:1"}  # "toy:4" has no content tokens, still one of two
    assert all(("ig_steps" in r) == (r["key"] in with_ig) for r in records)
    for label in ("base", "adapter"):
        methods = report[label]["methods"]
        assert methods["integrated_gradients"]["n_texts"] == 4 and methods["rollout"]["n_texts"] == 7
        pair = report[label]["paired_differences"]["deletion"]
        assert pair["integrated_gradients - gradient_x_input"]["n"] == 4 and pair["rollout - random"]["n"] == 7
    assert report["adapter_minus_base"]["integrated_gradients"]["deletion"]["n"] == 4
    # Each method's speed is over the texts it ran on: IG's over its four, not all seven.
    measured = report["speed"]["texts_measured_per_method"]
    assert measured["integrated_gradients"] == 4 and measured["rollout"] == 7 == report["speed"]["texts_measured"]
    # Means over 4 and over 7 texts do not compare: the verdict ranks the methods that ran on every text.
    for label in ("base", "adapter"):
        for verdict in report[label]["most_faithful"].values():
            assert verdict["not_ranked"] == ["integrated_gradients"]
            assert "integrated_gradients" not in (verdict["method"], verdict["runner_up"])
    with pytest.raises(ConfigError, match="ig-texts"):
        run_report(config(tmp_path, ig_texts=-1), encoder, sample)


def test_killed_report_resumes_from_its_records(encoder, tmp_path, monkeypatch):
    settings = config(tmp_path, methods=("attention_last", "gradient_x_input", "random"))
    calls = {"n": 0}
    original = faithfulness.append_records

    def append_then_die(path, records):
        original(path, records)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(faithfulness, "append_records", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_report(settings, encoder, SAMPLE)
    monkeypatch.setattr(faithfulness, "append_records", original)
    records = (tmp_path / "faith" / "records.jsonl").read_text().splitlines()
    assert len(records) == 8  # two chunks of two texts, base and adapter
    with (tmp_path / "faith" / "records.jsonl").open("a") as handle:
        handle.write('{"config": "cut short')  # a line cut by the kill
    resumed = run_report(settings, encoder, SAMPLE)
    assert resumed["speed"]["texts_measured"] == 1  # five texts have content tokens, four were measured
    # The speed covers every text, from the records' own timings, not only the one this process measured.
    assert resumed["speed"]["texts_measured_per_method"]["gradient_x_input"] == 5
    fresh = run_report(replace(settings, out=str(tmp_path / "fresh")), encoder, SAMPLE)
    for label in ("base", "adapter"):
        assert resumed[label]["methods"] == fresh[label]["methods"]
    other = json.loads(records[0])["config"]
    assert other == settings.digest() and replace(settings, k=2).digest() != other


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"methods": ("attention_last", "shap")}, "Unknown method"),
        ({"k": 0}, "K must be at least 1"),
        ({"random_seeds": 0}, "random-seeds"),
        ({"ig_steps": 32, "ig_max_steps": 16}, "ig-max-steps"),
    ],
)
def test_bad_settings_are_refused(encoder, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_report(config(tmp_path, **overrides), encoder, SAMPLE)


def test_only_stopword_texts_are_refused(encoder, tmp_path):
    with pytest.raises(ConfigError, match="content tokens"):
        run_report(config(tmp_path), encoder, [("toy:0", "in the"), ("toy:1", "in the")])


def test_gradient_x_input_is_batch_independent(encoder):
    texts = [content_text(encoder, t) for _, t in SAMPLE[:3]]
    together = gradient_x_input_scores(encoder, texts, use_adapter=True)
    alone = gradient_x_input_scores(encoder, texts[1:2], use_adapter=True)
    torch.testing.assert_close(torch.tensor(together[1]), torch.tensor(alone[0]), atol=1e-5, rtol=1e-4)


def test_gradient_x_input_leaves_out_an_eos_its_pooling_does_not_read(encoder, monkeypatch):
    texts = [content_text(encoder, t) for _, t in SAMPLE[:2]]
    assert all(without_appended_eos(t.item) != t.item for t in texts)  # the fixture's texts end in an appended EOS
    run = gradient_x_input_scores(encoder, texts, use_adapter=True)
    monkeypatch.setattr(type(encoder), "runnable", staticmethod(lambda items, plan: items))  # the EOS run as well
    with_eos = gradient_x_input_scores(encoder, texts, use_adapter=True)
    for text, short, full in zip(texts, run, with_eos, strict=True):
        assert len(full) == len(text.item.input_ids) == len(short) + 1
        assert full[-1] == 0.0  # nothing before it depends on it
        torch.testing.assert_close(torch.tensor(short), torch.tensor(full[:-1]), atol=1e-5, rtol=1e-4)


def test_one_texts_curves_for_the_page(encoder):
    from analysis.plots import text_curves_figure

    curves = text_curves(encoder, SAMPLE[0][1], SAMPLE[1][1], k=2, methods=("attention_last", "random"))
    assert set(curves) == {"base", "adapter"}
    record = curves["adapter"]
    assert record["methods"]["attention_last"]["curves"]["deletion"][0] == 0.0
    assert len(record["methods"]["random"]["curves"]["deletion"]) == 3
    assert len(text_curves_figure(record, "t").data) == 4
    with pytest.raises(ConfigError, match="no content tokens"):
        text_curves(encoder, "in the", SAMPLE[1][1])


def test_a_record_line_cut_short_by_a_kill_spoils_no_later_record(tmp_path):
    path = tmp_path / "records.jsonl"
    append_records(path, [{"config": "c", "key": "t:0", "side": "base"}])
    with path.open("a") as handle:
        handle.write('{"config": "c", "key": "t:1", "si')  # a kill mid-line
    append_records(path, [{"config": "c", "key": "t:2", "side": "base"}])
    assert sorted(key for key, _ in read_records(path, "c")) == ["t:0", "t:2"]


def test_every_method_is_one_registered_ranker():
    assert tuple(RANKERS) == METHODS
    assert all(ranker.name == name for name, ranker in RANKERS.items())
    with pytest.raises(ValueError, match="registered twice"):
        register(type(RANKERS["random"]))


def test_the_report_explains_a_plain_prompt_wrapped_text_only():
    with pytest.raises(ConfigError, match="plain method"):
        FaithfulnessConfig(embedding=EmbeddingSetting(method="echo"))
    assert FaithfulnessConfig().embedding == EmbeddingSetting(max_length=128)


def test_cli_resolves_the_setting_from_the_adapter_and_the_peak_from_the_attention_report(tmp_path, monkeypatch):
    from analysis.faithfulness import __main__ as cli

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / ADAPTER_METADATA).write_text(json.dumps({"prompt": "cluster", "pooling": "mean", "max_length": 64}))
    report = tmp_path / "attention_report.json"
    report.write_text(json.dumps({"settings": {"model": "m"}, "shift": {"top_layers": [{"layer": 7}, {"layer": 3}]}}))
    monkeypatch.setattr(cli, "ATTENTION_REPORT", report)

    def parsed(*argv: str) -> FaithfulnessConfig:
        return cli.config_from_args(cli.build_parser().parse_args(["--model", "m", *argv]))

    config = parsed("--adapter", str(adapter), "--tasks", "a", "b", "--methods", "random,rollout")
    # The adapter's prompt and pooling; this report's own length, not the adapter's trained one.
    assert config.embedding == EmbeddingSetting(prompt="cluster", pooling="mean", max_length=128)
    assert config.tasks == ("a", "b") and config.methods == ("random", "rollout")
    assert config.peak_layer == 7
    assert parsed("--peak-layer", "3").peak_layer == 3
    assert parsed("--model", "other").peak_layer is None  # another model's report: the last layer
    assert parsed("--prompt", "eol-noquote", "--max-length", "32").embedding == EmbeddingSetting(max_length=32)
    assert "results/attention/attention_report.json" in " ".join(cli.build_parser().format_help().split())
    report.write_text("{not json")
    assert parsed().peak_layer is None


def test_the_cli_writes_the_report_the_library_writes(tiny_model_dir, tmp_path):
    from analysis.faithfulness.__main__ import main

    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\n" + "".join(f'"{text}",{i % 2}\n' for i, (_, text) in enumerate(SAMPLE)))
    options = dict(k=2, methods=("attention_peak", "rollout", "random"), random_seeds=2, chunk=2, bootstrap=50)
    argv = ["--model", str(tiny_model_dir), "--tasks", str(texts), "--n", "6", "--k", "2", "--methods",
            "attention_peak", "rollout", "random", "--random-seeds", "2", "--chunk", "2", "--bootstrap", "50",
            "--peak-layer", "1", "--prompt", "cluster", "--no-png", "--out", str(tmp_path / "cli")]  # fmt: skip
    assert main(argv) == 0
    library = FaithfulnessConfig(
        model=str(tiny_model_dir), embedding=EmbeddingSetting(prompt="cluster", max_length=128), tasks=(str(texts),),
        n=6, peak_layer=1, png=False, out=str(tmp_path / "library"), **options,
    )  # fmt: skip
    run_report(library)
    written = [json.loads((tmp_path / side / "report.json").read_text()) for side in ("cli", "library")]
    for report in written:
        assert report["speed"]["texts_measured"] == 5
        del report["speed"]
    assert written[0] == written[1]
    assert written[0]["settings"]["config_hash"] == library.digest()
