"""How far plain word statistics get on each set: a yardstick for the embeddings."""

from __future__ import annotations

from collections.abc import Sequence

from core.data.dataset import Dataset

__all__ = ["tfidf_vmeasure"]


def tfidf_vmeasure(dataset: Dataset, seeds: Sequence[int] = (0, 1, 2, 3, 4), dims: int = 100) -> float:
    """Mean V-measure of TF-IDF (word 1-2 grams, sublinear) -> SVD -> L2 -> MiniBatchKMeans(k = #labels)."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import v_measure_score
    from sklearn.preprocessing import normalize

    assert dataset.labels is not None
    x = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2).fit_transform(dataset.texts)
    x = normalize(TruncatedSVD(n_components=min(dims, x.shape[1] - 1), random_state=0).fit_transform(x))
    k = dataset.n_labels()
    scores = [
        v_measure_score(dataset.labels, MiniBatchKMeans(n_clusters=k, n_init=1, random_state=s).fit_predict(x))
        for s in seeds
    ]
    return sum(scores) / len(scores)
