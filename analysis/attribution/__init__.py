"""Attribution: which tokens a pooled vector, or a similarity, owes to.

Owns integrated gradients and gradient-based token attributions through the encoder (captum), token-pair
contributions to the cosine of two texts, the pair's deletion curves and their verdict against the random floor,
and the background job that runs them all for the workbench (``job``).
May import: ``core``, ``analysis.categories``, ``analysis.faithfulness`` (the curves reuse its rankers and
perturbation; faithfulness imports only ``integrated_gradients`` of this package).
"""
