"""Attribution: which tokens a pooled vector, or a similarity, owes to.

Owns integrated gradients and gradient-based token attributions through the encoder (captum), and token-pair
contributions to the cosine of two texts.
May import: ``core``, ``analysis.categories``.
"""
