"""The advice object: each conclusion on a hand-made evaluation, and the cost arithmetic."""

import numpy as np
import pandas as pd
import pytest

from ftkit.evaluation.verdict import advise
from ftkit.evaluation.evaluate import EvalResult
from ftkit.models.threads import Load
from ftkit.generation.timing import Timing


class FakeRun:
    """What training_cost reads of a run: its events and its status."""

    def __init__(self, seconds: float):
        self.status = {"step": 10}
        self._events = [{"event": "start", "time": 100.0}, {"event": "end", "time": 100.0 + seconds}]

    def events(self):
        return self._events


def result(prompt: list[float], tuned: list[float], *, prompt_tokens=(300, 100), latency=(0.9, 0.4),
           invalid=None, jitter=0.01, load=None) -> EvalResult:
    """A hand-made evaluation; its timing: six paired samples per variant around ``latency``, each
    off by up to ``jitter`` seconds (the same pattern for both, reversed for the tuned model)."""
    scores = {"8-shot": {"exact_match": np.array(prompt, float)}, "LoRA SFT": {"exact_match": np.array(tuned, float)}}
    summary = pd.DataFrame([
        {"variant": name, "exact_match": float(np.mean(s["exact_match"])), "prompt_tokens": tokens,
         "new_tokens": 3.0, **({"invalid_rate": invalid[i]} if invalid else {})}
        for i, ((name, s), tokens) in enumerate(zip(scores.items(), prompt_tokens))
    ]).set_index("variant")
    table = pd.DataFrame({"input": [f"q{i}" for i in range(len(prompt))], "reference": ["a"] * len(prompt)})
    pattern = np.linspace(-jitter, jitter, 6)
    timing = Timing(batched={"8-shot": list(latency[0] + pattern), "LoRA SFT": list(latency[1] + pattern[::-1])},
                    rows=16, batch_size=16, rounds=6, n_boot=500, load=load)
    return EvalResult(table=table, summary=summary, scores=scores, n_boot=500, seed=0).with_timing(timing)


def test_a_tuned_model_that_is_better_beyond_noise_pays():
    advice = advise(result([0] * 30 + [1] * 10, [1] * 36 + [0] * 4), ["8-shot"], {"LoRA SFT": FakeRun(600)})
    assert (advice.best_prompt, advice.tuned, advice.conclusion) == ("8-shot", "LoRA SFT", "fine-tuning pays")
    assert advice.difference == pytest.approx(0.9 - 0.25) and advice.ci_low > 0
    assert "sending 100 instead of 300 prompt tokens per request, for 10.0 minutes of training" in advice.reason
    # 600 s of training, 0.5 s saved per request: repaid after 1,200 requests.
    assert advice.break_even_requests == pytest.approx(1200)
    assert "repaid in machine time after 1,200 requests" in str(advice)
    assert "the tuned model sends 20.0 million fewer prompt tokens" in str(advice)
    longer = advise(result([0] * 30 + [1] * 10, [1] * 40, prompt_tokens=(100, 300)), ["8-shot"],
                    {"LoRA SFT": FakeRun(600)})
    assert "the tuned model sends 20.0 million more prompt tokens" in str(longer)


def test_a_prompt_that_is_better_beyond_noise_is_enough():
    advice = advise(result([1] * 36 + [0] * 4, [0] * 30 + [1] * 10), ["8-shot"], ["LoRA SFT"])
    assert advice.conclusion == "prompting is enough" and advice.ci_high < 0
    assert advice.reason.startswith("8-shot beats LoRA SFT: -0.65 exact_match")
    assert advice.training_minutes is None and "cost once" not in str(advice)


def test_no_difference_with_a_longer_prompt_is_no_evidence_either_way():
    same = [1, 0] * 20
    advice = advise(result(same, same[::-1]), ["8-shot"], {"LoRA SFT": FakeRun(60)})
    assert advice.conclusion == "no evidence either way"
    assert "8-shot sends 200 more prompt tokens per request, which 1.0 minutes of training remove" in advice.reason


def test_no_difference_with_a_prompt_no_longer_is_prompting_enough():
    same = [1, 0] * 20
    advice = advise(result(same, same[::-1], prompt_tokens=(100, 100)), ["8-shot"], ["LoRA SFT"])
    assert advice.conclusion == "prompting is enough" and "costs no more prompt tokens" in advice.reason


def test_nothing_above_zero_is_neither_works_yet():
    advice = advise(result([0] * 10, [0] * 10), ["8-shot"], ["LoRA SFT"])
    assert advice.conclusion == "neither works yet"


def test_a_slower_tuned_model_is_not_repaid_by_latency_and_control_is_shown():
    advice = advise(result([0] * 30 + [1] * 10, [1] * 40, latency=(0.2, 0.4), invalid=[0.25, 0.0]), ["8-shot"],
                    {"LoRA SFT": FakeRun(300)})
    assert advice.break_even_requests is None and advice.seconds_saved == pytest.approx(-0.2)
    text = str(advice)
    assert "latency, LoRA SFT - 8-shot per request: batched +0.200 s (95% CI +0.1" in text
    assert "): LoRA SFT is slower" in text
    assert "not repaid by latency (the tuned model is slower per request here)" in text
    assert "control: invalid answers 8-shot 25%, LoRA SFT 0%" in text
    assert "<b>Verdict: fine-tuning pays" in advice._repr_html_()


