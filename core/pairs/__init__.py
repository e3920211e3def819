"""Positive pairs for contrastive training.

Owns pair files (reading and validating JSONL/CSV pairs), sources (Bible translations, track texts),
building pairs (``python -m core.pairs``), quality checks, cleaning pairs for training and their fingerprint
(``clean``), and the leave-one-corpus-out guard that keeps evaluation texts out of training pairs
(``python -m core.pairs.guard``).
May import: ``core.runtime``, ``core.data``, ``core.models``, ``core.encoding`` (hard negatives are mined
with the encoder).
"""
