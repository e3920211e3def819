"""Attribution: which tokens a pooled vector, or a similarity, owes to.

Owns integrated gradients and gradient-based token attributions through the encoder (captum,
``integrated_gradients``) and token-pair contributions to the cosine of two texts (``token_pairs``): the
explanation methods. Whether to trust them (deletion and insertion curves, the verdict against the random floor)
and the workbench's background job that runs methods and curves together live in ``analysis.faithfulness``.
May import: ``core``, ``analysis.categories``.
"""
