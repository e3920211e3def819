"""Faithfulness: which explanation of a pooled vector to trust.

Owns the deletion and insertion curves of ranked tokens, their AOPCs against random orders, and the report
``python -m analysis.faithfulness`` writes.
May import: ``core``, ``analysis.attention``, ``analysis.attribution``, ``analysis.categories``, ``analysis.plots``,
``analysis.stats``.
"""
