"""Grid cells as mteb results: one ``TaskResult`` per cell, in the folder layout mteb's ``ResultCache`` reads.

Each workbench row (model, adapter, [method,] prompt, pooling, layer) becomes one mteb model, named
``embedding-lens/<variant>__<form>__<pooling>__L<layer>`` (``row_form``: the template form's current name,
e.g. ``eol`` as published and ``eol-noquote``, ``tp-1-6``, ``metaeol-short``; a hash is added to custom templates
and ensembles, so distinct forms never share a result file), with the adapter's (or the weights') hash as
revision. mteb's own writer (``ResultCache.save_to_cache``) lays them out as
``<out>/results/<model name as path>/<revision>/<task>.json`` beside a ``model_meta.json``, so::

    mteb.ResultCache("DIR").load_results(include_remote=False)

lists the workbench's rows beside published models' results copied into the same cache.

The grid writes each cell here as it writes the cell's JSON, into ``<grid out>/mteb`` (:data:`MTEB_FOLDER`);
``python -m analysis.clustering.mteb_results results/local-track --out DIR`` converts a whole results folder
(made before, or into another cache).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mteb import ResultCache, TaskResult
from mteb.models import ModelMeta
from mteb.models.model_meta import ScoringFunction

from analysis.clustering.store import cell_method
from core.encoding.methods import (
    METAEOL_PROMPTS,
    METAEOL_SHORT_PROMPTS,
    NORM_SUFFIX,
    TEMPLATE_FORMS,
    stored_prompt_name,
)
from core.runtime.errors import GridError, run_cli

log = logging.getLogger(__name__)

MODEL_PREFIX = "embedding-lens"
# The mteb result cache inside a grid's results folder.
MTEB_FOLDER = "mteb"
SPLIT = "test"
SCORE_KEYS = ("v_measure", "v_measure_std", "ami", "ami_std", "ari", "ari_std")
# Every named form: a cell whose template(s) are its name's form is named by the name alone.
REGISTERED_FORMS: dict[str, object] = {
    **TEMPLATE_FORMS,
    "eol-noquote": TEMPLATE_FORMS["eol-noquote"],
    "metaeol": METAEOL_PROMPTS,
    "metaeol-short": METAEOL_SHORT_PROMPTS,
}


def row_form(cell: dict[str, Any]) -> str:
    """The cell's template form as a name that no other form shares: the form's current name (a quote-less cell
    stored as ``eol`` is ``eol-noquote``, see ``stored_prompt_name``), followed by a hash of the template(s) when
    they are not the registered form of that name (custom templates, ensembles), then a non-plain method's
    arguments (``tp-1-6``, ``tp-noquote-1-6``) and ``-norm`` under the reference text normalisation."""
    prompt = cell["prompt"] if isinstance(cell["prompt"], dict) else {"name": str(cell["prompt"]), "template": None}
    templates = prompt.get("templates")
    form: object = tuple(templates) if isinstance(templates, list) else prompt.get("template")
    name = stored_prompt_name({**prompt, "name": str(prompt.get("name")).removesuffix(NORM_SUFFIX)})
    if form is not None and REGISTERED_FORMS.get(name) != form:
        digest = hashlib.sha256(json.dumps(form, ensure_ascii=False).encode()).hexdigest()[:8]
        name = f"{_slug(name.split(':', 1)[0])}-{digest}"
    method = cell_method(cell)
    normalised = method.endswith(NORM_SUFFIX)
    kind, _, arguments = method.removesuffix(NORM_SUFFIX).partition(":")
    if kind.startswith("tp") and arguments:  # tp or tp-noquote; the template already named the form
        name = f"{name}-{arguments}"
    return _slug(name) + ("-norm" if normalised else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def cell_model_name(cell: dict[str, Any]) -> str:
    """``embedding-lens/<variant>__<form>__<pooling>__L<layer>`` with :func:`row_form`: two cells of one variant,
    pooling and layer share a name (and so a result file per task) only if their template(s) and method settings
    are the same form."""
    return f"{MODEL_PREFIX}/{cell['variant']}__{row_form(cell)}__{cell['pooling']}__L{cell['layer']}"


def cell_model_meta(cell: dict[str, Any]) -> ModelMeta:
    """The row's mteb model: name from its settings, revision from the weights it ran (adapter hash first)."""
    revision = (cell.get("adapter_sha256") or cell["weights_sha256"])[:12]
    template = cell["prompt"]["template"] if isinstance(cell["prompt"], dict) else str(cell["prompt"])
    return ModelMeta.create_empty(
        overwrites={
            "name": cell_model_name(cell),
            "revision": revision,
            "max_tokens": cell.get("max_length"),
            "similarity_fn_name": ScoringFunction.COSINE,
            "framework": ["PyTorch"],
            "open_weights": True,
            "adapted_from": cell["model"],
            "reference": f"embedding-lens cell {cell['cell_id']} (prompt {template!r})",
        }
    )


