import html

import pytest

from ftkit import check_data, load_data
from ftkit.prompts import zero_shot
from ftkit.training.sft import SFTSettings, train_sft
from ftkit.widgets import ComparePanel
from ftkit.widgets import compare_panel as module

from widget_helpers import LABELS, ROWS, find_button, text

TEST = ROWS[:4]
TEMPLATES = {"plain": zero_shot(), "route": zero_shot("Route this: {prompt}")}


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, tmp_path_factory):
    from ftkit import load_model

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    return train_sft(model, tok, ROWS, template=TEMPLATES["route"], runs_root=tmp_path_factory.mktemp("runs"),
                     config=SFTSettings(max_steps=1, batch_size=4, save_steps=100))


def test_variants_and_runs_run_on_the_same_rows_with_charts_and_a_row_per_example(talkative, sft_run, monkeypatch):
    model, tok = talkative
    received = []

    def spy(variants, rows, metrics, **kw):
        received.append(([(v.name, v.adapter, v.template) for v in variants], rows))
        return evaluate(variants, rows, metrics, **kw)

    evaluate = module.evaluate
    monkeypatch.setattr(module, "evaluate", spy)
    panel = ComparePanel(model, tok, dataset=TEST, templates=TEMPLATES, runs=[sft_run], max_new_tokens=3)
    assert "ftkit-compare-panel" in panel._dom_classes and panel.labels == sorted({r["label"] for r in TEST})
    find_button(panel, css="ftkit-compare").click()
    [(variants, rows)] = received
    names = ["plain", "route", sft_run.id]
    assert [v[0] for v in variants] == names and rows == TEST
    assert variants[0][1] is False and variants[2][2] == TEMPLATES["route"]  # a run keeps its template
    result = panel.result
    assert len(result.table) == len(TEST) and panel.visible_rows == [0, 1, 2, 3]
    assert len(panel._grid.children) == (len(TEST) + 1) * (2 + len(names))  # header + a row per example
    traces = {t.name: t for t in panel.figure.data}
    assert list(traces["exact_match"].x) == names and len(traces["exact_match"].error_y.array) == 3
    assert list(traces["training minutes"].y)[:2] == [0, 0] and traces["training minutes"].y[2] > 0
    assert {"batched (s)", "one at a time (s)", "prompt tokens", "new tokens", "label_accuracy"} <= set(traces)
    # Latency: every ticked variant timed in the one phase of that one evaluate call, each bar the
    # median with its 95% interval, not drawn as a score.
    timing = result.timing
    assert timing.variants == names and "latency_s" not in traces and "latency_1_s" not in traces
    for label, column in (("batched (s)", "latency_s"), ("one at a time (s)", "latency_1_s")):
        summary = result.summary.loc[names]
        assert list(traces[label].y) == list(summary[column])
        assert list(traces[label].error_y.array) == list(summary[f"{column}_high"] - summary[column])
        assert list(traces[label].error_y.arrayminus) == list(summary[column] - summary[f"{column}_low"])
    shown = text(panel)
    for name in names[1:]:  # the paired latency difference from the first variant, in words
        for way in ("batched", "alone"):
            d = timing.difference(name, "plain", way)
            assert module._latency_words(d) in shown and f"{d.median:+.3f} s per request" in shown
    assert all(f"timing: {note}" in shown for note in timing.notes())  # how it was timed, and the load
    assert "sft, 1 steps" in text(panel) and "prompt only" in text(panel)
    assert f"{sft_run.id} vs plain on exact_match" in text(panel)  # paired comparison with the first
    record = sft_run.evaluation  # the run keeps its evaluation, as the pipeline's runs do
    assert record["variant"] == sft_run.id and record["test_rows"] == len(TEST)
    assert record["value"] == result.summary.loc[sft_run.id, "exact_match"]
    assert [r["variant"] for r in record["summary"]] == names
    # The verdict: the same advice object as the pipeline's and the report's, on these variants.
    from ftkit.evaluation.verdict import advise

    advice = advise(result, ["plain", "route"], {sft_run.id: sft_run})
    assert panel.advice.conclusion == advice.conclusion and panel.advice.reason == advice.reason
    verdict = html.escape(f"Verdict: {advice.conclusion}: {advice.reason}.")
    assert verdict in panel._verdict.value
    from ftkit.report import render_report  # the report of this result opens with the same verdict

    report = render_report(result=result, advice=panel.advice)
    assert verdict in report and report.index(verdict) < report.index("<h2>Summary</h2>")
    panel.select(["plain", "route"])
    panel.run()
    assert panel.advice is None and panel._verdict.value == ""  # no tuned variant, no verdict


