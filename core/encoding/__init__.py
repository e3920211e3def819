"""Encoding: the path from a text to its vector.

Owns prompt templates, token roles, pooling, training-free methods (echo, token prepending, ensembles),
attention capture, the :class:`Encoder` (one forward serves every pooling and layer), the vector cache and
the sharded corpus streaming behind ``python -m core.embed``.
May import: ``core.runtime``, ``core.models``, ``core.data`` (streaming reads user files).
"""
