"""Where the query (pooled) token looks: attention shares by token category, base vs adapter.

For each text, layer and head, the query token's attention row is split into the categories of
``analysis.categories`` (sink, special, prompt, content, function, punct). Shares are reported raw
(all six sum to 1) and renormalised over the four non-sink, non-special categories. The shift is
adapter minus base on the same texts; corpus statistics (``analysis.stats``) resample texts.

Under a method (``core.encoding.methods``, the encoder's ``method``) two more categories carry mass: ``first_copy``
(echo: how much the pooled token reads the text's first copy rather than the second) and ``placeholder``
(token prepending: how much it reads the slot that carries the last token's earlier state); under plain both
are 0. ``share_cis`` gives every category's share with a bootstrap CI over the corpus; ``pooled_share_summary``
the pooled token's share on one category at the pooled layers, base, adapter and their paired difference.

Owns the capture over a corpus (``capture``), the measurements (``measures``), one text's view for the Attention
page (``view``), and the report (``report``: run from an ``AttentionReportConfig``; ``python -m analysis.attention``
is its CLI, ``--help`` lists the options). This ``__init__`` re-exports the measurements, not the report.
May import: ``core``, ``analysis.categories``, ``analysis.stats``, ``analysis.plots`` and (the report)
``analysis.attribution``.
"""

from __future__ import annotations

from analysis.attention.capture import CapturedCorpus, capture_corpus
from analysis.attention.measures import (
    METHOD_CATEGORIES,
    Shares,
    attention_entropy,
    layer_token_matrix,
    pooled_share,
    pooled_share_summary,
    role_shares,
    role_shares_per_layer,
    sentence_pooled_shares,
    share_cis,
    shift_report,
    summarise_base,
    token_bars,
)
from analysis.attention.view import (
    PAPER_EXAMPLE,
    AttentionView,
    attention_view,
    pooled_attention_layers,
    query_title,
    query_token_for,
)

__all__ = [
    "METHOD_CATEGORIES",
    "PAPER_EXAMPLE",
    "AttentionView",
    "CapturedCorpus",
    "Shares",
    "attention_entropy",
    "attention_view",
    "capture_corpus",
    "layer_token_matrix",
    "pooled_attention_layers",
    "pooled_share",
    "pooled_share_summary",
    "query_title",
    "query_token_for",
    "role_shares",
    "role_shares_per_layer",
    "sentence_pooled_shares",
    "share_cis",
    "shift_report",
    "summarise_base",
    "token_bars",
]
