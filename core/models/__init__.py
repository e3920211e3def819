"""Models: which weights a name means, and the adapters on top of them.

Owns the registry of packaged models (GGUF conversion into a cached safetensors folder, hub ids, local
folders), loading with the right precision and device, and adapter folders (metadata, cards, weight hashes).
``python -m core.models`` prepares and lists models.
May import: ``core.runtime``.
"""
