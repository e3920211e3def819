"""Where the workbench listens: loopback is fine, another chosen address is said, every interface by default refused."""

from __future__ import annotations

import pytest

from workbench.serving import binding


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "unix:///tmp/lens.sock"])
def test_loopback_is_served_quietly(address):
    assert binding(address, "/repo/workbench/.streamlit/config.toml").level == "ok"


@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.7", "::", "lens.example.org"])
def test_an_address_the_user_chose_is_served_with_a_plain_warning(address):
    served = binding(address, "environment variable")
    assert served.level == "warn"
    assert f"listens on {address} (chosen by environment variable)" in served.message
    assert "--server.address 127.0.0.1" in served.message


def test_every_interface_chosen_by_nobody_serves_no_page():
    served = binding(None, "<default>")
    assert served.level == "refuse" and "every network interface, which nobody chose" in served.message
    assert binding("", "command-line").level == "warn"  # an empty address given on purpose is a choice
    with pytest.raises(ValueError, match="level"):
        type(served)("x", "y", "loud", "z")
