"""Each method against its reference computation, rebuilt here with plain transformers calls on the tiny model.

The references (PromptEOL: kongds/scaling_sentemb; token prepending: fuyuchenIfyw/token_prepending; MetaEOL:
Yibin-Lei/MetaEOL; echo: jakespringer/echo-embeddings) run the causal LM on the prompt-wrapped text, one
text at a time here (no padding), and read the final normed hidden state:

- PromptEOL, its ``cot`` and ``knowledge`` variants: the last token of ``... in one word:"``.
- Token prepending: a placeholder token before the quoted text; before each decoder layer ``start .. exit-1`` its
  state is overwritten by the last token's state (``hidden[:, pst] = hidden[:, -1]``), then the last token is read.
- MetaEOL: the mean over its eight prompts of the last token's state (raw vectors, no normalisation between).
- Echo: the text twice; ``mean`` averages the tokens of the second copy, ``last`` reads an EOS appended after it.
- The optional reference text normalisation: ``.`` appended where no final ``.?"'``, ``"`` -> ``'``, a final ``?``
  -> ``.``.

The templates are written out here, not imported, so a change to a method's default template, pooled span,
hooked layers or placeholder fails these tests instead of drifting silently from the paper. Every method is built
from its setting with no other choice (``EmbeddingSetting(method=...)``), as ``--method X`` alone does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.embed import main as embed_main
from core.encoding.encoder import Encoder
from core.encoding.setting import EmbeddingSetting, published_poolings

TOLERANCE = 1e-5
TEXTS = [
    "A man is playing a guitar",
    'She said "no" to the offer.',
    "Is the market open today?",
    "the cat sat on the mat",
]
EOL = 'This sentence: "*sent 0*" means in one word:"'
COT = 'After thinking step by step, this sentence: "*sent 0*" means in one word:"'
KNOWLEDGE = (
    "The essence of a sentence is often captured by its main subjects and actions, while descriptive terms provide "
    'additional but less central details. With this in mind, this sentence: "*sent 0*" means in one word:"'
)
TP = 'This sentence: <PST> "*sent 0*" means in one word:"'
ECHO = "Rewrite the sentence: *sent 0*\nRewritten sentence: *sent 0*"
ECHO_PAPER = "Rewrite the following paragraph: *sent 0*. The rewritten paragraph: *sent 0*"
METAEOL_TASKS = [
    (
        "you're presented with a text excerpt. Your task is to categorize the excerpt into a broad category such as "
        "'Education', 'Technology', 'Health', 'Business', 'Environment', 'Politics', or 'Culture'. These categories "
        "help in organizing content for better accessibility and targeting. For this task",
        "should be classified under one general category",
    ),
    (
        "you're given a statement and you need to determine whether it's presenting an 'Opinion' or a 'Fact'. This "
        "distinction is vital for information verification, educational purposes, and content analysis. For this task",
        "discriminates between opinion and fact",
    ),
    (
        "you're given a review from an online platform. Your task is to generate a rating for the product based on the "
        "review on a scale of 1-5, where 1 means 'extremely negative' and 5 means 'extremely positive'. For this task",
        "reflects the sentiment",
    ),
    (
        "you're reading a personal diary entry. Your task is to identify the predominant emotion expressed, such as "
        "joy, sadness, anger, fear, or love. For this task",
        "conveys the emotion",
    ),
    (
        "you're presented with two sentences. Your task is to assess whether the sentences convey the same meaning. "
        "Use 'identical', 'similar', 'different', or 'unrelated' to describe the relationship. To enhance the "
        "performance of this task",
        "means",
    ),
    (
        "you're given a sentence and a phrase. Your task is to determine if the phrase can be a contextual synonym "
        "within the given sentence. Options include 'yes', 'no', or 'partially'. To enhance the performance of this "
        "task",
        "means",
    ),
    (
        "you're examining a news article. Your task is to extract the most critical fact from the article. For this "
        "task",
        "encapsulates the key fact",
    ),
    (
        "you're reviewing a scientific abstract. Your task is to identify the main entities (e.g., proteins, diseases) "
        "and their relations (e.g., causes, treats). For this task",
        "highlights the primary entity or relation",
    ),
]
METAEOL = [f'In this task, {task}, this sentence : "*sent 0*" {asks} in one word:"' for task, asks in METAEOL_TASKS]


# ----- the reference computations


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return tokenizer, model


def normalise(text: str) -> str:
    """The reference batcher's text normalisation, step by step."""
    if len(text) > 0 and text[-1] not in ".?\"'":
        text += "."
    text = text.replace('"', "'")
    if len(text) > 0 and text[-1] == "?":
        text = text[:-1] + "."
    return text


