import math

from ftkit.training.curves import read_curves
from ftkit.training.sft import SFTSettings
from ftkit.widgets import TrainPanel, train_panel

from widget_helpers import ROWS, find_button, text

PAIRS = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "billing" if r["label"] != "billing"
          else "account"} for r in ROWS]
FAST = dict(batch_size=4, logging_steps=1, save_steps=100, learning_rate=1e-2)


def test_the_form_comes_from_the_settings_with_help_as_tooltip_and_device_defaults(tiny, tmp_path):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=ROWS, runs_root=tmp_path)
    assert "ftkit-train-panel" in panel._dom_classes
    control = panel.form._controls["learning_rate"]
    assert control.tooltip == SFTSettings.__dataclass_fields__["learning_rate"].metadata["help"]
    s = panel.settings
    assert (s.batch_size, s.logging_steps, s.max_minutes) == (4, 1, 5.0)  # CPU defaults
    panel.set(max_steps=7, lora={"r": 4}, trl={"warmup_ratio": 0.1})
    s = panel.settings
    assert (s.max_steps, s.lora.r, s.trl) == (7, 4, {"warmup_ratio": 0.1})


def test_sft_trains_in_a_thread_charts_every_logged_step_and_stops(tiny, tmp_path):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=ROWS, eval=ROWS[:4], runs_root=tmp_path)
    panel.set(max_steps=50, eval_steps=1, **FAST)
    assert "[[order_status<|im_end|>" in panel.preflight() and "Pre-flight check" in text(panel)
    # In the panel the trained tokens are highlighted, the prompt dimmed, the data escaped.
    shown = panel._preflight_html.value
    assert "<mark class='ftkit-trained' style='background:#fff3a3'>order_status&lt;|im_end|&gt;" in shown
    assert "<span class='ftkit-context'" in shown and "[[" not in shown
    stop = find_button(panel, css="ftkit-stop")
    panel.bus.on("log", lambda e: stop.click() if e["step"] == 2 else None)
    find_button(panel, css="ftkit-start").click()
    run = panel.wait(timeout=120)
    assert run is panel.run and run.status["status"] == "stopped" and panel.status == "stopped"
    logs, evals = run.events("log"), run.events("eval")
    steps = [e["step"] for e in logs]
    assert steps[:2] == [1, 2] and run.status["step"] == steps[-1] < 50
    traces = {t.name: t for t in panel.figure.data}
    assert list(traces["train loss"].x) == steps  # one point per logged step
    assert list(traces["train loss"].y) == [e["loss"] for e in logs]
    assert list(traces["eval loss"].x) == [e["step"] for e in evals] and evals
    assert len(traces["learning rate"].x) == len(traces["grad norm"].x) == len(steps)
    assert panel._progress.value == steps[-1] and panel._progress.max == 50
    shown = text(panel)
    assert f"stopped on request at step {steps[-1]} of 50 in " in shown and run.id in shown and "training loss" in shown
    assert not find_button(panel, css="ftkit-start").disabled and stop.disabled


def test_a_run_the_time_budget_ended_says_so_and_the_console_stays_quiet(tiny, tmp_path, capfd):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=ROWS, runs_root=tmp_path)
    panel.set(max_steps=50, max_minutes=1e-5, **FAST)  # 0.6 ms: over after the first step
    capfd.readouterr()
    panel.start()
    run = panel.wait(timeout=120)
    step = run.status["step"]
    assert run.status["status"] == panel.status == "completed" and step < 50  # completed, as before
    assert run.status["ended_by"] == "time budget"
    assert panel._progress_text == f"stopped by the time budget at step {step} of 50"
    assert f"stopped by the time budget at step {step} of 50 in " in text(panel._messages)
    out, err = capfd.readouterr()  # the panel's bar shows the steps: no text bar, no log dicts
    assert out == "" and "%|" not in err and "'loss':" not in err


def test_dpo_charts_reward_margins_and_accuracies_throttled_but_complete(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=PAIRS, method="dpo", runs_root=tmp_path)
    panel.set(max_steps=2, **FAST)
    check = panel.preflight()
    assert "note: 8 preference pairs" in check and "chosen: [[order_status]]" in check
    assert "<mark class='ftkit-trained'" in panel._preflight_html.value
    monkeypatch.setattr(train_panel, "THROTTLE_S", 3600)  # no redraw between the first and the last
    draws = []
    batch_update = type(panel.figure).batch_update

    def counting(figure):
        draws.append(len(figure.data[0].x))
        return batch_update(figure)

    monkeypatch.setattr(type(panel.figure), "batch_update", counting)
    panel.start()
    run = panel.wait(timeout=120)
    assert run.status["status"] == "completed" and run.config["kind"] == "dpo"
    assert draws == [0, 0]  # the reset at Start, then nothing until the final flush ...
    traces = {t.name: t for t in panel.figure.data}
    assert list(traces["reward margin"].x) == list(traces["reward accuracy"].x) == [1, 2]  # ... the end flushed


