from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from ftkit.training.events import EventBus, EventCallback, LossBar, StopFlag


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


def _callback_at(callback, step, max_steps, stop=False):
    """One step end of ``callback`` at ``step`` of ``max_steps``; its control."""
    if stop:
        callback.stop.set()
    control = TrainerControl()
    callback.on_step_end(SimpleNamespace(device="cpu"), TrainerState(global_step=step, max_steps=max_steps), control)
    return control


def _begun(max_seconds):
    callback = EventCallback(EventBus(), StopFlag(), "run", max_seconds=max_seconds)
    callback.on_train_begin(SimpleNamespace(device="cpu"), TrainerState(max_steps=40), TrainerControl())
    return callback


def test_the_time_budget_names_itself_only_when_it_cut_the_planned_steps_short():
    over = _begun(max_seconds=1e-9)
    control = _callback_at(over, 20, 40)
    assert control.should_training_stop and control.should_save and over.ended_by == "time budget"
    assert not over.stop  # the run ends completed, not stopped

    at_the_end = _begun(max_seconds=1e-9)
    assert _callback_at(at_the_end, 40, 40).should_training_stop and at_the_end.ended_by is None

    asked = _begun(max_seconds=1e-9)  # a stop asked in the same step names itself instead
    assert _callback_at(asked, 20, 40, stop=True).should_training_stop and asked.ended_by is None

    in_time = _begun(max_seconds=3600)
    assert not _callback_at(in_time, 20, 40).should_training_stop and in_time.ended_by is None

    over.on_train_begin(SimpleNamespace(device="cpu"), TrainerState(max_steps=40), TrainerControl())
    assert over.ended_by is None  # each stretch (a resume) starts without one


def test_the_closing_summary_is_kept_for_the_end_event_and_not_sent_as_a_log():
    callback, seen = _begun(max_seconds=0), []
    callback.bus.on("log", seen.append)
    summary = {"train_runtime": 1.5, "train_samples_per_second": 10.0, "total_flos": 1.0, "train_loss": 0.25}
    callback.on_log(None, TrainerState(global_step=4, max_steps=4), None, logs=summary)
    assert seen == [] and callback.summary == {"train_loss": 0.25, "train_runtime": 1.5}


def test_the_loss_bar_puts_the_loss_in_its_postfix_and_prints_no_log_dict(capsys):
    bar, args, control = LossBar(), SimpleNamespace(), TrainerControl()
    state = TrainerState(max_steps=3, global_step=0)
    bar.on_train_begin(args, state, control)
    for step, logs in [(1, {"loss": 0.3362, "grad_norm": 1.2, "learning_rate": 0.001}),
                       (2, {"eval_loss": 0.5, "eval_runtime": 0.1}),
                       (3, {"train_runtime": 1.5, "train_loss": 0.3, "total_flos": 1.0})]:
        state.global_step = step
        bar.on_step_end(args, state, control)
        bar.on_log(args, state, control, logs=logs)
        if step == 2:
            assert bar.training_bar.postfix == "loss=0.3362, eval loss=0.5"
    bar.on_train_end(args, state, control)
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "3/3" in shown and "loss=0.3362" in shown  # the bar, with the loss
    for raw in ("'loss':", "grad_norm", "eval_runtime", "train_runtime", "total_flos"):
        assert raw not in shown, raw


def test_the_sample_callback_answers_at_step_0_every_n_steps_and_at_a_last_step_between(monkeypatch):
    from ftkit.training import samples
    from ftkit.training.callbacks import SampleCallback

    monkeypatch.setattr(samples, "sample_answers",
                        lambda model, tok, rows, step: {"step": step, "seconds": 0.5, "rows": [model]})
    bus, seen = EventBus(), []
    bus.on("sample", seen.append)
    args = SimpleNamespace(device="cpu", load_best_model_at_end=False)

    def train(start, last, every=2):
        callback = SampleCallback(bus, "tok", ["row"], every)
        state = TrainerState(global_step=start, max_steps=last)
        callback.on_train_begin(args, state, TrainerControl(), model="m")
        for step in range(start + 1, last + 1):
            state.global_step = step
            callback.on_step_end(args, state, TrainerControl(), model="m")
        callback.on_train_end(args, state, TrainerControl(), model="m")
        return callback

    callback = train(0, 5)
    assert [e["step"] for e in seen] == [0, 2, 4, 5] and callback.seconds == 2.0 and seen[0]["rows"] == ["m"]
    seen.clear()
    train(2, 4)  # a resumed stretch: step 2 was answered before it stopped
    assert [e["step"] for e in seen] == [4]
