"""Benchmarks: ``python -m core.bench`` (engine speed, methods, the shared trunk), ``--check`` (the key paths on a
device, pass or fail) and ``--big`` (memory and time on random-weight models built from published configs).

Owns ``cli`` (the command and the engine measurements), ``check`` (the device check) and ``big`` (big-model costs
and the "what fits where" table). Figures are printed and written to results, never asserted in tests.
May import: ``core``, ``analysis`` (the benchmark times the analysis paths too: attribution, attention, the grid).
"""
