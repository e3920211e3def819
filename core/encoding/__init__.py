"""Encoding: the path from a text to its vector.

Owns the embedding setting (``setting``), prompt templates, token roles, pooling, training-free methods (echo,
token prepending, ensembles), attention capture, tokenization and batching (``batching``), the forward that serves
every pooling and layer, base and adapter from one model (``forward``; the layers below the adapter run once,
``trunk``), exact reuse of a shared token prefix (``prefix``; texts sharing prefixes with each other,
``family``), the :class:`Encoder` over them, the vector cache and the sharded corpus streaming behind
``python -m core.embed``.
May import: ``core.runtime``, ``core.models``, ``core.data`` (streaming reads user files).
"""