def test_errors_show_in_the_panel_and_it_stays_usable(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=ROWS, runs_root=tmp_path)
    panel.set(max_steps=2, max_length=4, **FAST)
    panel.start()  # the pre-flight check refuses: truncation leaves nothing to learn
    assert panel.status == "failed" and panel.run is None and panel._thread is None
    short = text(panel._messages).split("<details>")[0]  # the message above the folded details
    assert "Training did not start: pre-flight check failed:" in short
    assert "no trained tokens left after truncation to max_length=4" in short

    from trl import SFTTrainer

    def broken(self, *args, **kwargs):
        raise RuntimeError("the step broke")

    monkeypatch.setattr(SFTTrainer, "training_step", broken)
    panel.set(max_length=256)
    panel.start()
    assert panel.wait(timeout=120) is None and panel.status == "failed"
    assert "Training did not run to the end: the step broke" in text(panel)
    assert "<details>" in panel._messages.value  # the traceback, folded
    assert not find_button(panel, css="ftkit-start").disabled


def test_read_curves_names_overfitting_divergence_and_progress():
    logs = [{"step": s, "loss": 2.0 - 0.1 * s} for s in range(1, 9)]
    evals = [{"step": 2, "eval_loss": 1.5}, {"step": 4, "eval_loss": 1.6}, {"step": 6, "eval_loss": 1.7},
             {"step": 8, "eval_loss": 1.8}]
    assert read_curves(logs, evals).startswith("evaluation loss has risen for 3 evaluations: likely overfitting")
    assert read_curves(logs, evals[:2]).startswith("training loss is falling, but the last evaluation loss rose")
    assert read_curves(logs).startswith("training loss is falling (1.90 -> 1.20)")
    assert "too high" in read_curves([{"step": s, "loss": 1.0 + 0.2 * s} for s in range(1, 9)])
    assert "not a number" in read_curves([{"step": 1, "loss": math.nan}])
    dpo = [{"step": 1, "loss": 0.69, "rewards/accuracies": 0.5}, {"step": 2, "loss": 0.5, "rewards/accuracies": 0.75}]
    assert read_curves(dpo).endswith("the model prefers the chosen answer in 75% of the last pairs")


def test_resume_continues_a_stopped_run_in_the_same_record_with_its_own_settings(tiny, tmp_path):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=ROWS, runs_root=tmp_path)
    resume_button = find_button(panel, css="ftkit-resume")
    resume_button.click()  # nothing to resume yet: said in the panel
    assert "no run to resume" in text(panel._messages)
    panel.set(max_steps=6, **{**FAST, "save_steps": 1})
    stopper = panel.bus.on("log", lambda e: panel.stop() if e["step"] == 2 else None)
    panel.start()
    run = panel.wait(timeout=120)
    assert run.status["status"] == "stopped"
    stopped_at = run.status["step"]
    panel.set(max_steps=99, learning_rate=0.5)  # the form changed since: the run's own settings win
    panel.bus.off("log", stopper)
    resume_button.click()
    resumed = panel.wait(timeout=120)
    assert resumed.id == run.id and resumed.status["status"] == "completed" and resumed.status["step"] == 6
    assert panel.settings.max_steps == 6 and panel.settings.learning_rate == FAST["learning_rate"]
    assert [e["step"] for e in resumed.events("log")] == list(range(1, 7))
    train_trace = next(t for t in panel.figure.data if t.name == "train loss")
    assert list(train_trace.x) == list(range(1, 7))  # the curve from step 1, not from the resume
    assert stopped_at < 6
    resume_button.click()
    assert "is completed; only a stopped, interrupted or failed run resumes" in text(panel._messages)


