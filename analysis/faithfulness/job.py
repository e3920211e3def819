"""Attribution of a pair's similarity as a background job: IG of each setting, token pairs, deletion curves.

A job lives in a folder named by the content hash of its inputs (:meth:`AttributionRequest.key`: model and
adapter weights, embedding setting, texts, step caps), under :func:`jobs_root`:

- ``request.json``: the inputs, JSON values only (validated by :class:`AttributionRequest` when read);
- ``status.json``: state, per-part progress, the ETA and the IG convergence verdict (:func:`read_status`);
- one result per finished part, JSON: ``ig_base.json``, ``ig_adapter.json``, ``pairs.json``, ``curves.json``;
- ``heartbeat``: touched by every page that watches; the job ends itself when it is older than ``stale_s``;
- ``stop``: a Stop request; the job ends at once (the CLI's watchdog) or at its next progress report.

Finished parts are kept: a stopped job started again, or the same inputs asked for later, reuse them (a cache
hit is a part whose file exists). Nothing in the folder is executed or unpickled. The job holds
``core.runtime.files.lock_folder`` on its folder while it runs: that lock, not ``status.json``, says whether it
runs (the kernel frees it however the process ends). ``python -m analysis.faithfulness.job FOLDER`` is the
process :func:`launch` starts; :func:`run_job` is the same work in the caller's process (tests).

IG gating: when a setting's integrated gradients miss their own convergence check (relative completeness error
above ``tolerance``), ``status["ig"]["converged"]`` is False with the deltas; with ``after_unconverged="stop"``
the job ends there (state ``held``), with ``"label"`` the later parts run and the status says they run beside
an IG result that failed its check.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from analysis.attribution.integrated_gradients import Attribution, Attributor, SimilarityAttribution
from analysis.attribution.token_pairs import PairMatrix, pair_matrix, text_jacobian
from analysis.categories import sides
from analysis.faithfulness.pair_curves import pair_curves
from core.encoding.encoder import Encoder
from core.encoding.setting import EmbeddingSetting
from core.runtime.errors import ConfigError, LensError, run_cli
from core.runtime.files import folder_locked, lock_folder, write_json
from core.runtime.paths import REPO_ROOT, cache_root

__all__ = [
    "DEFAULT_MAX_STEPS",
    "PARTS",
    "PART_LABELS",
    "AttributionRequest",
    "JobStopped",
    "attribution_from_dict",
    "eta_left",
    "job_folder",
    "job_running",
    "jobs_root",
    "launch",
    "load_part",
    "pair_matrix_from_dict",
    "read_status",
    "request_stop",
    "run_job",
    "similarity_from_dict",
    "touch_heartbeat",
]

Part = Literal["ig_base", "ig_adapter", "pairs", "curves"]
PARTS: tuple[str, ...] = get_args(Part)
PART_LABELS = {
    "ig_base": "IG base",
    "ig_adapter": "IG adapter",
    "pairs": "token pairs",
    "curves": "deletion curves",
}
AfterUnconverged = Literal["stop", "label"]
# Aimed at under a minute for SmolLM2 with its adapter and two 10-word sentences on a quiet 2-core CPU
# (docs/interpretability.md says what was measured).
DEFAULT_MAX_STEPS = 16
STARTING_S = 90.0  # a launched process that has not taken its folder's lock by then did not start
STALE_S = 30.0  # a heartbeat older than this: no tab watches (a reload or a page switch is shorter)
REQUEST_FILE, STATUS_FILE, HEARTBEAT_FILE, STOP_FILE = "request.json", "status.json", "heartbeat", "stop"
_KEY_VERSION = 1  # bump when a part's result changes meaning for the same inputs


class JobStopped(LensError):
    """The job ended on a Stop request or a stale heartbeat (``reason`` says which)."""


@dataclass(frozen=True)
class AttributionRequest:
    """Everything an attribution job depends on (and how it treats an unconverged IG, outside the key).

    Invariants: two non-empty texts, ``max_steps >= 4`` (the IG cap per text and setting), ``pair_steps >= 1``,
    ``random_draws >= 2`` (the random floor's spread), ``k >= 1``, ``0 < tolerance``.
    """

    model: str
    adapter: str | None
    setting: EmbeddingSetting
    text_a: str
    text_b: str
    max_steps: int = DEFAULT_MAX_STEPS
    pair_steps: int = 2
    curve_ig_steps: int = 8  # the faithfulness IG ranker's cap per text in the curves
    random_draws: int = 5
    k: int = 5
    peak_layer: int | None = None
    tolerance: float = 0.05
    device: str = "auto"
    identity: dict[str, Any] = field(default_factory=dict)  # weights hashes: part of the key, not of the run
    after_unconverged: AfterUnconverged = "label"

    def __post_init__(self) -> None:
        if not isinstance(self.setting, EmbeddingSetting):
            raise ConfigError(f"setting must be an EmbeddingSetting, not {type(self.setting).__name__}.")
        if not self.text_a.strip() or not self.text_b.strip():
            raise ConfigError("Attribution needs two non-empty texts; enter text A and text B.")
        if self.max_steps < 4 or self.pair_steps < 1 or self.curve_ig_steps < 4:
            raise ConfigError("The IG cap and the curves' IG cap must be at least 4 steps, the pair stages at least 1.")
        if self.random_draws < 2 or self.k < 1 or self.tolerance <= 0:
            raise ConfigError("Need at least 2 random draws, k >= 1 and a positive tolerance.")
        if self.after_unconverged not in get_args(AfterUnconverged):
            raise ConfigError(f"after_unconverged must be one of {get_args(AfterUnconverged)}.")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["setting"] = self.setting.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AttributionRequest:
        """The request a ``request.json`` holds; anything else is a :class:`ConfigError` naming the file's fault."""
        if not isinstance(values, dict) or not isinstance(values.get("setting"), dict):
            raise ConfigError("The job's request.json is not an attribution request; start the job again.")
        known = {name for name in cls.__dataclass_fields__}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"The job's request.json has fields an attribution request has not: {sorted(unknown)}.")
        try:
            return cls(**{**values, "setting": EmbeddingSetting.from_dict(values["setting"])})
        except TypeError as error:
            raise ConfigError(f"The job's request.json is damaged ({error}); start the job again.") from None

    def key(self) -> str:
        """Content hash of what changes a result (not the device, nor how an unconverged IG is treated)."""
        values = {k: v for k, v in self.to_dict().items() if k not in ("device", "after_unconverged")}
        values["version"] = _KEY_VERSION
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:20]

    def parts(self, has_adapter: bool) -> list[str]:
        return ["ig_base", *(["ig_adapter"] if has_adapter else []), "pairs", "curves"]


