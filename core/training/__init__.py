"""Training: contrastive LoRA fine-tuning of a decoder into an embedder.

Owns the trainer (InfoNCE with in-batch negatives, gradient caching, torchrun), its checkpoints and resume,
and background training jobs started from the workbench. ``python -m core.train`` is its CLI.
May import: ``core.runtime``, ``core.models``, ``core.encoding``, ``core.pairs``, ``core.data``, ``core.metrics``.
"""
