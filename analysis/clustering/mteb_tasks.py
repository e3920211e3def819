"""Local datasets as mteb clustering tasks, and mteb tasks as plain labelled texts, so scoring follows mteb, offline.

The only grid module that imports mteb at load time; the grid imports it when a task is an mteb task.
"""

from __future__ import annotations

from typing import Any

import datasets
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.task_metadata import TaskMetadata

from analysis.clustering.sampling import check_clusterable
from core.data import Dataset, content_sha256
from core.runtime.errors import TaskUnavailableError


def local_clustering_task(dataset: Dataset, max_documents: int | None = None, seed: int = 42) -> AbsTaskClustering:
    """An mteb clustering task over ``dataset`` (texts with labels), data already in memory.

    ``max_documents`` subsamples as mteb does (a seeded sample of that many texts); ``None`` embeds all.
    """
    check_clusterable(dataset.name, dataset.labels, len(dataset.texts))
    assert dataset.labels is not None
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


def get_mteb_clustering_task(name: str) -> Any:
    """``mteb.get_task(name)``, checked to be a clustering task; KeyError for an unknown name."""
    import mteb
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy

    try:
        task = mteb.get_task(name)
    except KeyError as exc:
        raise KeyError(str(exc).strip("'\"")) from None
    if not isinstance(task, AbsTaskClustering | AbsTaskClusteringLegacy):
        raise ValueError(f"mteb task {name!r} is a {task.metadata.type} task, not a clustering task.")
    return task


def mteb_task_dataset(task: Any, split: str | None = None) -> Dataset:
    """An mteb clustering task's texts and labels (first subset, first label level) as a Dataset.

    TaskUnavailableError when the data cannot be loaded, e.g. with ``HF_HUB_OFFLINE=1`` or no network.
    A legacy task holds several cluster sets per split; their texts are pooled into one set.
    """
    name = task.metadata.name
    if not getattr(task, "data_loaded", False):
        try:
            task.load_data()
        except Exception as exc:  # hub/network/datasets errors come in many types; all mean "not here"
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            raise TaskUnavailableError(
                f"cannot load mteb task {name!r}: {first}. Its data comes from the hub; run it where the hub is "
                "reachable with HF_HUB_OFFLINE=0, or use a local task or a CSV file."
            ) from None
    data = task.dataset
    if isinstance(data, datasets.DatasetDict):
        splits = data
    else:
        splits = data["default"] if "default" in data else next(iter(data.values()))
    split = split or task.metadata.eval_splits[0]
    rows = splits[split]
    text_col = task.input_column_name if isinstance(task.input_column_name, str) else "sentences"
    label_col = task.label_column_name
    texts: list[str] = []
    labels: list[str] = []
    for text, label in zip(rows[text_col], rows[label_col], strict=True):
        if isinstance(text, list):  # legacy: one row is a whole cluster set
            texts.extend(text)
            labels.extend(str(lab[0] if isinstance(lab, list) else lab) for lab in label)
        else:
            texts.append(text)
            labels.append(str(label[0] if isinstance(label, list) else label))
    revision = (task.metadata.dataset or {}).get("revision", "")
    return Dataset(
        name=name,
        texts=texts,
        labels=labels,
        sha256=content_sha256(texts, labels),
        source=f"mteb {name} ({(task.metadata.dataset or {}).get('path', '')}@{revision}, {split})",
    )
