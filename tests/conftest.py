"""Shared test setup: an isolated cache root, no hub, and a tiny offline Llama.

The tiny model is built in memory (a byte-level BPE tokenizer trained on generated sentences and
a randomly initialised 3-layer Llama), so unit tests need neither network nor packaged weights.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Set before anything imports core.*: the cache root and the hub switch are read from the environment.
# Integration tests switch back to the user's root (tests/integration/conftest.py) so the real
# models are converted and the data prepared once per machine, not once per run.
os.environ.setdefault(
    "EMBEDDING_LENS_USER_HOME", os.environ.get("EMBEDDING_LENS_HOME", str(Path.home() / ".cache" / "embedding-lens"))
)
_HOME = tempfile.mkdtemp(prefix="embedding-lens-tests-")
os.environ["EMBEDDING_LENS_HOME"] = _HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402 - after the environment above

# The tiny model's matrices are 32 wide: one thread is ~10x faster than several fighting for the cores.
torch.set_num_threads(1)

TINY_LAYERS = 3
TINY_HIDDEN = 32

_NOUNS = [
    "man",
    "woman",
    "dog",
    "cat",
    "car",
    "house",
    "street",
    "city",
    "river",
    "tree",
    "child",
    "teacher",
    "book",
    "garden",
    "market",
    "song",
]
_ADJECTIVES = ["red", "blue", "small", "large", "quiet", "happy", "old", "new", "green", "bright"]
_VERBS = ["drives", "runs", "eats", "sees", "finds", "likes", "reads", "walks", "opens", "builds"]
_ADVERBS = ["quickly", "slowly", "often", "never", "happily"]
_PREPOSITIONS = ["in", "on", "at", "with", "near", "under", "from"]
# Words of the packaged prompt templates, so prompts tokenize into real merges too.
_PROMPT_WORDS = [
    "This",
    "sentence",
    "means",
    "in",
    "one",
    "word",
    "belongs",
    "to",
    "the",
    "following",
    "cluster",
    "can",
    "be",
    "summarized",
    "as",
    "After",
    "thinking",
    "step",
    "by",
    "classified",
    "into",
    "category",
]

# Texts of varied length for the encoder tests (some share words, some are one word, one has punctuation).
SAMPLE_TEXTS = [
    "The red dog runs quickly in the garden.",
    "A cat sleeps.",
    "Teachers read old books near the river, often with happy children and a small green tree nearby.",
    "city",
    "The woman drives a new car on the street at night!",
    "Books!",
    "An old man walks slowly from the market with bright blue flowers and a song in his heart.",
]


def english_like_sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = ["The", rng.choice(_ADJECTIVES), rng.choice(_NOUNS), rng.choice(_VERBS)]
        if rng.random() < 0.5:
            words.append(rng.choice(_ADVERBS))
        words += [rng.choice(_PREPOSITIONS), "the", rng.choice(_NOUNS)]
        if rng.random() < 0.3:
            words += ["and", "a", rng.choice(_NOUNS)]
        sentence = " ".join(words) + rng.choice([".", ".", "!", "?"])
        if rng.random() < 0.3:
            sentence = 'This sentence: "' + sentence + '" ' + " ".join(rng.sample(_PROMPT_WORDS, 5)) + ":"
        sentences.append(sentence)
    return sentences


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(english_like_sentences(400), trainer)
    # BOS before every encoding, as Llama tokenizers do: the special-token path is exercised.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>{% endif %}"
    )
    return fast


def tiny_llama_config(vocab_size: int, **overrides: Any):
    from transformers import LlamaConfig

    settings: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=TINY_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        architectures=["LlamaForCausalLM"],
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def _isolated_home() -> Iterator[Path]:
    yield Path(_HOME)
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A tiny bidirectional encoder (BertModel) with the same tokenizer: the non-causal path."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["BertModel"],
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def make_tiny_config(tiny_model_dir) -> Callable[..., Any]:
    """``make(**overrides)`` -> the tiny model's LlamaConfig (vocabulary included), with overrides."""
    from transformers import AutoConfig

    vocab_size = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    return lambda **overrides: tiny_llama_config(vocab_size, **overrides)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    """One LoadedModel shared by the encoder tests (no adapter: tests that attach one load their own)."""
    from core.models.registry import load_model

    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_encoder_factory(tiny_model_dir, tiny_loaded) -> Callable[..., Any]:
    """``make(**settings)`` -> an fp32, cache-free Encoder on the tiny model (shared weights)."""
    from core.encoding.encoder import Encoder

    def make(**settings: Any):
        settings.setdefault("precision", "fp32")
        settings.setdefault("cache", False)
        model = tiny_loaded if "adapter" not in settings else str(tiny_model_dir)
        return Encoder(model, **settings)

    return make


@pytest.fixture(scope="session")
def tiny_encoder(tiny_encoder_factory):
    return tiny_encoder_factory()


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    """Texts of varied length (shared: do not mutate)."""
    return list(SAMPLE_TEXTS)


class ForwardCounter:
    """Counts forward calls of a module, and the rows they ran, through a hook; a context manager."""

    def __init__(self, module):
        self.module = module
        self.calls = 0
        self.rows = 0
        self._handle = None

    def _hook(self, _module, args: tuple, kwargs: dict, _output: Any) -> None:
        self.calls += 1
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows += 0 if input_ids is None else int(input_ids.shape[0])

    def __enter__(self) -> ForwardCounter:
        self._handle = self.module.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._handle is not None
        self._handle.remove()


@pytest.fixture(scope="session")
def forward_counter() -> type[ForwardCounter]:
    """``with forward_counter(module) as counter: ...`` then ``counter.calls`` / ``counter.rows``."""
    return ForwardCounter


# ----- page tests (streamlit's AppTest on the tiny model)

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("tiny-adapter")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.fixture
def open_page(tiny_model_dir, tiny_adapter_dir) -> Callable[..., Any]:
    """``open_page("embed.py")`` -> an AppTest of that page on the tiny model (+ adapter unless ``adapter=False``)."""
    from streamlit.testing.v1 import AppTest

    from workbench.state import NO_ADAPTER

    def make(name: str, adapter: bool = True, timeout: float = 120) -> Any:
        app = AppTest.from_file(str(PAGES_DIR / name), default_timeout=timeout)
        app.session_state["model_pick"] = "custom folder or hub id..."
        app.session_state["model_custom"] = str(tiny_model_dir)
        app.session_state["adapter_pick"] = NO_ADAPTER
        app.session_state["adapter_custom"] = str(tiny_adapter_dir) if adapter else ""
        return app.run()

    return make
