"""Local datasets as mteb clustering tasks, so scoring goes through mteb itself, offline."""

from __future__ import annotations

import datasets
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.task_metadata import TaskMetadata

from core.data import Dataset


def local_clustering_task(dataset: Dataset, max_documents: int | None = None, seed: int = 42) -> AbsTaskClustering:
    """An mteb clustering task over ``dataset`` (texts with labels), data already in memory.

    ``max_documents`` subsamples as mteb does (a seeded sample of that many texts); ``None`` embeds all.
    """
    if dataset.labels is None:
        raise ValueError(f"Dataset {dataset.name!r} has no labels, so it cannot be a clustering task.")
    n_labels = len(set(dataset.labels))
    if n_labels < 2:
        raise ValueError(f"Dataset {dataset.name!r} has {n_labels} label; clustering needs at least 2.")
    if len(dataset.texts) < n_labels:
        raise ValueError(f"Dataset {dataset.name!r} has fewer texts ({len(dataset.texts)}) than clusters ({n_labels}).")
    metadata = TaskMetadata(
        name=f"Local{dataset.name.replace('-', '_').replace('/', '_').title()}Clustering",
        description=f"Local clustering task over {dataset.source}",
        reference=None,
        dataset={"path": f"local/{dataset.name}", "revision": dataset.sha256[:12]},
        type="Clustering",
        category="t2c",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="v_measure",
    )

    class LocalClustering(AbsTaskClustering):
        max_fraction_of_documents_to_embed = None
        max_document_to_embed = max_documents

        def load_data(self, **_: object) -> None:
            self.dataset = {
                "default": datasets.DatasetDict(
                    {
                        "test": datasets.Dataset.from_dict(
                            {"sentences": list(dataset.texts), "labels": list(dataset.labels)}
                        )
                    }
                )
            }
            self.data_loaded = True

    LocalClustering.metadata = metadata
    return LocalClustering(seed=seed)