def test_disagreement_filter_ratings_and_pairs_for_dpo(talkative, tmp_path):
    model, tok = talkative
    same = {"a": zero_shot(), "b": zero_shot(), "c": zero_shot("Route this: {prompt}")}
    length = {"length": lambda prediction, reference, row: len(prediction) / 10}  # a score that varies
    panel = ComparePanel(model, tok, dataset=TEST, templates=same, labels=LABELS, max_new_tokens=3,
                         metrics=length, disagreement=0.1, constrain_labels=False)  # free answers, to differ
    with pytest.raises(ValueError, match="run the comparison first"):
        panel.rate(0, "a", True)
    panel.select(["a", "b"])
    result = panel.run()
    assert list(result.scores) == ["a", "b"]
    panel.only_disagreements(True)
    assert panel.visible_rows == []  # the same prompt gives the same greedy answers
    panel.only_disagreements(False)
    assert len(panel.visible_rows) == len(TEST)

    panel.select(["a", "c"])
    result = panel.run()
    table = result.table
    panel.only_disagreements(True)
    gaps = [abs(a - c) for a, c in zip(result.column("a", "length"), result.column("c", "length"))]
    differ = [i for i, gap in enumerate(gaps) if gap > 0.1]  # scores apart by more than the threshold
    assert panel.visible_rows == differ and len(differ) >= 2
    assert all(table.at[i, "a: output"] != table.at[i, "c: output"] for i in differ)

    i, j = differ[0], differ[1]
    panel.rate(i, "a", up=True)
    panel.rate(i, "c", up=False)
    up, down = panel._thumbs[(i, "c")]
    assert down.button_style == "danger" and panel._thumbs[(i, "a")][0].button_style == "success"
    up.click()  # thumbs up on c replaces its thumbs down
    assert panel._ratings[(i, "c")] is True and up.button_style == "success" and down.button_style == ""
    up.click()  # a second click clears it
    assert (i, "c") not in panel._ratings
    down.click()
    panel.rate(j, "a", up=False)  # only a thumbs down: the reference is the chosen answer
    pairs = panel.pairs
    assert pairs == [
        {"prompt": TEST[i]["prompt"], "chosen": table.at[i, "a: output"], "rejected": table.at[i, "c: output"],
         "label": TEST[i]["label"]},
        {"prompt": TEST[j]["prompt"], "chosen": TEST[j]["completion"], "rejected": table.at[j, "a: output"],
         "label": TEST[j]["label"]},
    ]
    path = panel.save_pairs(tmp_path / "pairs.jsonl")
    assert check_data(path).shape == "preference"
    assert load_data(path, verbose=False).to_list() == pairs


def test_no_pairs_is_an_error_in_the_panel(talkative, tmp_path):
    model, tok = talkative
    panel = ComparePanel(model, tok, dataset=TEST, max_new_tokens=2)
    assert list(panel.templates) == ["zero-shot"]
    panel.run()
    with pytest.raises(ValueError, match="no preference pairs yet"):
        panel.save_pairs(tmp_path / "p.jsonl")
    find_button(panel, css="ftkit-save-pairs").click()
    assert "no preference pairs yet" in text(panel)


def test_a_panel_over_rows_that_are_not_held_out_records_nothing(talkative, sft_run):
    model, tok = talkative
    before = sft_run.evaluation
    ComparePanel(model, tok, dataset=ROWS[4:8], runs=[sft_run], max_new_tokens=3, record=False).run()
    assert sft_run.evaluation == before


