import re

import pandas as pd
import pytest

from ftkit.evaluation.evaluate import EvalResult
from ftkit.report import metric_figure, recorded_summary, render_report, run_cost, write_report
from ftkit.runs import new_run

SUMMARY = pd.DataFrame([
    {"variant": "zero-shot", "n": 3, "exact_match": 0.2, "exact_match_low": 0.0, "exact_match_high": 0.5,
     "prompt_tokens": 90.0, "latency_s": 0.1},
    {"variant": "LoRA <SFT>", "n": 3, "exact_match": 0.8, "exact_match_low": 0.6, "exact_match_high": 1.0,
     "prompt_tokens": 90.0, "latency_s": 0.1},
]).set_index("variant")
TABLE = pd.DataFrame({
    "input": ["<script>alert('x')</script> where is my order?", "refund", "password"],
    "reference": ["order_status", "return_refund", "account_access"],
    "zero-shot: output": ["order", "return_refund", "?"], "zero-shot: exact_match": [0.0, 1.0, 0.0],
    "LoRA <SFT>: output": ["order_status", "return_refund", "account_access"],
    "LoRA <SFT>: exact_match": [1.0, 1.0, 1.0],
})


def fake_run(root, kind, logs, status="completed"):
    run = new_run(f"t-{kind}", {"kind": kind, "train_rows": 16, "device": "cpu (float32): no GPU"}, root=root)
    run.record("start", {"step": 0, "max_steps": len(logs)})
    for step, values in enumerate(logs, 1):
        run.record("log", {"step": step, **values})
    run.record("end", {"step": len(logs), "status": status})
    run.set_status(status, step=len(logs))
    return run


@pytest.fixture
def runs(tmp_path):
    sft = fake_run(tmp_path, "sft", [{"loss": 2.0, "num_input_tokens_seen": 400}, {"loss": 1.0,
                                                                                  "num_input_tokens_seen": 800}])
    dpo = fake_run(tmp_path, "dpo", [{"loss": 0.7, "rewards/margins": 0.1, "rewards/accuracies": 0.5},
                                     {"loss": 0.6, "rewards/margins": 0.4, "rewards/accuracies": 0.75}])
    return [sft, dpo]


def test_report_has_every_section_and_links_to_nothing(runs, tmp_path):
    result = EvalResult(table=TABLE, summary=SUMMARY, scores={
        v: {"exact_match": TABLE[f"{v}: exact_match"].to_numpy()} for v in SUMMARY.index})
    path = write_report(tmp_path / "out" / "report.html", title="demo <1>", result=result, runs=runs, metric="exact_match", notes=["model: <tiny>"], config={"data": {"source": "<x>"}})
    page = path.read_text()
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings == ["Summary", "Metrics with 95% confidence intervals", "Accuracy against tokens per request",
                        "Training curves", "DPO rewards", "Training cost", "Side by side", "Configuration"]
    assert not re.search(r"<script[^>]*\bsrc\s*=", page) and not re.search(r"<link[^>]*>", page)
    assert page.count("window.PlotlyConfig") == 1  # plotly.js inlined once, reused by every chart
    assert page.count('class="plotly-graph-div"') == 4  # metrics, tokens, loss, DPO rewards
    # User strings are escaped everywhere: the data, the variant names, the title, the config.
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "LoRA &lt;SFT&gt;" in page and "<title>demo &lt;1&gt;</title>" in page and "&lt;tiny&gt;" in page
    assert "source: &lt;x&gt;" in page
    assert "0.800 (0.60-1.00)" in page  # the summary cell carries its interval
    assert page.count('<td class="ok">') == 4 and page.count('<td class="bad">') == 2


def test_metric_bars_carry_the_interval_as_asymmetric_error_bars():
    bar = metric_figure(SUMMARY, "exact_match").data[0]
    assert list(bar.x) == ["zero-shot", "LoRA <SFT>"]
    assert list(bar.error_y.array) == pytest.approx([0.3, 0.2])
    assert list(bar.error_y.arrayminus) == pytest.approx([0.2, 0.2])


