"""Where figures leave Python: PNG bytes and the HTML/PNG files of a report.

``write_figures`` is the one function that touches disk: HTML always, PNG where kaleido can render
(kaleido 1.x drives a Chrome/Chromium; offline it cannot download one, so it needs Debian's chromium).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from core.runtime.browser import configure_png_export

__all__ = ["png_bytes", "write_figures"]


def png_bytes(figure: go.Figure, scale: float = 1) -> bytes:
    """The figure as PNG, rendered by kaleido in Debian's chromium (see core.runtime.browser)."""
    configure_png_export()
    return figure.to_image(format="png", scale=scale)


def write_figures(figures: Mapping[str, go.Figure], out_dir: str | Path, png: bool = True) -> dict[str, Any]:
    """Write each figure as HTML (plotly.min.js written once beside them: opens offline) and PNG where kaleido works."""
    from plotly.offline import get_plotlyjs

    from core.runtime.files import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"html": [], "png": [], "png_error": None}
    # Every file is written atomically: a run killed while writing leaves the old file or none, never half of one.
    bundle, script = out / "plotly.min.js", get_plotlyjs()
    if not bundle.is_file() or bundle.stat().st_size != len(script.encode()):
        with atomic_write(bundle) as handle:
            handle.write(script)
    for stem, figure in figures.items():
        with atomic_write(out / f"{stem}.html") as handle:
            handle.write(figure.to_html(include_plotlyjs="directory"))
        written["html"].append(f"{stem}.html")
        if png and written["png_error"] is None:
            try:
                image = png_bytes(figure)
            except Exception as error:  # kaleido raises several types when Chrome is missing
                written["png_error"] = " ".join(str(error).split())[:200] or type(error).__name__
                continue
            with atomic_write(out / f"{stem}.png", "wb") as handle:
                handle.write(image)
            written["png"].append(f"{stem}.png")
    return written