def test_a_generation_task_gets_its_metrics_scores_in_the_table_and_long_texts_folded(talkative):
    model, tok = talkative
    rows = [{"prompt": "Where is my order? " + "It has been a long wait. " * 20, "completion": "in zone b"},
            {"prompt": "What is the return window?", "completion": "30 days"}]
    panel = ComparePanel(model, tok, dataset=rows, task="qa", max_new_tokens=3)
    assert list(panel.metrics) == ["token_f1", "squad_exact_match"] and panel.labels == []
    assert panel.templates["zero-shot"].instruction.startswith("Answer the question in a few words.")
    result = panel.run()
    assert result.metrics == ["token_f1", "squad_exact_match"]
    shown = text(panel._grid)
    assert "<details><summary>Where is my order? It has been a long wait." in shown  # folded, then in full
    assert "(" + str(len(rows[0]["prompt"])) + " characters)" in shown


CHAT = [{"id": "c1", "messages": [
    {"role": "user", "content": "Hi, it's Ann. Where is my order?"}, {"role": "assistant", "content": "Hi Ann, which order?"},
    {"role": "user", "content": "HC-10233"}, {"role": "assistant", "content": "It left today."}]}]


def test_chat_rows_are_compared_turn_by_turn_with_the_earlier_turns_folded(talkative, tmp_path):
    model, tok = talkative
    panel = ComparePanel(model, tok, dataset=CHAT, max_new_tokens=3)
    assert panel.task.name == "chat" and list(panel.metrics) == ["rouge_l"]
    result = panel.run()
    assert list(result.table["reference"]) == ["Hi Ann, which order?", "It left today."]
    shown = text(panel._grid)
    assert "<details><summary>2 earlier turns</summary>" in shown  # the second turn's conversation so far
    assert "assistant: Hi Ann, which order?" in shown
    panel.rate(1, "zero-shot", up=False)
    [pair] = panel.pairs  # only a thumbs down: the reference is preferred, with the turns before it
    assert pair["chosen"] == "It left today." and pair["prompt"] == "HC-10233"
    assert [m["content"] for m in pair["history"]] == ["Hi, it's Ann. Where is my order?", "Hi Ann, which order?",
                                                       "HC-10233"]


def test_flexibility_is_measured_for_the_compared_runs_served_merged_and_joins_the_verdict(talkative, sft_run):
    from accelerate.utils import is_peft_model

    model, tok = talkative
    panel = ComparePanel(model, tok, dataset=TEST, templates={"plain": zero_shot()}, runs=[sft_run], max_new_tokens=3)
    with pytest.raises(ValueError, match="compare prompt variants and at least one run first"):
        panel.measure_flexibility()
    panel.run()
    assert not is_peft_model(panel._run_model(sft_run)[0])  # a run is compared as served: merged
    probes = [{"prompt": "What is 2 + 2?", "completion": "4", "answers": ["4", "four"], "check": "answers",
               "skill": "arithmetic"}, {"prompt": "Say yes.", "completion": "yes", "check": "regex:(?i)yes\\W*",
                                        "skill": "format"}]
    find_button(panel, css="ftkit-flexibility")  # the action is a button too
    flex = panel.measure_flexibility(probes=probes, max_new_tokens=3)
    assert list(flex.result.summary.index) == ["base model", sft_run.id] and flex.result.summary["n"].iloc[0] == 2
    assert panel.advice.flexibility is flex
    assert flex.line(sft_run.id) in text(panel) and "flexibility: general-skills probes passed" in text(panel)


def test_a_prompt_baseline_given_as_a_variant_runs_as_given_beside_the_runs(talkative, tiny, sft_run):
    from ftkit.evaluation.evaluate import Variant

    model, tok = talkative
    other, other_tok = tiny  # stands in for a hosted endpoint: any Variant is asked as it is
    panel = ComparePanel(model, tok, dataset=TEST, runs={"LoRA SFT": sft_run}, max_new_tokens=3,
                         templates={"plain": zero_shot(), "hosted": Variant(other, other_tok, zero_shot("Q: {prompt}"))})
    variants = {v.name: v for v in panel.variants()}
    assert variants["hosted"].model is other and variants["hosted"].template.instruction == "Q: {prompt}"
    assert variants["hosted"].max_new_tokens == 3 and variants["plain"].model is model
    panel.run()
    assert list(panel.result.summary.index) == ["plain", "hosted", "LoRA SFT"]
    assert panel.advice.tuned == "LoRA SFT" and panel.advice.best_prompt in ("plain", "hosted")


