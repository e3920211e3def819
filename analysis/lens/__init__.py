"""The lens: what an embedding says in words, where the best layer is, and what fine-tuning changed.

- ``vocabulary``: a pooled vector through the model's final norm and LM head (tied or untied; soft-capped where
  the model caps): top-k tokens and the ranks of a text's own content tokens, optionally with a corpus's first
  principal component removed; a model without an LM head is refused (``NoLanguageModelHeadError``).
- ``text``: one text's lens at every layer, base vs adapter and their difference (the Lens page).
- ``corpus``: the lens over a corpus: key-token alignment per layer with bootstrap CIs, the layer where the
  "one word" emerges; ``relation``: alignment change vs the attention shift on the same texts.
- ``profile``: the layer profile (V-measure per pooling and layer beside label-free measures) and the geometry
  of fine-tuning (alignment/uniformity, anisotropy, effective rank, first-PC share, linear CKA per layer);
  ``geometry``: those measures.
- ``inputs``: sampled texts, held-apart pairs and every layer's vectors from one shared forward per text.
- ``report`` and ``python -m analysis.lens``: the report (report.json, arrays.npz, figures); ``bench``: the
  speed check against one plain encode; ``figures``: plotly figures; ``reading``: written reports for the pages
  (the layer profile on the Clustering quality page).

May import: ``core`` (encoding, models, data, metrics, runtime), ``analysis.stats``, ``analysis.attention``,
``analysis.categories`` and ``analysis.plots`` (writing figures). Imported by the Lens page and, for cluster
centroids, the Cluster explorer.
"""