def final_states(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]


def prompt_eol(reference, template: str, text: str) -> np.ndarray:
    tokenizer, model = reference
    ids = tokenizer(template.replace("*sent 0*", text))["input_ids"]
    return final_states(model, ids)[-1].numpy()


def metaeol(reference, text: str) -> np.ndarray:
    return np.mean([prompt_eol(reference, prompt, text) for prompt in METAEOL], axis=0)


def token_prepending(
    reference, text: str, start: int, exit_: int, placeholder: str = "_", template: str = TP
) -> np.ndarray:
    tokenizer, model = reference
    ids = tokenizer(template.replace("<PST>", placeholder).replace("*sent 0*", text))["input_ids"]
    tokens = [tokenizer.decode([token]).strip() for token in ids]
    assert tokens.count(placeholder) == 1, tokens  # one placeholder token, as the reference's added <PST>
    pst = tokens.index(placeholder)

    def overwrite(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden[:, pst, :] = hidden[:, -1, :].clone()

    handles = [
        model.model.layers[index].register_forward_pre_hook(overwrite, with_kwargs=True)
        for index in range(start, exit_)
    ]
    try:
        return final_states(model, ids)[-1].numpy()
    finally:
        for handle in handles:
            handle.remove()


def echo(reference, template: str, text: str, pooling: str) -> np.ndarray:
    tokenizer, model = reference
    first, middle, last = template.split("*sent 0*")
    string = first + text + middle + text + last
    encoded = tokenizer(string, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    if pooling == "last":  # the echo repository's last-token embedding: an EOS after the second copy
        return final_states(model, [*ids, tokenizer.eos_token_id])[-1].numpy()
    second = (len(first) + len(text) + len(middle), len(first) + len(text) + len(middle) + len(text))
    pooled = [i for i, (s, e) in enumerate(encoded["offset_mapping"]) if s < second[1] and e > second[0] and s != e]
    assert pooled == list(range(pooled[0], pooled[-1] + 1))
    return final_states(model, ids)[pooled].mean(0).numpy()


# ----- the workbench, from a setting with nothing but the method (and the named choice) given


def workbench(tiny_loaded, texts: list[str], **chosen) -> np.ndarray:
    setting = EmbeddingSetting(**chosen)
    encoder = Encoder(
        tiny_loaded,
        method=setting.method,
        prompt=setting.prompt,
        pooling=setting.pooling,
        layer=str(setting.layer),
        max_length=setting.max_length,
        precision="fp32",
        cache=False,
    )
    return np.asarray(encoder.encode(texts))


def assert_same(ours: np.ndarray, theirs: list[np.ndarray]) -> None:
    theirs_array = np.stack(theirs)
    assert ours.shape == theirs_array.shape
    assert float(np.abs(ours - theirs_array).max()) <= TOLERANCE


@pytest.mark.parametrize(
    ("prompt", "template"),
    [(None, EOL.removesuffix('"')), ("eol", EOL), ("cot", COT), ("knowledge", KNOWLEDGE)],
)
def test_prompteol_family_is_the_published_template_read_at_the_last_token(tiny_loaded, reference, prompt, template):
    ours = workbench(tiny_loaded, TEXTS, method="plain", prompt=prompt)
    assert_same(ours, [prompt_eol(reference, template, text) for text in TEXTS])


def test_the_noquote_form_is_a_different_vector(tiny_loaded, reference):
    ours = workbench(tiny_loaded, TEXTS, prompt="eol-noquote")
    assert_same(ours, [prompt_eol(reference, EOL.removesuffix('"'), text) for text in TEXTS])
    assert float(np.abs(ours - workbench(tiny_loaded, TEXTS, prompt="eol")).max()) > 1e-3


def test_metaeol_is_the_mean_of_the_papers_eight_prompts_last_tokens(tiny_loaded, reference):
    assert_same(workbench(tiny_loaded, TEXTS, method="metaeol"), [metaeol(reference, text) for text in TEXTS])


@pytest.mark.parametrize(("spec", "start", "exit_"), [("tp", 1, 2), ("tp:1-3", 1, 3), ("tp:0-2", 0, 2)])
def test_token_prepending_overwrites_the_placeholder_in_the_published_layers(
    tiny_loaded, reference, spec, start, exit_
):
    ours = workbench(tiny_loaded, TEXTS, method=spec)
    assert_same(ours, [token_prepending(reference, text, start, exit_) for text in TEXTS])


def test_token_prepending_without_the_closing_quote_by_name(tiny_loaded, reference):
    ours = workbench(tiny_loaded, TEXTS, method="tp", prompt="tp-noquote")
    assert_same(ours, [token_prepending(reference, text, 1, 2, template=TP.removesuffix('"')) for text in TEXTS])
    assert float(np.abs(ours - workbench(tiny_loaded, TEXTS, method="tp")).max()) > 1e-3


@pytest.mark.parametrize(("prompt", "template"), [(None, ECHO), ("echo-paper", ECHO_PAPER)])
def test_echo_means_the_second_copy_and_its_last_token_is_the_appended_eos(tiny_loaded, reference, prompt, template):
    ours = workbench(tiny_loaded, TEXTS, method="echo", prompt=prompt)
    assert_same(ours, [echo(reference, template, text, "mean") for text in TEXTS])
    eos = workbench(tiny_loaded, TEXTS, method="echo", prompt=prompt, pooling="eos")
    assert_same(eos, [echo(reference, template, text, "last") for text in TEXTS])


@pytest.mark.parametrize("spec", ["plain+norm", "metaeol+norm", "tp+norm"])
def test_reference_text_normalisation_when_chosen(tiny_loaded, reference, spec):
    chosen = {"prompt": "eol"} if spec.startswith("plain") else {}  # the published PromptEOL form
    ours = workbench(tiny_loaded, TEXTS, method=spec, **chosen)
    if spec.startswith("plain"):
        theirs = [prompt_eol(reference, EOL, normalise(text)) for text in TEXTS]
    elif spec.startswith("metaeol"):
        theirs = [metaeol(reference, normalise(text)) for text in TEXTS]
    else:
        theirs = [token_prepending(reference, normalise(text), 1, 2) for text in TEXTS]
    assert_same(ours, theirs)
    assert any(normalise(text) != text for text in TEXTS)  # the texts exercise it
    plain = workbench(tiny_loaded, TEXTS, method=spec.removesuffix("+norm"), **chosen)
    assert float(np.abs(ours - plain).max()) > 1e-4


@pytest.mark.parametrize(
    ("choices", "note"),
    [
        ({"method": "metaeol"}, None),
        ({"method": "metaeol", "pooling": "mean"}, "'mean' is not the published one for metaeol"),
        ({"method": "tp:1-2", "pooling": "weighted"}, "not the published one for tp:1-2"),
        ({"method": "echo"}, None),
        ({"method": "echo", "pooling": "eos"}, None),
        ({"method": "echo", "pooling": "last"}, "--pooling eos"),
        ({"prompt": "eol"}, None),
        ({"prompt": "cot-noquote", "pooling": "mean"}, "not the published one for plain"),
        ({"prompt": "summarize", "pooling": "mean"}, None),
        ({"method": "ensemble:eol+cot", "pooling": "mean"}, None),
    ],
)
def test_a_pooling_the_paper_did_not_use_is_named(choices, note):
    setting = EmbeddingSetting(**choices)
    if note is None:
        assert setting.pooling_note is None
    else:
        assert note in setting.pooling_note


@pytest.mark.parametrize("method", ["plain", "echo", "tp", "metaeol", "metaeol-short"])
def test_every_method_defaults_to_a_published_pooling(method):
    setting = EmbeddingSetting(method=method)
    assert setting.pooling in published_poolings(setting.method, setting.prompt)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["metaeol", "tp", "echo"])
def test_embed_cli_with_only_the_method_gives_the_reference_vectors(tiny_model_dir, reference, tmp_path, spec):
    source, output = tmp_path / "texts.txt", tmp_path / "out.npy"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    args = ["--model", str(tiny_model_dir), "--input", str(source), "--output", str(output), "--method", spec]
    assert embed_main([*args, "--precision", "fp32", "--no-cache"]) == 0
    if spec == "metaeol":
        theirs = [metaeol(reference, text) for text in TEXTS]
    elif spec == "tp":
        theirs = [token_prepending(reference, text, 1, 2) for text in TEXTS]
    else:
        theirs = [echo(reference, ECHO, text, "mean") for text in TEXTS]
    assert_same(np.load(output), theirs)
    assert json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))["pooling_note"] is None


@pytest.mark.slow
def test_embed_cli_names_a_pooling_the_paper_did_not_use_in_its_settings(tiny_model_dir, tmp_path):
    source, output = tmp_path / "texts.txt", tmp_path / "out.npy"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    args = ["--model", str(tiny_model_dir), "--input", str(source), "--output", str(output), "--method", "echo"]
    assert embed_main([*args, "--pooling", "last", "--precision", "fp32", "--no-cache"]) == 0
    note = json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))["pooling_note"]
    assert "'last' is not the published one for echo" in note and "--pooling eos" in note