def test_latency_bars_carry_their_intervals_and_a_difference_is_said_only_where_its_interval_excludes_0(
        talkative, monkeypatch):
    from ftkit.models.threads import Load
    from ftkit.generation.timing import Timing

    model, tok = talkative
    # Three rounds of two batches under a load that came and went: paired by batch, the load cancels.
    a = [0.10, 0.30, 0.12, 0.28, 0.11, 0.29]
    timing = Timing(batched={"a": a, "b": [t + 0.05 for t in a],  # b slower in every pair
                             "c": [t + d for t, d in zip(a, [0.01, -0.01, 0.02, -0.02, 0.01, -0.01])]},  # c: noise
                    alone={"a": [0.5, 0.6] * 3, "b": [0.5, 0.6] * 3, "c": [0.3, 0.4] * 3},  # c faster alone
                    rows=4, batch_size=2, rounds=3,
                    load=Load(others_busy=1.2, own_busy=0.8, cores=2, seconds=3.0))
    received = []

    def timed_as_given(variants, rows, metrics, **kw):  # the core's evaluate, with this timing phase
        received.append(([v.name for v in variants], kw.pop("timing_rounds")))
        return evaluate(variants, rows, metrics, timing_rounds=0, **kw).with_timing(timing)

    evaluate = module.evaluate
    monkeypatch.setattr(module, "evaluate", timed_as_given)
    templates = {"a": zero_shot(), "b": zero_shot("Route this: {prompt}"), "c": zero_shot("Q: {prompt}")}
    panel = ComparePanel(model, tok, dataset=TEST, templates=templates, labels=LABELS, max_new_tokens=2)
    panel.run()
    assert received == [(["a", "b", "c"], 3)]  # one evaluate call: all of them in one timing phase of 3 rounds
    traces = {t.name: t for t in panel.figure.data}
    for label, way in (("batched (s)", "batched"), ("one at a time (s)", "alone")):
        medians = [timing.median(v, way) for v in "abc"]
        assert list(traces[label].y) == pytest.approx([m for m, _, _ in medians])
        assert list(traces[label].error_y.array) == pytest.approx([high - m for m, _, high in medians])
        assert list(traces[label].error_y.arrayminus) == pytest.approx([m - low for m, low, _ in medians])
    shown = text(panel._summary)
    assert "latency batched: b is slower than a, +0.050 s per request (95% CI +0.050 to +0.050)" in shown
    assert "latency batched: no difference the timing can see between c and a" in shown
    assert "latency one at a time: c is faster than a, -0.200 s per request (95% CI -0.200 to -0.200)" in shown
    assert "latency one at a time: no difference the timing can see between b and a" in shown
    assert ("timing: timed together, interleaved: 3 rounds of 4 rows in batches of 2, and one at a time on 2 rows"
            in shown)
    assert "timing: timed beside other work: other processes kept 1.2 of 2 cores busy" in shown
    assert "timing: the load changed while timing" in shown  # a's batches spread wide
    assert "<th>latency_s</th>" in panel._summary.value and "<th>latency_1_s</th>" in panel._summary.value

    # A result without a timing phase of all its variants: no latency is drawn or claimed.
    monkeypatch.setattr(module, "evaluate", lambda variants, rows, metrics, **kw: evaluate(
        variants, rows, metrics, **{**kw, "timing_rounds": 0}))
    panel.run()
    traces = {t.name for t in panel.figure.data}
    assert "batched (s)" not in traces and "one at a time (s)" not in traces
    assert "latency" not in panel._summary.value and "timing:" not in panel._summary.value