def test_latency_is_claimed_only_when_its_interval_excludes_zero():
    # The medians differ (0.40 vs 0.45 s) but the paired samples swing +-0.3 s: no claim either way.
    noisy = advise(result([0] * 30 + [1] * 10, [1] * 40, latency=(0.4, 0.45), jitter=0.3), ["8-shot"],
                   {"LoRA SFT": FakeRun(300)})
    d = noisy.latency_difference
    assert d.low < 0 < d.high and noisy.seconds_saved == 0 and noisy.break_even_requests is None
    text = str(noisy)
    assert "latency, LoRA SFT - 8-shot per request: batched +0.050 s (95% CI -0." in text
    assert "): no difference the timing can see" in text
    assert "not repaid by latency (no latency difference the timing can see)" in text
    assert "slower" not in text and "faster" not in text
    # Nothing timed together (e.g. a merge without with_timing): nothing claimed.
    merged = result([0] * 30 + [1] * 10, [1] * 40)
    merged.timing = None
    untimed = advise(merged, ["8-shot"], {"LoRA SFT": FakeRun(300)})
    assert untimed.latency_difference is None and untimed.break_even_requests is None
    assert "latency not timed together, so no repayment is claimed" in str(untimed)


def test_load_seen_while_timing_is_said():
    busy = Load(others_busy=1.0, own_busy=1.0, cores=2, seconds=40.0, loadavg_start=(1.2, 1, 1),
                loadavg_end=(2.1, 1, 1))
    text = str(advise(result([0] * 30 + [1] * 10, [1] * 40, load=busy), ["8-shot"], {"LoRA SFT": FakeRun(300)}))
    assert "timing: timed beside other work: other processes kept 1.0 of 2 cores busy" in text
    assert "load average 1.20 -> 2.10" in text


def test_a_dpo_runs_training_time_includes_the_sft_run_it_continued(tmp_path):
    import json

    from ftkit.runs import new_run

    def recorded(name, seconds, **config):
        run = new_run(name, {"kind": name, **config}, root=tmp_path)
        (run.path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in [
            {"event": "start", "time": 10.0}, {"event": "end", "time": 10.0 + seconds}]))
        return run

    sft = recorded("sft", 300)
    dpo = recorded("dpo", 120, from_run=sft.id)
    advice = advise(result([0] * 30 + [1] * 10, [1] * 40), ["8-shot"], {"LoRA SFT": dpo})
    assert advice.training_minutes == pytest.approx(7.0)  # 5 of SFT, then 2 of DPO


def test_advice_needs_both_kinds_of_variant():
    with pytest.raises(ValueError, match="name at least one of each"):
        advise(result([1], [1]), [], ["LoRA SFT"])


def test_probe_scores_on_hand_written_replies():
    from ftkit.evaluation.verdict import probe_score

    digits = {"check": "regex:\\d+", "answers": ["2"]}
    assert probe_score(" 2 ", "2", digits) == 1.0 and probe_score("two", "2", digits) == 0.0
    words = {"check": "answers", "answers": ["ten", "10"]}
    assert probe_score("The answer is 10.", "10", words) == 1.0
    assert probe_score("100", "10", words) == 0.0  # whole words only
    echo = "Text: Owen's birthday is in June and his party is on a Saturday in the park with friends. June"
    assert probe_score(echo, "June", {"check": "answers", "answers": ["June"]}) == 0.0  # an echo is no answer


def test_flexibility_compares_each_tuned_model_with_the_base_on_the_probes(tiny_model_dir, talkative):
    from ftkit import load_model
    from ftkit.data import examples
    from ftkit.evaluation.verdict import flexibility
    from ftkit.evaluation.evaluate import Variant
    from ftkit.prompts import zero_shot

    probes = examples.load("general_probes", verbose=False).select(range(10))
    base, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    other, _ = talkative
    flex = flexibility(Variant(base, tok, zero_shot(), name="base"), [Variant(other, tok, zero_shot(), name="tuned")],
                       probes=probes, max_new_tokens=3)
    summary = flex.result.summary
    mean, low, high = flex.differences["tuned"]
    assert mean == pytest.approx(summary.loc["tuned", "probe_score"] - summary.loc["base", "probe_score"])
    assert low <= mean <= high and list(flex.by_skill.columns) == ["base", "tuned"]
    assert set(flex.by_skill.index) == set(probes["skill"])
    assert flex.line("tuned").startswith("flexibility: general-skills probes passed")


def test_against_a_hosted_prompt_money_is_compared_not_two_tokenizers_counts():
    from dataclasses import replace

    base = result([0] * 20 + [1] * 20, [0] * 19 + [1] * 21, prompt_tokens=(40, 90))
    base.summary["usd_per_request"] = [0.000038, np.nan]
    hosted = replace(base, hosted=("8-shot",))
    advice = advise(hosted, ["8-shot"], {"LoRA SFT": FakeRun(600)}, requests=100_000)
    assert advice.hosted and advice.tokens_saved == 0 and advice.usd_per_request == {"8-shot": 0.000038}
    assert advice.conclusion == "no evidence either way" and "costs $0.000038 per request" in advice.reason
    text = str(advice)
    assert "(each model's own tokenizer)" in text and "at 100,000 requests 8-shot costs $3.80" in text
    assert "million fewer" not in text
    # Unpriced and hosted: no money line, and no token arithmetic across tokenizers either.
    unpriced = replace(hosted, summary=hosted.summary.drop(columns="usd_per_request"))
    advice = advise(unpriced, ["8-shot"], {"LoRA SFT": FakeRun(600)})
    assert advice.conclusion == "prompting is enough" and "no price given" in str(advice)
