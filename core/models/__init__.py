"""Models: which weights a name means, and the adapters on top of them.

Owns the registry of packaged models (GGUF conversion into a cached safetensors folder, hub ids, local
folders), loading with the right precision, attention kernel and device, adapter folders (metadata, cards, weight
hashes), and architecture discovery (``core.models.architecture``: decoder layers, attention, final norm, LM head,
default LoRA targets of any decoder family).
``python -m core.models`` prepares and lists models.
May import: ``core.runtime``.
"""
