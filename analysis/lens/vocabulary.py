"""The vocabulary lens: a pooled vector read through the model's final norm and LM head.

A decoder's LM head turns its last hidden state into next-token logits. Applied to a pooled embedding it says,
in tokens, what the vector encodes (Nie et al. 2025); applied to intermediate layers it is a logit lens at the
pooled position. Hidden state ``num_layers`` (the final one) already has the final norm applied by the backbone;
every earlier state gets it here, once. Soft-capped logits (``final_logit_softcapping``) are capped as the model
does, so probabilities follow the model; ranks and top-k do not depend on the cap (it is monotone).

Key-token alignment: a text's own content tokens (vocabulary ids of its content words, as tokenized in context)
ranked among all logits. ``remove`` directions (the corpus's first principal component) are projected out of the
normed vector before the head; as the head is linear this is a rank-one update of the same logits, so the lens
with and without the component costs one product.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from core.encoding.roles import Role
from core.models.architecture import final_norm, lm_head
from core.runtime.errors import LensError

__all__ = [
    "LensHead",
    "NoLanguageModelHeadError",
    "Projection",
    "alignment_measures",
    "content_token_ids",
    "exact_topk",
    "first_component",
    "lens_head",
    "project",
    "vector_reader",
]

DEFAULT_CHUNK_ROWS = 64  # rows per LM-head product: 64 x 262k float32 logits (Gemma) is 67 MB
RANK_ROWS = 8  # rows per rank comparison: 8 x targets x vocab booleans
TOP_BLOCK = 128  # vocabulary entries per block of :func:`exact_topk`


class NoLanguageModelHeadError(LensError, ValueError):
    """The model has no LM head (an encoder such as MiniLM): there is no vocabulary to read a vector in."""


@dataclass(frozen=True)
class LensHead:
    """What maps a hidden state to next-token logits: the final norm (None where the model has none), the head's
    weight (vocab, hidden) and bias, and the logit soft-cap (None where the model has none)."""

    norm: nn.Module | None
    weight: Tensor
    bias: Tensor | None
    softcap: float | None

    def __post_init__(self) -> None:
        if self.weight.ndim != 2:
            raise ValueError(f"an LM head weight is (vocab, hidden); got shape {tuple(self.weight.shape)}")
        if self.softcap is not None and self.softcap <= 0:
            raise ValueError(f"a logit soft-cap is positive; got {self.softcap}")

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def normed(self, states: Float[Tensor, "n hidden"], already_normed: bool) -> Float[Tensor, "n hidden"]:
        """``states`` after the final norm (unchanged where ``already_normed`` or the model has no norm)."""
        if already_normed or self.norm is None:
            return states
        with torch.inference_mode():
            return self.norm(states.to(self.weight.device, self.weight.dtype)).float()

    def logits(self, normed: Float[Tensor, "n hidden"]) -> Float[Tensor, "n vocab"]:
        """Soft-capped logits of already-normed vectors (all rows at once: callers chunk)."""
        out = torch.nn.functional.linear(normed.to(self.weight.device, self.weight.dtype), self.weight, self.bias)
        out = out.float()
        return self.cap(out)

    def cap(self, logits: Tensor) -> Tensor:
        return logits if self.softcap is None else torch.tanh(logits / self.softcap) * self.softcap


def lens_head(loaded) -> LensHead:
    """The lens head of a :class:`core.models.registry.LoadedModel`.

    Raises:
        NoLanguageModelHeadError: the model is not a causal LM with an output projection (an encoder baseline).
    """
    head = lm_head(loaded.model) if loaded.is_causal else None
    weight = getattr(head, "weight", None)
    if head is None or not isinstance(weight, Tensor):
        raise NoLanguageModelHeadError(
            f"{loaded.name} has no LM head (it is an encoder, not a decoder language model), so its vectors cannot "
            "be read as tokens; choose a decoder model such as smollm2-135m or gemma3-270m."
        )
    config = loaded.model.config
    softcap = getattr(config, "final_logit_softcapping", None)
    if softcap is None and hasattr(config, "get_text_config"):
        softcap = getattr(config.get_text_config(), "final_logit_softcapping", None)
    bias = getattr(head, "bias", None)
    return LensHead(
        norm=final_norm(loaded.backbone),
        weight=weight.detach(),
        bias=bias.detach() if isinstance(bias, Tensor) else None,
        softcap=float(softcap) if softcap else None,
    )


def vector_reader(loaded, *, already_normed: bool) -> Callable[[np.ndarray, int], list[str]]:
    """A reader of single vectors (a cluster's centroid) as their top tokens through the final norm and LM head.

    Args:
        loaded: a decoder :class:`core.models.registry.LoadedModel` (the head is the same with and without an
            adapter: LoRA adapts decoder layers only).
        already_normed: the vectors are final-layer states (the final norm already applied).

    Returns:
        ``read(vector, n)``: the ``n`` most probable tokens, decoded.

    Raises:
        NoLanguageModelHeadError: the model has no LM head.
    """
    head = lens_head(loaded)

    def read(vector: np.ndarray, n: int) -> list[str]:
        states = torch.as_tensor(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        (projection,) = project(head, head.normed(states, already_normed), top_k=n)
        return [loaded.tokenizer.decode([int(token)]) for token in projection.top_ids[0]]

    return read


@dataclass
class Projection:
    """The lens of ``n`` vectors: top-k token ids and probabilities, and the rank of each text's target ids
    (0 = the top token; ``-1`` pads rows with fewer targets)."""

    top_ids: np.ndarray  # (n, k) int64
    top_probs: np.ndarray  # (n, k) float32
    target_ranks: np.ndarray  # (n, max targets) int64, -1 padded


def first_component(vectors: Float[np.ndarray, "n hidden"]) -> Float[np.ndarray, " hidden"]:
    """The unit first principal component of ``vectors`` (centred), sign fixed so the mean projects >= 0."""
    x = np.asarray(vectors, dtype=np.float64)
    centred = x - x.mean(0)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one BLAS thread: faster on a shared machine (see analysis.lens.geometry)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    u = vt[0]
    if float(x.mean(0) @ u) < 0:
        u = -u
    return u


def project(
    head: LensHead,
    normed: Float[Tensor, "n hidden"],
    *,
    top_k: int,
    targets: Sequence[Sequence[int]] | None = None,
    removals: Sequence[np.ndarray | None] = (None,),
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    rank_cap: int | None = None,
) -> list[Projection]:
    """The lens of already-normed vectors, once per entry of ``removals``.

    Args:
        head: the model's lens head.
        normed: vectors after the final norm (:meth:`LensHead.normed`).
        top_k: tokens kept per row (products are chunked; only the top-k and the target ranks are kept).
        targets: per row, vocabulary ids whose ranks are wanted (a text's content tokens), or None.
        removals: per output, a unit direction to project out of every row before the head, or None for none.
        chunk_rows: rows per LM-head product.
        rank_cap: None = exact ranks; else ranks from the top ``rank_cap`` tokens only, a target outside them
            ranked ``rank_cap`` (a corpus needs hits within top-k and the best rank, not deep ranks: far cheaper).

    Returns:
        One :class:`Projection` per entry of ``removals``, in order.
    """
    n = int(normed.shape[0])
    if top_k < 1 or top_k > head.vocab_size:
        raise ValueError(f"top_k={top_k} must be in 1..{head.vocab_size} (the vocabulary)")
    if targets is not None and len(targets) != n:
        raise ValueError(f"{len(targets)} target lists for {n} vectors")
    width = max((len(t) for t in targets), default=0) if targets is not None else 0
    outs = [
        Projection(
            np.zeros((n, top_k), dtype=np.int64),
            np.zeros((n, top_k), dtype=np.float32),
            np.full((n, width), -1, dtype=np.int64),
        )
        for _ in removals
    ]
    device, dtype = head.weight.device, head.weight.dtype
    directions = [None if d is None else torch.as_tensor(np.asarray(d), dtype=dtype, device=device) for d in removals]
    # W u per direction: the head is linear, so (z - (z.u) u) W^T = z W^T - (z.u) (W u).
    head_of = [None if u is None else head.weight @ u for u in directions]
    with torch.inference_mode():
        for begin in range(0, n, chunk_rows):
            rows = normed[begin : begin + chunk_rows].to(device, dtype)
            raw = torch.nn.functional.linear(rows, head.weight, head.bias)
            for index, (u, wu) in enumerate(zip(directions, head_of, strict=True)):
                logits = raw if u is None else raw - (rows @ u)[:, None] * wu[None, :]
                logits = head.cap(logits.float())
                _fill(outs[index], logits, begin, top_k, targets, rank_cap)
    return outs


def _fill(
    out: Projection,
    logits: Tensor,
    begin: int,
    top_k: int,
    targets: Sequence[Sequence[int]] | None,
    rank_cap: int | None,
) -> None:
    keep = top_k if rank_cap is None or targets is None else min(max(top_k, rank_cap), logits.shape[1])
    values, ids = torch.topk(logits, keep, dim=1)
    values, ids, deep = values[:, :top_k], ids[:, :top_k], ids
    total = torch.logsumexp(logits, dim=1, keepdim=True)
    stop = begin + logits.shape[0]
    out.top_ids[begin:stop] = ids.cpu().numpy()
    out.top_probs[begin:stop] = torch.exp(values - total).cpu().numpy()
    if targets is None:
        return
    rows = logits.shape[0]
    width = max((len(targets[begin + r]) for r in range(rows)), default=0)
    if width == 0:
        return
    wanted = torch.zeros((rows, width), dtype=torch.long)
    present = torch.zeros((rows, width), dtype=torch.bool)
    for r in range(rows):
        ids = list(targets[begin + r])
        wanted[r, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        present[r, : len(ids)] = True
    if rank_cap is not None:
        # Position of each target among the top ``rank_cap`` ids; absent -> rank_cap.
        match = deep[:, :, None] == wanted.to(deep.device)[:, None, :]
        found = match.any(1)
        position = match.float().argmax(1)
        capped = torch.where(found, position, torch.full_like(position, deep.shape[1])).cpu()
        out.target_ranks[begin:stop, :width] = torch.where(present, capped, torch.full_like(capped, -1)).numpy()
        return
    scores = torch.gather(logits, 1, wanted.to(logits.device))
    # Rank = how many tokens score strictly higher (0 = the top token); a few rows at a time bounds the
    # (rows, targets, vocab) comparison's memory.
    ranks = torch.cat(
        [
            (logits[r : r + RANK_ROWS, None, :] > scores[r : r + RANK_ROWS, :, None]).sum(-1)
            for r in range(0, rows, RANK_ROWS)
        ]
    ).cpu()
    ranks = torch.where(present, ranks, torch.full_like(ranks, -1)).numpy()
    out.target_ranks[begin:stop, :width] = ranks


def exact_topk(logits: Float[Tensor, "n vocab"], k: int, block: int = TOP_BLOCK) -> tuple[Tensor, Tensor]:
    """``torch.topk(logits, k, dim=1)`` (values and ids, descending) read from block maxima, without a top-k over
    the whole vocabulary.

    The k-th largest block maximum ``t`` bounds the k-th largest logit from below (the k blocks with the largest
    maxima hold k logits >= t), so every top-k logit lies in one of those k blocks (or equals ``t``: a tie at the
    k-th value) and a top-k over their entries is exact. The vocabulary's tail beyond whole blocks is always a
    candidate. Only the order of exactly equal logits may differ from a full ``torch.topk``.
    """
    rows, vocab = logits.shape
    whole = vocab - vocab % block
    count = whole // block
    if count <= 2 * k:  # few blocks: a plain top-k costs no more
        return torch.topk(logits, k, dim=1)
    logits = logits.contiguous()
    blocks = logits[:, :whole].view(rows, count, block)
    _, chosen = torch.topk(blocks.amax(2), k, dim=1)
    candidates = blocks.gather(1, chosen[:, :, None].expand(-1, -1, block)).reshape(rows, k * block)
    ids = (chosen[:, :, None] * block + torch.arange(block, device=logits.device)).reshape(rows, k * block)
    if whole < vocab:
        candidates = torch.cat([candidates, logits[:, whole:]], 1)
        tail = torch.arange(whole, vocab, device=logits.device).expand(rows, -1)
        ids = torch.cat([ids, tail], 1)
    values, position = torch.topk(candidates, k, dim=1)
    return values, ids.gather(1, position)


def content_token_ids(prepared: Sequence) -> list[list[int]]:
    """Per prepared text (``Encoder.prepare``), the distinct vocabulary ids of its content-word tokens, in order of
    first appearance: the text's own key tokens as the model read them in context."""
    out = []
    for item in prepared:
        ids = [tid for tid, role in zip(item.input_ids, item.roles, strict=False) if role == Role.CONTENT]
        out.append(list(dict.fromkeys(int(t) for t in ids)))
    return out


def alignment_measures(ranks: np.ndarray, top_k: int) -> dict[str, np.ndarray]:
    """Per-text key-token alignment from target ranks (rows padded with -1).

    Returns arrays over texts (NaN where a text has no content token):
        ``hits``: how many of the text's content tokens rank within the top ``top_k``;
        ``hit_rate``: that count over the text's content tokens;
        ``any_hit``: 1 if at least one does (the paper's hit@k);
        ``best_rank``: the best (smallest) rank of any of them, 0-based.
    """
    ranks = np.asarray(ranks)
    valid = ranks >= 0
    count = valid.sum(1)
    has = count > 0
    hits = ((ranks < top_k) & valid).sum(1).astype(np.float64)
    nan = np.full(len(ranks), np.nan)
    best = np.where(valid, ranks, np.iinfo(np.int64).max).min(1) if ranks.shape[1] else np.zeros(len(ranks))
    return {
        "hits": np.where(has, hits, nan),
        "hit_rate": np.where(has, hits / np.maximum(count, 1), nan),
        "any_hit": np.where(has, (hits > 0).astype(np.float64), nan),
        "best_rank": np.where(has, best.astype(np.float64), nan),
    }