def cell_task_result(cell: dict[str, Any]) -> TaskResult:
    """One cell's clustering scores as an mteb ``TaskResult`` (main score: V-measure, as mteb's clustering tasks)."""
    scores = {key: cell["scores"][key] for key in SCORE_KEYS if key in cell["scores"]}
    if "v_measure" not in scores:
        raise GridError(f"Cell {cell.get('cell_id')} has no v_measure score; re-run its grid to rewrite it.")
    timing = cell.get("timing") or {}
    seconds = float(timing.get("encode_seconds", 0.0)) + float(timing.get("score_seconds", 0.0))
    created = cell.get("created")
    return TaskResult(
        dataset_revision=cell["task"].get("dataset_sha256") or cell["key"]["dataset_sha256"],
        task_name=cell["task"]["name"],
        mteb_version=(cell.get("versions") or {}).get("mteb"),
        scores={
            SPLIT: [{"hf_subset": "default", "languages": ["eng-Latn"], "main_score": scores["v_measure"], **scores}]
        },
        evaluation_time=seconds or None,
        date=datetime.datetime.fromisoformat(created) if created else None,
    )


def write_cell(cell: dict[str, Any], out: str | Path, *, missing_only: bool = False) -> Path:
    """Write one grid cell into the mteb result cache at ``out``; returns the task result's path.

    ``missing_only``: leave a result already there (a resumed grid's stored cells)."""
    cache = ResultCache(out)
    meta = cell_model_meta(cell)
    path = cache.get_task_result_path(task_name=cell["task"]["name"], model_name=meta)
    if missing_only and path.is_file():
        return path
    result = cell_task_result(cell)
    cache.save_to_cache(result, meta, encode_kwargs={"prompt": meta.reference, "max_length": cell.get("max_length")})
    return path


def read_cells(results_dir: str | Path) -> list[dict[str, Any]]:
    """The cells of a grid results folder (``<dir>/cells/<task>/<cell>.json``)."""
    folder = Path(results_dir)
    paths = sorted((folder / "cells").glob("*/*.json"))
    if not paths:
        raise GridError(f"No grid cells under {folder}/cells; pass a results folder such as results/local-track.")
    return [json.loads(path.read_text()) for path in paths]


def convert_results(results_dir: str | Path, out: str | Path) -> list[Path]:
    """Write every cell of ``results_dir`` into the mteb result cache at ``out``."""
    return [write_cell(cell, out) for cell in read_cells(results_dir)]


def main(argv: Sequence[str] | None = None) -> int:
    """Convert a grid results folder into mteb's result-cache layout."""
    parser = argparse.ArgumentParser(prog="python -m analysis.clustering.mteb_results", description=main.__doc__)
    parser.add_argument("results", help="a grid results folder, e.g. results/local-track")
    parser.add_argument("--out", required=True, help="the mteb cache folder to write (results/ is created in it)")
    args = parser.parse_args(argv)
    paths = convert_results(args.results, args.out)
    models = {path.parent.parent.name for path in paths}
    print(f"wrote {len(paths)} task results for {len(models)} rows under {Path(args.out) / 'results'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
