"""Export: an adapter (or a base model in a setting) as a sentence-transformers folder.

Owns the folder writer and its card (``python -m core.export``) and ``module.py``, the file copied into
every exported folder (it must import nothing from this project).
May import: ``core.runtime``, ``core.models``, ``core.encoding`` (the setting and the encoder it verifies against).
"""
