import pytest

from ftkit.events import EventBus, StopFlag


def test_subscribers_get_payloads_in_order_and_can_leave():
    bus, seen = EventBus(), []
    first = bus.on("log", lambda p: seen.append(("a", p["step"])))
    bus.on("log", lambda p: seen.append(("b", p["step"])))
    bus.emit("log", {"step": 1})
    bus.off("log", first)
    bus.emit("log", {"step": 2})
    bus.emit("eval", {"step": 2})  # nobody listens: nothing happens
    assert seen == [("a", 1), ("b", 1), ("b", 2)]


def test_a_broken_subscriber_is_removed_and_does_not_stop_the_others(capsys):
    bus, seen = EventBus(), []
    bus.on("log", lambda p: 1 / 0)
    bus.on("log", seen.append)
    bus.emit("log", {"step": 1})
    bus.emit("log", {"step": 2})
    assert seen == [{"step": 1}, {"step": 2}]
    assert capsys.readouterr().err.count("ZeroDivisionError") == 1


def test_unknown_event_names_are_refused_and_the_stop_flag_flips():
    with pytest.raises(ValueError, match="unknown event 'lgo'; events are: start, log, eval"):
        EventBus().on("lgo", print)
    flag = StopFlag()
    assert not flag
    flag.set()
    assert flag
