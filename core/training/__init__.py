"""Training: contrastive LoRA fine-tuning of a decoder into an embedder.

Owns the run's settings (``config``: :class:`TrainConfig`, defaults = the shipped recipe), the loss (``loss``:
InfoNCE with in-batch negatives, gathered under torchrun), LoRA targets and attachment (``lora``), the pairs a run
trains on (``dataset``), checkpoints of data only with RNG states and interrupts (``checkpoints``), the loop with
gradient caching and resume (``trainer``), the CLI (``cli``: ``python -m core.train``) and background training jobs
started from the workbench (``jobs``).
May import: ``core.runtime``, ``core.models``, ``core.encoding``, ``core.pairs``, ``core.data``, ``core.metrics``.
"""
