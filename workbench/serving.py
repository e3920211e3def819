"""Where the workbench listens, and what the user is told about it.

The workbench starts training jobs and reads files on this machine, so it listens on loopback only:
``workbench/.streamlit/config.toml`` sets ``server.address = 127.0.0.1`` and Streamlit reads that file (the main
script's own) however and from wherever ``streamlit run workbench/app.py`` is started. A user may choose another
address (``--server.address``, ``STREAMLIT_SERVER_ADDRESS``, a config file): the app then says so on every page.
Listening on every interface without anyone choosing it (the file was removed) is refused: no page runs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

__all__ = ["LOOPBACK", "Binding", "binding", "current_binding"]

LOOPBACK = "127.0.0.1"
_DEFAULT_WHERE = "<default>"  # what streamlit.config.get_where_defined answers for an option nobody set


@dataclass(frozen=True)
class Binding:
    """The server's listening address and who chose it.

    ``level`` is ``ok`` (loopback or a unix socket), ``warn`` (another address a user chose: reachable from other
    machines) or ``refuse`` (every interface, chosen by no one); ``message`` says which and how to change it.
    """

    address: str
    where: str
    level: Literal["ok", "warn", "refuse"]
    message: str

    def __post_init__(self) -> None:
        if self.level not in ("ok", "warn", "refuse"):
            raise ValueError(f"level must be ok, warn or refuse, not {self.level!r}")


def _is_loopback(address: str) -> bool:
    if address.startswith("unix://") or address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def binding(address: str | None, where: str) -> Binding:
    """Judge a listening ``address`` (Streamlit's ``server.address``; empty = every interface) set by ``where``."""
    address = (address or "").strip()
    if address and _is_loopback(address):
        return Binding(address, where, "ok", f"The workbench listens on {address} (this machine only).")
    restart = f"restart it with `streamlit run workbench/app.py --server.address {LOOPBACK}`"
    if not address and where == _DEFAULT_WHERE:
        return Binding(
            address,
            where,
            "refuse",
            "The workbench is listening on every network interface, which nobody chose (its own "
            f"workbench/.streamlit/config.toml, which binds it to {LOOPBACK}, was not read). It starts training jobs "
            f"and reads files, so it serves no page like this: {restart} (or `make run`). To share it on purpose, "
            "pass `--server.address 0.0.0.0` explicitly.",
        )
    shown = address or "every network interface"
    return Binding(
        address,
        where,
        "warn",
        f"The workbench listens on {shown} (chosen by {where}): anyone who can reach this machine can start "
        f"training jobs and read files through it. To keep it on this machine, {restart}.",
    )


def current_binding() -> Binding:
    """The running Streamlit server's binding (read from its configuration)."""
    from streamlit import config

    if config.get_option("global.appTest"):  # streamlit's AppTest runs the script with no server listening
        return Binding("", "AppTest", "ok", "No server: the script runs under streamlit's AppTest.")
    return binding(config.get_option("server.address"), config.get_where_defined("server.address"))