def jobs_root() -> Path:
    return cache_root() / "attribution-jobs"


def job_folder(request: AttributionRequest, root: str | Path | None = None) -> Path:
    return Path(root or jobs_root()) / request.key()


# ----- the folder as the page sees it


def job_running(folder: str | Path) -> bool:
    """Whether a job process works in ``folder`` right now: it holds the folder's lock, or it was launched less
    than ``STARTING_S`` ago and has not taken the lock yet (its interpreter is still importing)."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    if folder_locked(folder):
        return True
    status = read_status(folder) or {}
    return status.get("state") == "starting" and time.time() - float(status.get("updated", 0)) < STARTING_S


def read_status(folder: str | Path) -> dict[str, Any] | None:
    """``status.json`` as a dict, or None when absent or unreadable (a write is atomic: never half a file)."""
    try:
        status = json.loads((Path(folder) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def eta_left(status: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds left by the job's last estimate, counted down since that report (so a part between reports still
    moves the clock); negative when past the estimate; None before the first measurement."""
    eta = status.get("eta_s")
    if eta is None:
        return None
    now = time.time() if now is None else now
    return float(eta) - (now - float(status.get("updated", now)))


def load_part(folder: str | Path, part: str) -> Any | None:
    """A finished part's result (JSON values), or None when it has not finished (or its file is unreadable)."""
    try:
        return json.loads((Path(folder) / f"{part}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def touch_heartbeat(folder: str | Path) -> None:
    """A watching page says it is still there."""
    path = Path(folder) / HEARTBEAT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path)


def request_stop(folder: str | Path) -> None:
    """Ask the job in ``folder`` to stop; it ends within a second (or at its next progress report in-process)."""
    (Path(folder) / STOP_FILE).touch()


def launch(request: AttributionRequest, root: str | Path | None = None, python: str = sys.executable) -> Path:
    """Start the job for ``request`` in the background (unless one runs in its folder already); its folder.

    A finished job is not started again: its results are the cache. A stopped or failed one starts again and
    reuses the parts it finished.
    """
    folder = job_folder(request, root)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = lock_folder(folder.parent, "attribution jobs folder", wait=True)  # one launch at a time
    try:
        if job_running(folder):
            return folder
        (folder / STOP_FILE).unlink(missing_ok=True)
        write_json(folder / REQUEST_FILE, request.to_dict())
        touch_heartbeat(folder)
        write_json(folder / STATUS_FILE, {"state": "starting", "updated": time.time(), "parts": {}})
        log = open(folder / "job.log", "ab")  # noqa: SIM115 - the child owns it for its lifetime
        subprocess.Popen(
            [python, "-m", "analysis.faithfulness.job", str(folder)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
    finally:
        os.close(descriptor)
    return folder


# ----- the work


class _Progress:
    """Per-part progress, the ETA and the stop checks; writes ``status.json`` at every report.

    Work is counted in token-forward units (a forward of one token; a backward counts two), estimated per part
    before it runs; the ETA is the remaining estimate at the seconds per unit measured on this run so far.
    """

    def __init__(self, folder: Path, parts: dict[str, float], stale_s: float):
        self.folder, self.stale_s = folder, stale_s
        self.estimate = dict(parts)
        self.spent: dict[str, float] = {}  # finished parts' measured units (their estimate, or actual IG steps)
        self.status: dict[str, Any] = {
            "state": "running",
            "pid": os.getpid(),
            "started": time.time(),
            "parts": {p: {"label": PART_LABELS[p], "state": "pending", "done": 0, "total": 0} for p in parts},
        }
        self.work_started: float | None = None
        self.units_done = 0.0

    def check(self) -> None:
        """Raise :class:`JobStopped` on a Stop request or when no page has touched the heartbeat lately."""
        if (self.folder / STOP_FILE).exists():
            raise JobStopped("stopped")
        try:
            age = time.time() - (self.folder / HEARTBEAT_FILE).stat().st_mtime
        except OSError:
            age = float("inf")
        if age > self.stale_s:
            raise JobStopped(f"no page watching (heartbeat {age:.0f} s old)")

    def report(self, part: str, done: int, total: int, unit: str, units_done: float | None = None) -> None:
        """Part ``part`` is at ``done`` of ``total`` ``unit``; ``units_done``: its work so far in units."""
        if self.work_started is None:
            self.work_started = time.perf_counter()
        entry = self.status["parts"][part]
        entry.update(state="running", done=done, total=total, unit=unit)
        fraction = done / total if total else 0.0
        current = units_done if units_done is not None else fraction * self.estimate[part]
        done_units = sum(self.spent.values()) + current
        remaining = sum(self.estimate[p] for p in self.estimate if p not in self.spent) - current
        elapsed = time.perf_counter() - self.work_started
        rate = elapsed / done_units if done_units > 0 else None
        self.status["eta_s"] = round(rate * max(remaining, 0.0), 1) if rate is not None else None
        self.write()
        self.check()

    def finish(self, part: str, state: str, units: float | None = None, **extra: Any) -> None:
        self.spent[part] = units if units is not None else self.estimate[part]
        self.status["parts"][part].update(state=state, **extra)
        self.write()

    def write(self, **changes: Any) -> None:
        self.status.update(changes, updated=time.time())
        write_json(self.folder / STATUS_FILE, self.status)


def _estimates(encoder: Encoder, request: AttributionRequest, parts: list[str]) -> dict[str, float]:
    """Token-forward units each part costs, from the texts' token counts (a backward counts two forwards)."""
    lengths = [len(item.input_ids) for item in encoder.prepare([request.text_a, request.text_b])]
    n_sides = sum(p.startswith("ig_") for p in parts)
    ig = 3 * request.max_steps * sum(lengths)
    pairs = n_sides * sum((request.pair_steps * (n - 3) + 1) * n for n in lengths)
    variants = (2 * request.k + 1) * (5 + request.random_draws)  # each order's deletion and insertion texts
    # Each order's variants are about as long as the text; base and adapter share the trunk (1.5 forwards).
    curves = n_sides * (3 * request.curve_ig_steps * sum(lengths) + 6 * sum(lengths)) + 1.5 * variants * sum(lengths)
    return {p: float(ig if p.startswith("ig_") else pairs if p == "pairs" else curves) for p in parts}


def run_job(
    folder: str | Path,
    request: AttributionRequest,
    encoder: Encoder | None = None,
    stale_s: float = STALE_S,
) -> dict[str, Any]:
    """Run (or finish) the job for ``request`` in ``folder``, in this process; its final status.

    Parts whose result file exists are cache hits and are not run again. A Stop request or a stale heartbeat ends
    the work at the next progress report (state ``stopped``, the reason in ``message``); a user-fixable error
    ends it as ``failed`` with its message. ``encoder``: one already loaded for the request (default: load it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / REQUEST_FILE, request.to_dict())
    descriptor = lock_folder(folder, "attribution job folder")
    try:
        return _run_locked(folder, request, encoder, stale_s)
    finally:
        os.close(descriptor)


def _run_locked(folder: Path, request: AttributionRequest, encoder: Encoder | None, stale_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    if encoder is None:
        write_json(folder / STATUS_FILE, {"state": "loading", "updated": time.time(), "parts": {}, "pid": os.getpid()})
        encoder = Encoder(request.model, adapter=request.adapter, device=request.device).with_setting(
            request.setting, precision="fp32"
        )
    compared = sides(encoder.loaded.has_adapter)
    parts = request.parts(encoder.loaded.has_adapter)
    progress = _Progress(folder, _estimates(encoder, request, parts), stale_s)
    progress.status["load_seconds"] = round(time.perf_counter() - started, 1)
    try:
        progress.check()
        for part in parts:
            if load_part(folder, part) is not None:
                progress.finish(part, "cached")
                continue
            part_started = time.perf_counter()
            if part.startswith("ig_"):
                result, units = _ig_part(encoder, request, part, compared, progress)
            elif part == "pairs":
                result, units = _pairs_part(encoder, request, compared, progress), None
            else:
                result, units = _curves_part(encoder, request, progress), None
            write_json(folder / f"{part}.json", result)
            progress.finish(part, "done", units, seconds=round(time.perf_counter() - part_started, 2))
            if part.startswith("ig_") and not _gate(folder, request, parts, progress):
                return progress.status
        _gate(folder, request, parts, progress)
        progress.write(state="finished", eta_s=0.0, seconds=round(time.perf_counter() - started, 2))
    except JobStopped as stop:
        progress.write(state="stopped", message=str(stop))
    except LensError as error:
        progress.write(state="failed", message=str(error))
    return progress.status


def _gate(folder: Path, request: AttributionRequest, parts: list[str], progress: _Progress) -> bool:
    """Record the IG convergence of the finished IG parts; False when the job must hold here."""
    deltas = {}
    for part in (p for p in parts if p.startswith("ig_")):
        data = load_part(folder, part)
        if data is not None:
            deltas[part.removeprefix("ig_")] = {
                "a": data["a"]["relative_delta"],
                "b": data["b"]["relative_delta"],
                "steps_a": data["a"]["steps"],
                "steps_b": data["b"]["steps"],
            }
    failed = {label: d for label, d in deltas.items() if max(d["a"], d["b"]) > request.tolerance}
    progress.status["ig"] = {"converged": not failed, "deltas": deltas, "tolerance": request.tolerance}
    later = [p for p in parts if not p.startswith("ig_")]
    if failed and request.after_unconverged == "stop" and all(load_part(folder, p) is None for p in later):
        for part in later:
            progress.status["parts"][part]["state"] = "held"
        progress.write(
            state="held",
            eta_s=None,
            message=f"IG did not converge ({', '.join(failed)}): token pairs and curves were not run.",
        )
        return False
    if failed:
        progress.status["ig"]["later_parts_unreliable"] = True
    progress.write()
    return True


def _ig_part(
    encoder: Encoder, request: AttributionRequest, part: str, compared: dict[str, bool], progress: _Progress
) -> tuple[dict[str, Any], float]:
    """IG of the cosine for one setting, both texts; progress in IG steps against the cap of both texts."""
    use_adapter = compared[part.removeprefix("ig_")]
    total = 2 * request.max_steps
    lengths = [len(item.input_ids) for item in encoder.prepare([request.text_a, request.text_b])]
    per_step = 3 * sum(lengths) / 2
    taken = {"steps": 0}

    def on_steps(steps: int) -> None:
        taken["steps"] = steps
        # Both texts' segments go through together: ``steps`` is the furthest text's count.
        progress.report(part, min(2 * steps, total), total, "IG steps (cap, both texts)", 2 * steps * per_step)

    # A quarter of the cap per first segment leaves room to halve the segments that miss their error share.
    n_steps = max(2, min(16, request.max_steps // 4))
    attributor = Attributor(
        encoder, n_steps=n_steps, max_steps=request.max_steps, tolerance=request.tolerance, on_steps=on_steps
    )
    progress.report(part, 0, total, "IG steps (cap, both texts)", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deltas go into the status and the page
        result = attributor.similarity(request.text_a, request.text_b, use_adapter=use_adapter)
    return result.to_dict(), (result.a.steps + result.b.steps) * per_step


def _pairs_part(
    encoder: Encoder, request: AttributionRequest, compared: dict[str, bool], progress: _Progress
) -> dict[str, Any]:
    """Token-pair matrices per setting; one progress report per text and setting."""
    total = 2 * len(compared)
    progress.report("pairs", 0, total, "texts x settings")
    done = 0
    out = {}
    for label, use_adapter in compared.items():
        for text in (request.text_a, request.text_b):
            text_jacobian(encoder, text, use_adapter, request.pair_steps)  # kept in its cache for pair_matrix
            done += 1
            progress.report("pairs", done, total, "texts x settings")
        out[label] = pair_matrix(encoder, request.text_a, request.text_b, use_adapter, request.pair_steps).to_dict()
    return out


def _curves_part(encoder: Encoder, request: AttributionRequest, progress: _Progress) -> dict[str, Any]:
    """Deletion and insertion curves of each text (its partner: the other), every method and the random floor."""
    progress.report("curves", 0, 2, "texts")
    out: dict[str, Any] = {}
    pairs = (("A", request.text_a, request.text_b), ("B", request.text_b, request.text_a))
    for index, (name, text, partner) in enumerate(pairs):
        out[name] = pair_curves(
            encoder,
            text,
            partner,
            name,
            k=request.k,
            random_draws=request.random_draws,
            peak_layer=request.peak_layer,
            ig_max_steps=request.curve_ig_steps,
            tolerance=request.tolerance,
        )
        progress.report("curves", index + 1, 2, "texts")
    return out


# ----- rebuilding results for a page


def attribution_from_dict(data: dict[str, Any]) -> Attribution:
    """An :class:`Attribution` from its ``to_dict``."""
    fields = {name: data[name] for name in Attribution.__dataclass_fields__}
    return Attribution(**{**fields, "scores": np.asarray(data["scores"], dtype=np.float64)})


def similarity_from_dict(data: dict[str, Any]) -> SimilarityAttribution:
    return SimilarityAttribution(data["cosine"], attribution_from_dict(data["a"]), attribution_from_dict(data["b"]))


def pair_matrix_from_dict(data: dict[str, Any]) -> PairMatrix:
    return PairMatrix(
        text_a=data["text_a"],
        text_b=data["text_b"],
        tokens_a=data["tokens_a"],
        tokens_b=data["tokens_b"],
        matrix=np.asarray(data["matrix"], dtype=np.float64),
        a_with_blank_b=np.asarray(data["a_with_blank_b"], dtype=np.float64),
        b_with_blank_a=np.asarray(data["b_with_blank_a"], dtype=np.float64),
        similarity=data["similarity"],
        baseline_similarity=data["baseline_similarity"],
        steps=data["steps"],
        seconds=data["seconds"],
    )


# ----- the process


def _watchdog(folder: Path, stale_s: float, on_stop: Callable[[str], None]) -> None:
    """Every second: a Stop request or a stale heartbeat ends the process (between two progress reports too)."""
    while True:
        time.sleep(1.0)
        reason = None
        if (folder / STOP_FILE).exists():
            reason = "stopped"
        else:
            try:
                age = time.time() - (folder / HEARTBEAT_FILE).stat().st_mtime
            except OSError:
                age = float("inf")
            if age > stale_s:
                reason = f"no page watching (heartbeat {age:.0f} s old)"
        if reason is not None:
            on_stop(reason)
            return


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.faithfulness.job FOLDER``: run the job whose ``request.json`` is in FOLDER."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m analysis.faithfulness.job FOLDER  (a folder holding request.json)")
        return 0 if args and args[0] in ("-h", "--help") else 2
    folder = Path(args[0])
    try:
        request = AttributionRequest.from_dict(json.loads((folder / REQUEST_FILE).read_text(encoding="utf-8")))
    except (OSError, ValueError, LensError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def end(reason: str) -> None:
        status = read_status(folder) or {}
        write_json(folder / STATUS_FILE, {**status, "state": "stopped", "message": reason, "updated": time.time()})
        os._exit(0)  # the work is mid-pass in the main thread; finished parts are already on disk

    threading.Thread(target=_watchdog, args=(folder, STALE_S, end), daemon=True).start()
    status = run_job(folder, request)
    return 0 if status.get("state") in ("finished", "held", "stopped") else 1


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