def test_cost_and_recorded_summary_come_from_the_run_folders(runs):
    cost = run_cost(runs[0])
    assert (cost["kind"], cost["status"], cost["steps"], cost["tokens"]) == ("sft", "completed", 2, 800)
    assert cost["wall_s"] >= 0 and cost["device"] == "cpu (float32)"
    assert "falling" in cost["reading"]
    assert recorded_summary(runs) == (None, None)
    result = EvalResult(table=TABLE, summary=SUMMARY, scores={v: {"exact_match": None} for v in SUMMARY.index})
    runs[0].record_evaluation(result, variant="LoRA <SFT>")
    assert runs[0].evaluation == {**runs[0].evaluation, "variant": "LoRA <SFT>", "metric": "exact_match",
                                  "value": 0.8, "test_rows": 3}
    with pytest.raises(ValueError, match="no variant 'nope' .* variants are: zero-shot, LoRA <SFT>"):
        runs[1].record_evaluation(result, variant="nope")
    summary, metric = recorded_summary(runs)
    assert metric == "exact_match" and summary.loc["LoRA <SFT>", "exact_match"] == 0.8
    page = render_report(summary=summary, runs=runs, metric=metric)
    assert "Side by side" not in page and "Training cost" in page and "Summary" in page


def test_a_graded_metric_shows_each_answers_score_instead_of_colours(tmp_path):
    table = TABLE.assign(**{"zero-shot: rouge_l": [0.25, 1.0, 0.0], "LoRA <SFT>: rouge_l": [0.5, 0.75, 1.0]})
    result = EvalResult(table=table, summary=SUMMARY.assign(rouge_l=[0.4, 0.75]), scores={
        v: {"rouge_l": table[f"{v}: rouge_l"].to_numpy()} for v in SUMMARY.index})
    page = render_report(result=result, metric="rouge_l")
    assert "each answer with its rouge_l" in page and "order\n(rouge_l 0.25)" in page
    assert 'class="ok"' not in page and 'class="bad"' not in page


def test_money_per_request_is_shown_to_the_millionth_and_blank_for_local_variants():
    import numpy as np
    import pandas as pd

    from ftkit.report import render_report

    summary = pd.DataFrame([{"variant": "gpt-4o-mini zero-shot", "exact_match": 0.5, "exact_match_low": 0.3,
                             "exact_match_high": 0.7, "usd_per_request": 0.000038, "n": 10},
                            {"variant": "LoRA SFT", "exact_match": 0.6, "exact_match_low": 0.4, "exact_match_high": 0.8,
                             "usd_per_request": np.nan, "n": 10}]).set_index("variant")
    page = render_report(summary=summary)
    table = page.split("<h2>Summary</h2>")[1].split("</table>")[0]
    assert "0.000038" in table and "nan" not in table and "3.8e-05" not in table


def test_the_verdict_section_shows_the_prompts_tried_what_the_rows_detect_and_the_judge():
    import html
    from types import SimpleNamespace

    from ftkit.evaluation.verdict import advise

    result = EvalResult(table=TABLE, summary=SUMMARY, scores={
        v: {"exact_match": TABLE[f"{v}: exact_match"].to_numpy()} for v in SUMMARY.index})
    judge = SimpleNamespace(a="LoRA <SFT>", b="zero-shot", win_rate=0.8, ci_low=0.6, ci_high=0.95, rows=3, kappa=0.1,
                            kappa_low=-0.2, kappa_high=0.4, rated=3, min_agreement=0.4, usable=False,
                            line=lambda: "judge: LoRA <SFT> wins 80%; not used: agreement 0.10 below 0.40")
    advice = advise(result, ["zero-shot"], ["LoRA <SFT>"], judge=judge)
    page = render_report(result=result, advice=advice)
    # Differences 1, 0, 1: sd 0.57735, SE 0.33333; x (1.959964 + 0.841621) = 0.934 detectable.
    assert "power: these 3 rows detect a true difference of 0.934 exact_match or more" in advice.power_line()
    for line in (advice.prompts_line(), advice.power_line(), judge.line(), advice.judge_note):
        assert html.escape(line) in page
    assert "LoRA <SFT>" not in page


def test_the_answers_each_run_gave_during_training_have_a_section_with_every_answer_escaped(runs, tmp_path):
    from ftkit.report import samples_section

    sft, dpo = runs
    assert samples_section(runs) is None  # no run sampled: no section
    row = {"index": 4, "prompt": "<img src=x onerror=alert(1)> late?", "reference": "order_status"}
    sft.record("sample", {"step": 0, "rows": [{**row, "answer": "<script>alert(1)</script>", "match": False}]})
    sft.record("sample", {"step": 5, "rows": [{**row, "answer": "order_status", "match": True}]})
    page = render_report(runs=runs)
    assert re.findall(r"<h2>(.*?)</h2>", page)[-1] == "Answers during training"
    section = page.split("<h2>Answers during training</h2>")[1]
    assert f"<h3>{sft.id}</h3>" in section and dpo.id not in section  # one table per run that sampled
    assert "step 0</th>" in section and "step 5</th>" in section and section.count("ftkit-changed") == 1
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in section
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt; late?" in section
    assert section.count("ftkit-match") == 1 and section.count("ftkit-miss") == 1