def test_the_verdict_names_the_prompts_tried_says_what_its_rows_detect_and_takes_a_judge(talkative, sft_run,
                                                                                           monkeypatch):
    from types import SimpleNamespace

    model, tok = talkative
    panel = ComparePanel(model, tok, dataset=TEST, templates=TEMPLATES, runs=[sft_run], max_new_tokens=3)
    with pytest.raises(ValueError, match="compare prompt variants and at least one run first"):
        panel.use_judge(None)
    judges = []  # the judge each verdict was given

    def spy(*args, **kw):
        judges.append(kw.get("judge"))
        return advise(*args, **kw)

    advise = module.advise
    monkeypatch.setattr(module, "advise", spy)
    panel.run()
    advice = panel.advice
    assert judges == [None] and advice.prompts_tried == ["plain", "route"]
    shown = text(panel)
    assert advice.prompts_line() in shown and advice.power_line() in shown
    assert advice.power_line().startswith("power: ")
    # A judge of the verdict's pair (duck-typed as ftkit.evaluation.judge's result): shown, with its part.
    judge = SimpleNamespace(a=sft_run.id, b=advice.best_prompt, win_rate=0.5, ci_low=0.3, ci_high=0.7, rows=4,
                            kappa=None, kappa_low=None, kappa_high=None, rated=0, min_agreement=0.4, usable=False,
                            line=lambda: "judge: stand-in, not used: no ratings to check it against")
    assert panel.use_judge(judge) is panel.advice and judges[-1] is judge and panel.advice.judge is judge
    shown = text(panel)
    assert "judge: stand-in, not used: no ratings to check it against" in shown
    assert "the verdict does not use the judge: you rated no answers to check its agreement against" in shown
    assert panel.advice.conclusion == advice.conclusion  # an unusable judge changes nothing
    panel.run()  # a new comparison: new answers, the judge of the old ones goes
    assert panel.judge is None and judges[-1] is None and "stand-in" not in text(panel)


def test_ask_judge_checks_a_judge_against_the_thumbs_and_shows_it(talkative, sft_run):
    """The panel's judge: the verdict's two answers asked of a backend in both orders, checked
    against this panel's thumbs. A judge that always says "A" (the answer shown first) prefers
    neither (win rate 0.5, consistency 0); 2 rated rows are too few to check it, so the verdict
    shows it and says why it does not use it."""
    from ftkit.generation.backend import Generation

    class AlwaysFirst:
        hosted, warmup_rows, name = False, 0, "scripted"

        def __init__(self):
            self.asked = []

        def generate(self, conversations, *, max_new_tokens=32, **options):
            self.asked += conversations
            return [Generation("A", 0, 0, 0.0) for _ in conversations]

        def prompt_tokens(self, conversations):
            return None

        def cost_usd(self, prompt_tokens, new_tokens):
            return None

    model, tok = talkative
    panel = ComparePanel(model, tok, dataset=TEST, templates=TEMPLATES, runs=[sft_run], max_new_tokens=3)
    with pytest.raises(ValueError, match="compare prompt variants and at least one run first"):
        panel.ask_judge(AlwaysFirst())
    panel.run()
    tuned, prompt = panel.advice.tuned, panel.advice.best_prompt
    for row in (0, 1):
        panel.rate(row, tuned, True)
        panel.rate(row, prompt, False)
    assert panel.ratings == {(0, tuned): True, (0, prompt): False, (1, tuned): True, (1, prompt): False}
    backend = AlwaysFirst()
    advice = panel.ask_judge(backend)
    assert len(backend.asked) == 2 * len(TEST)  # every row, both orders
    judged = advice.judge
    assert (judged.a, judged.b, judged.rated, judged.win_rate, judged.consistency) == (tuned, prompt, 2, 0.5, 0.0)
    assert not judged.usable and not advice.judge_decides
    assert judged.line() in text(panel)


def test_a_tasks_answer_end_reaches_every_variant_a_run_s_too(talkative, sft_run):
    """Code answers end at their block's end in the panel as in `ftkit run`, for a prompt and a run alike."""
    model, tok = talkative
    rows = [{"prompt": "Write add(x, y).", "completion": "def add(x, y):\n    return x + y",
             "tests": ["assert add(1, 2) == 3"]}]
    panel = ComparePanel(model, tok, dataset=rows, task="code", runs=[sft_run], max_new_tokens=3)
    variants = panel.variants()
    assert sft_run.id in [v.name for v in variants] and len(variants) > 1
    assert {v.answer_end for v in variants} == {"code block"}
    assert {v.answer_end for v in ComparePanel(model, tok, dataset=TEST, max_new_tokens=3).variants()} == {"first line"}