def test_conversations_train_from_the_panel_with_every_answer_highlighted(tiny, tmp_path):
    model, tok = tiny
    chat = [{"messages": [{"role": "user", "content": "Hi, it's Ann"}, {"role": "assistant", "content": "Hi Ann!"},
                          {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye Ann"}]}] * 4
    panel = TrainPanel(model, tok, train=chat, runs_root=tmp_path)
    panel.set(max_steps=2, **FAST)
    panel.preflight()
    shown = panel._preflight_html.value
    assert "<mark class='ftkit-trained' style='background:#fff3a3'>Hi Ann!&lt;|im_end|&gt;" in shown
    assert "<mark class='ftkit-trained' style='background:#fff3a3'>Bye Ann&lt;|im_end|&gt;" in shown
    panel.start()
    run = panel.wait(timeout=120)
    assert run.status["status"] == "completed" and run.events("log")


def test_the_how_much_data_button_trains_nested_sizes_and_draws_the_curve_against_the_prompt(tiny, tmp_path):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=ROWS, eval=ROWS[:4], runs_root=tmp_path)
    panel.set(max_steps=1, **FAST)
    points = []
    panel.bus.on("curve", points.append)
    panel.learning_curve(sizes=(2, None), best_prompt=("2-shot", 0.5, 0.25, 0.75), background=True)
    panel.wait(timeout=120)
    assert panel.error is None and panel.status == "completed"
    curve = panel.curve
    assert list(curve.table["rows"]) == [2, len(ROWS)] and [p["rows"] for p in points] == [2, len(ROWS)]
    assert [run.config["train_rows"] for run in curve.runs] == [2, len(ROWS)]
    assert all(run.evaluation["test_rows"] == 4 for run in curve.runs)  # each scored on the panel's eval rows
    trace = panel.curve_figure.data[0]
    assert list(trace.x) == [2, len(ROWS)] and list(trace.y) == list(curve.table["score"])
    assert panel.curve_figure.layout.shapes  # the best prompt's band
    assert "learning curve: 2 sizes trained and scored" in text(panel)
    # A DPO panel has no such action, and a panel without held-out rows says what to pass.
    assert not any(getattr(b, "_dom_classes", ()) and "ftkit-curve" in b._dom_classes
                   for b in TrainPanel(model, tok, train=PAIRS, method="dpo", runs_root=tmp_path).children[3].children)
    import pytest

    with pytest.raises(ValueError, match="pass eval="):
        TrainPanel(model, tok, train=ROWS, runs_root=tmp_path).learning_curve()


def test_the_answers_table_fills_in_from_sample_events_and_escapes_the_answers(tiny, tmp_path):
    model, tok = tiny
    held_out = [{"prompt": "<script>alert(1)</script> where is it?", "completion": "order_status",
                 "label": "order_status"}, *ROWS[1:4]]
    panel = TrainPanel(model, tok, train=ROWS, eval=held_out, runs_root=tmp_path)
    # On by default with held-out rows: 2 epochs of 8 rows in steps of 4 are 4 steps, one sampling a step.
    assert (panel.settings.sample_every, panel.settings.sample_rows) == (1, 3)
    panel.set(max_steps=16, **FAST)
    seen = []
    panel.bus.on("sample", seen.append)
    panel.start()  # the form's sample_every was the panel's own: chosen again for 16 steps
    run = panel.wait(timeout=120)
    assert run.status["status"] == "completed" and panel.settings.sample_every == 2
    assert [e["step"] for e in run.events("sample")] == [e["step"] for e in seen] == list(range(0, 17, 2))
    shown = panel._samples_html.value
    assert "Answers to held-out rows as it trains" in shown and shown.count("<th style") == 3 + 9
    assert "step 0</th>" in shown and "step 16</th>" in shown
    assert "<script>" not in shown and "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert shown.count("<tr>") == 1 + 3  # the header and one line per held-out row

    # Driven by events alone: a changed answer is highlighted, a matching one marked.
    panel.bus.emit("start", {"step": 0, "max_steps": 2})
    panel._reset_charts()
    rows = lambda *answers: [{"index": i, "prompt": f"q{i}", "reference": "billing", "answer": a,
                              "match": a == "billing"} for i, a in enumerate(answers)]
    panel.bus.emit("sample", {"step": 0, "rows": rows("<b>x</b>", "billing")})
    assert "ftkit-changed" not in panel._samples_html.value and panel._samples_html.value.count("ftkit-match") == 1
    panel.bus.emit("sample", {"step": 1, "rows": rows("billing", "billing")})
    shown = panel._samples_html.value
    assert shown.count("ftkit-changed") == 1 and shown.count("ftkit-match") == 3 and "&lt;b&gt;x&lt;/b&gt;" in shown

    panel.set(sample_every=5)  # a value the user chose is kept
    panel.set(max_steps=2)
    panel.start()
    run = panel.wait(timeout=120)
    assert panel.settings.sample_every == 5 and [e["step"] for e in run.events("sample")] == [0, 2]
    # Without held-out rows there is nothing to answer: off.
    assert TrainPanel(model, tok, train=ROWS, runs_root=tmp_path).settings.sample_every == 0


def test_rows_to_answer_and_a_data_record_go_to_the_run_without_an_evaluation_loss(tiny, tmp_path):
    """``samples=`` answers held-out rows without asking for an evaluation loss; ``data_record=``
    is kept with the run it starts."""
    from ftkit.data.provenance import data_record

    model, tok = tiny
    record = data_record("support_routing", test_size=0.2, seed=0, stratify_by="label", limit=4)
    panel = TrainPanel(model, tok, train=ROWS, samples=ROWS[:3], runs_root=tmp_path, data_record=record)
    assert panel.eval_data is None and panel.settings.sample_every > 0
    panel.set(max_steps=2, sample_every=2, **FAST)
    panel.start()
    run = panel.wait(timeout=120)
    assert [e["step"] for e in run.events("sample")] == [0, 2] and run.events("eval") == []
    assert run.data["split"] == record["split"] and run.data["source"]["example"] == "support_routing"
