"""Plotly's PNG export with Debian's chromium: no browser download, works offline.

kaleido 1.x renders figures in a headless Chromium that choreographer finds, in this order
(``choreographer.browsers.chromium.Chromium.find_browser``): choreographer's own download (what
``kaleido_get_chrome`` / ``plotly_get_chrome`` fetch, which needs the internet); then, for Chrome,
Chromium, Edge, Brave and Vivaldi in turn, ``$BROWSER_PATH`` if set, else the browser's names on
``PATH`` (``chromium`` among them), else its usual paths (``/usr/bin/chromium`` among them). Without any,
``write_image`` raises "Kaleido requires Google Chrome to be installed".

So Debian's package (``apt-get install -y chromium``, which ``make test`` runs) is found as it is; this
module pins it through ``BROWSER_PATH`` so that a ``PATH`` without ``/usr/bin`` or another Chrome on it
does not change what renders. A ``BROWSER_PATH`` the user set wins. plotly.js comes from the plotly
package (no CDN); MathJax's CDN script fails fast offline and only LaTeX labels need it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = "apt-get install -y chromium   # or: make chromium"


def find_chromium() -> Path | None:
    """Debian's chromium if installed (``/usr/bin/chromium``, else ``chromium`` on PATH), or None."""
    if DEBIAN_CHROMIUM.is_file() and os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def configure_png_export() -> Path | None:
    """Point kaleido (plotly's ``write_image``/``to_image``) at Debian's chromium; returns the browser used.

    Sets ``BROWSER_PATH`` unless it is already set (then that path is returned). Returns None when no
    chromium is installed: PNG export then fails with kaleido's error; install it with :data:`INSTALL_HINT`.
    Cheap and idempotent: call it before the first export.
    """
    if os.environ.get("BROWSER_PATH"):
        return Path(os.environ["BROWSER_PATH"])
    chromium = find_chromium()
    if chromium is not None:
        os.environ["BROWSER_PATH"] = str(chromium)
    return chromium
