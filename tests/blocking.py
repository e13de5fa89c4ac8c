"""Calls that must not block: a FIFO opened for reading waits for a writer, forever."""

from __future__ import annotations

import threading


def within(seconds: float, fn, *args):
    """``fn(*args)``'s result or exception, failing the test if it takes longer (a FIFO opened for
    reading blocks until a writer comes: the thread is a daemon, so a hang cannot hold pytest)."""
    out = {}

    def call():
        try:
            out["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            out["error"] = err

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{fn.__name__} blocked for more than {seconds} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")
