"""What the tests that drive real processes and Debian's Chromium share (web/e2e/dashboard_test.py,
deploy/container_tests.py): Chromium's flags, a poll with a timeout, a free-port check."""

import socket
import time

# Debian's Chromium, headless, with nothing that reaches out to the network on its own; never a downloaded browser.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def wait_until(what: str, check, timeout: float = 20.0, every: float = 0.2):
    """Polls `check` until it returns something truthy and returns that; after `timeout`, raises with the last
    failure or value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 - keep polling; report the last failure
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def port_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:`port` now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
