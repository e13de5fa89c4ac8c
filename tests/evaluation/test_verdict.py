"""The advice object: each conclusion on a hand-made evaluation, and the cost arithmetic."""

from dataclasses import dataclass

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
    from ftkit.evaluation.flexibility import probe_score

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
    from ftkit.evaluation.flexibility import flexibility
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


# --- how many rows would decide --------------------------------------------------------------

# 36 rows, paired differences tuned - prompt: 6 of +1, 3 of -1, 27 of 0. By hand: mean 3/36 = 1/12;
# sum of squares about the mean 9 - 36/144 = 8.75, over 35: variance 1/4, sd 1/2; SE = 0.5/6 = 1/12.
# z_0.975 + z_0.80 = 1.959964 + 0.841621 = 2.801585, so the smallest detectable difference is
# 2.801585/12 = 0.233465, and the observed 1/12 needs 36 * 2.801585**2 = (2.801585 * 0.5 * 12)**2 = 282.56,
# i.e. 283 rows.
PROMPT_36 = [0] * 6 + [1] * 3 + [0] * 27
TUNED_36 = [1] * 6 + [0] * 3 + [0] * 27


def test_the_detectable_difference_and_rows_needed_on_hand_computed_cases():
    from ftkit.evaluation.power import detectable_difference, detectable_from_interval, rows_needed, z_sum

    assert z_sum() == pytest.approx(1.959964 + 0.841621, abs=1e-6)
    diffs = np.array(TUNED_36, float) - np.array(PROMPT_36, float)
    assert detectable_difference(diffs) == pytest.approx(2.801585 / 12, abs=1e-6)
    assert rows_needed(36, detectable_difference(diffs), 1 / 12) == 283
    assert rows_needed(36, detectable_difference(diffs), -1 / 12) == 283  # either direction
    assert rows_needed(36, detectable_difference(diffs), 0.0) is None  # no rows detect no difference
    # A 95% interval -0.1 to +0.3 read as normal: SE = 0.4 / (2 * 1.959964) = 0.102043; x 2.801585 = 0.285882.
    assert detectable_from_interval(-0.1, 0.3) == pytest.approx(0.285882, abs=1e-6)
    assert detectable_difference([1.0, 1.0, 1.0]) is None and detectable_difference([1.0]) is None
    assert detectable_from_interval(0.2, 0.2) is None
    with pytest.raises(ValueError, match="low=0.3 > high=0.1"):
        detectable_from_interval(0.3, 0.1)


def test_an_interval_spanning_zero_says_how_many_rows_would_detect_the_observed_difference():
    import json

    advice = advise(result(PROMPT_36, TUNED_36), ["8-shot"], {"LoRA SFT": FakeRun(60)})
    assert advice.ci_low < 0 < advice.ci_high and advice.conclusion == "no evidence either way"
    assert advice.detectable == pytest.approx(0.233465, abs=1e-6) and advice.rows_needed == 283
    assert advice.reason.endswith("which 1.0 minutes of training remove: about 283 held-out rows (these are 36) "
                                  "would detect the observed +0.08, or your request volume decides")
    text = str(advice)
    assert ("power: these 36 rows detect a true difference of 0.233 exact_match or more, either way (80% power, "
            "two-sided 5% level); the observed +0.083 would need about 283 rows (247 more than these)") in text
    assert "best prompt: 8-shot, the only prompt tried" in text
    row = advice.row()
    assert row["rows needed"] == 283 and row["detectable difference"] == pytest.approx(0.233465, abs=1e-6)
    record = json.loads(json.dumps(advice.as_dict()))  # plain data, timing's dataclasses included
    assert record["rows_needed"] == 283 and record["latency_difference"]["kind"] == "batched"
    assert record["lines"] == advice.lines() and record["prompts_tried"] == ["8-shot"]
    # The prompt no longer: prompting is enough, and the rows that would tell are said too.
    cheap = advise(result(PROMPT_36, TUNED_36, prompt_tokens=(100, 100)), ["8-shot"], ["LoRA SFT"])
    assert cheap.conclusion == "prompting is enough"
    assert cheap.reason.endswith("; detecting the observed +0.08 would take about 283 rows")


def test_a_clear_verdict_states_what_its_rows_detect_and_needs_no_more():
    # Differences: 30 of +1, 6 of 0, 4 of -1. Mean 0.65; variance (34 - 40 * 0.65**2) / 39 = 17.1/39,
    # sd 0.662164; SE 0.662164 / sqrt(40) = 0.104698; x 2.801585 = 0.293320.
    advice = advise(result([0] * 30 + [1] * 10, [1] * 36 + [0] * 4), ["8-shot"], ["LoRA SFT"])
    assert advice.conclusion == "fine-tuning pays" and advice.rows_needed is None
    assert advice.detectable == pytest.approx(0.293320, abs=1e-5)
    assert advice.power_line() == ("power: these 40 rows detect a true difference of 0.293 exact_match or more, "
                                   "either way (80% power, two-sided 5% level)")
    # Where a skewed bootstrap interval spans 0 but the normal rule says these rows would do: no "0 more".
    from dataclasses import replace

    edge = replace(advice, ci_low=-0.01, rows_needed=30)
    assert edge.power_line().endswith("; the observed +0.650 is at the edge of what they detect")


def test_an_observed_difference_of_zero_has_no_rows_that_detect_it():
    # +1 and -1 alternate: mean 0; sd sqrt(40/39) = 1.012739; SE 0.160128; x 2.801585 = 0.448613.
    same = [1, 0] * 20
    advice = advise(result(same, same[::-1]), ["8-shot"], {"LoRA SFT": FakeRun(60)})
    assert advice.difference == 0 and advice.rows_needed is None
    assert advice.detectable == pytest.approx(0.448613, abs=1e-5)
    assert advice.reason.endswith("the observed difference is 0, so no number of rows decides: your request "
                                  "volume does")
    assert "; the observed difference is 0, and no number of rows would detect it" in advice.power_line()
    nothing = advise(result([0] * 10, [0] * 10), ["8-shot"], ["LoRA SFT"])  # every row a tie: no spread
    assert nothing.detectable is None and nothing.rows_needed is None
    assert "rows' differences do not vary, so the smallest difference they can detect cannot be estimated" in str(
        nothing)


def test_a_corpus_metric_reads_its_standard_error_off_the_paired_bootstrap_interval():
    refs = ["the cat sat on the mat", "a dog ran in the park", "it rains today", "we ate fresh bread",
            "she reads a long book", "the sun is hot", "birds fly south", "he plays the piano"]
    tuned = ["the cat sat on a mat", "a dog ran in a park", "it rains", "we ate bread", "she reads a book",
             "the sun is hot", "birds fly", "he plays piano"]
    prompt = ["a cat is on the mat", "the dog runs in the park", "it rains today", "we eat bread",
              "she read a long book", "sun hot", "the birds fly south", "he plays the piano well"]
    table = pd.DataFrame({"input": [f"q{i}" for i in range(8)], "reference": refs,
                          "8-shot: output": prompt, "LoRA SFT: output": tuned})
    from ftkit.evaluation import metrics as M

    scores = {name: {"chrf": np.array([M.BUILTIN["chrf"](o, r, {}) for o, r in zip(outs, refs)])}
              for name, outs in (("8-shot", prompt), ("LoRA SFT", tuned))}
    summary = pd.DataFrame([{"variant": n, "chrf": M.corpus_score("chrf", outs, refs, 100)[0], "prompt_tokens": 50.0}
                            for n, outs in (("8-shot", prompt), ("LoRA SFT", tuned))]).set_index("variant")
    evaluation = EvalResult(table=table, summary=summary, scores=scores, n_boot=200, seed=0, corpus_metrics=("chrf",))
    advice = advise(evaluation, ["8-shot"], ["LoRA SFT"])
    width = advice.ci_high - advice.ci_low
    assert width > 0 and advice.detectable == pytest.approx(width / (2 * 1.959964) * 2.801585, rel=1e-6)
    assert advice.ci_low < 0 < advice.ci_high  # 8 rows tell nothing: the rows that would, from the same SE
    assert advice.rows_needed == int(np.ceil(8 * (advice.detectable / abs(advice.difference)) ** 2))


# --- the strongest prompt of those tried --------------------------------------------------------

def scored(variants: dict[str, list[float]], tokens: dict[str, float]) -> EvalResult:
    """A hand-made evaluation of several variants on exact match, without timing."""
    scores = {name: {"exact_match": np.array(s, float)} for name, s in variants.items()}
    summary = pd.DataFrame([{"variant": name, "exact_match": float(np.mean(s)), "prompt_tokens": tokens[name]}
                            for name, s in variants.items()]).set_index("variant")
    n = len(next(iter(variants.values())))
    table = pd.DataFrame({"input": [f"q{i}" for i in range(n)], "reference": ["a"] * n})
    return EvalResult(table=table, summary=summary, scores=scores, n_boot=500, seed=0)


def test_the_verdict_names_the_strongest_prompt_of_those_tried():
    evaluation = scored({"zero-shot": [1] * 10 + [0] * 30, "8-shot": [1] * 20 + [0] * 20,
                         "8-shot retrieved": [1] * 24 + [0] * 16, "LoRA SFT": [1] * 25 + [0] * 15},
                        {"zero-shot": 40, "8-shot": 300, "8-shot retrieved": 320, "LoRA SFT": 40})
    advice = advise(evaluation, ["zero-shot", "8-shot", "8-shot retrieved"], ["LoRA SFT"])
    assert advice.best_prompt == "8-shot retrieved" and advice.prompt_score == pytest.approx(0.6)
    assert advice.prompts_tried == ["zero-shot", "8-shot", "8-shot retrieved"]
    assert advice.prompts_line() == ("best prompt: 8-shot retrieved, of zero-shot 0.250, 8-shot 0.500, "
                                     "8-shot retrieved 0.600 (exact_match)")
    assert advice.prompts_line() in str(advice) and advice.row()["prompts tried"] == "zero-shot, 8-shot, 8-shot retrieved"


# --- a judge beside the headline ------------------------------------------------------------------

@dataclass
class StandInJudge:
    """What the verdict reads of ftkit.evaluation.judge's result, and no more."""

    a: str
    b: str
    win_rate: float
    ci_low: float
    ci_high: float
    rows: int = 36
    kappa: float | None = 0.72
    kappa_low: float | None = 0.55
    kappa_high: float | None = 0.89
    rated: int = 40
    min_agreement: float = 0.6

    @property
    def usable(self) -> bool:
        return self.kappa_low is not None and self.kappa_low > self.min_agreement - 0.1

    def line(self) -> str:
        return f"judge: {self.a} wins {self.win_rate:.0%} against {self.b} (stand-in)"


class Explained(StandInJudge):
    """A judge that says why it is not used, as ftkit.evaluation.judge's result does."""

    def why_not(self) -> str | None:
        return None if self.usable else f"only {self.rated} rated requests, 20 needed to check it"


def test_a_usable_judge_decides_where_the_headline_cannot_either_way_round():
    spans = result(PROMPT_36, TUNED_36)  # no evidence either way on exact match alone
    judged = advise(spans, ["8-shot"], {"LoRA SFT": FakeRun(60)}, judge=StandInJudge("LoRA SFT", "8-shot", 0.7, 0.6, 0.8))
    assert judged.conclusion == "fine-tuning pays" and judged.judge_decides
    assert judged.reason == ("exact_match cannot tell LoRA SFT from 8-shot (+0.08 exact_match (95% CI -0.08 to "
                             "+0.25)), but the judge prefers LoRA SFT to 8-shot on 70% of 36 requests (95% CI 60% to "
                             "80%), and it agrees with your own ratings at kappa 0.72 (95% CI 0.55 to 0.89) on 40 "
                             "rated requests; for 1.0 minutes of training")
    lines = judged.lines()
    assert lines[-2:] == ["judge: LoRA SFT wins 70% against 8-shot (stand-in)",
                          "the verdict follows the judge: the exact_match interval spans 0 and the judge's excludes "
                          "50%"]
    assert judged.rows_needed == 283  # what the headline alone would need is still said
    # The other way round: a is the prompt, so the tuned model's win rate is 1 - 0.3 = 0.7 (0.6 to 0.8).
    flipped = advise(spans, ["8-shot"], {"LoRA SFT": FakeRun(60)}, judge=StandInJudge("8-shot", "LoRA SFT", 0.3, 0.2, 0.4))
    assert (flipped.conclusion, flipped.reason) == (judged.conclusion, judged.reason)
    assert flipped.row()["judge win rate (tuned)"] == pytest.approx(0.7) and flipped.row()["judge decides"]
    # The judge prefers the prompt: prompting is enough.
    prompt_wins = advise(spans, ["8-shot"], ["LoRA SFT"], judge=StandInJudge("8-shot", "LoRA SFT", 0.65, 0.56, 0.74))
    assert prompt_wins.conclusion == "prompting is enough"
    assert "the judge prefers 8-shot to LoRA SFT on 65% of 36 requests (95% CI 56% to 74%)" in prompt_wins.reason
    assert prompt_wins.reason.endswith("; no training needed")


def test_a_judge_that_is_unusable_or_unsure_or_of_another_pair_never_changes_the_verdict():
    import json

    spans = result(PROMPT_36, TUNED_36)
    plain = advise(spans, ["8-shot"], ["LoRA SFT"])
    cases = {
        "the verdict does not use the judge: its agreement with your ratings (kappa 0.30) is not shown to reach 0.60":
            StandInJudge("LoRA SFT", "8-shot", 0.9, 0.85, 0.95, kappa=0.3, kappa_low=0.1, kappa_high=0.5),
        "the verdict does not use the judge: you rated no answers to check its agreement against":
            StandInJudge("LoRA SFT", "8-shot", 0.9, 0.85, 0.95, kappa=None, kappa_low=None, kappa_high=None, rated=0),
        "the verdict does not use the judge: its agreement with your ratings cannot be measured":
            StandInJudge("LoRA SFT", "8-shot", 0.9, 0.85, 0.95, kappa=float("nan"), kappa_low=None, kappa_high=None),
        "the verdict does not use the judge: it compared LoRA SFT with zero-shot, the verdict LoRA SFT with 8-shot":
            StandInJudge("LoRA SFT", "zero-shot", 0.9, 0.85, 0.95),
        "the verdict does not use the judge: only 3 rated requests, 20 needed to check it":  # the judge's own words
            Explained("LoRA SFT", "8-shot", 0.9, 0.85, 0.95, kappa_low=0.2, rated=3),
        "the judge is shown only: it cannot tell them apart either (its interval spans 50%)":
            StandInJudge("LoRA SFT", "8-shot", 0.55, 0.45, 0.65),
    }
    for note, judge in cases.items():
        advice = advise(spans, ["8-shot"], ["LoRA SFT"], judge=judge)
        assert (advice.conclusion, advice.reason, advice.judge_decides) == (plain.conclusion, plain.reason, False)
        assert advice.judge_note == note and advice.lines()[-2:] == [judge.line(), note]
        record = json.loads(json.dumps(advice.as_dict(), allow_nan=False))  # strict JSON: no NaN either
        assert record["judge"]["a"] == judge.a and record["judge"]["usable"] == judge.usable
    # A clear headline decides even against a usable judge, and says that they disagree.
    clear = advise(result([0] * 30 + [1] * 10, [1] * 36 + [0] * 4), ["8-shot"], ["LoRA SFT"],
                   judge=StandInJudge("LoRA SFT", "8-shot", 0.3, 0.2, 0.4))
    assert clear.conclusion == "fine-tuning pays" and not clear.judge_decides
    assert clear.judge_note == ("the judge is shown only: the exact_match interval excludes 0, so the headline "
                                "decides; the judge prefers the other: read the answers where they differ")
    with pytest.raises(ValueError, match="judge= takes a judge's pairwise result .* has no a, b, win_rate"):
        advise(spans, ["8-shot"], ["LoRA SFT"], judge=object())


def test_the_verdict_reads_the_judge_module_s_own_result():
    """The interface the verdict duck-types is the one ftkit.evaluation.judge builds: a usable
    result (low end of kappa at or above its threshold, enough ratings) decides; the same result
    with too few ratings only shows, in the judge's own words."""
    import json

    from ftkit.evaluation.judge import JudgeResult

    spans = result(PROMPT_36, TUNED_36)
    usable = JudgeResult(a="LoRA SFT", b="8-shot", win_rate=0.75, ci_low=0.62, ci_high=0.87, rows=36,
                         kappa=0.8, kappa_low=0.6, kappa_high=0.95, rated=24, min_agreement=0.4)
    assert usable.usable
    decided = advise(spans, ["8-shot"], ["LoRA SFT"], judge=usable)
    assert decided.conclusion == "fine-tuning pays" and decided.judge_decides
    assert "kappa 0.80 (95% CI 0.60 to 0.95) on 24 rated requests" in decided.reason
    assert decided.lines()[-2] == usable.line()
    json.dumps(decided.as_dict())  # the record and the report take it as plain data
    few = JudgeResult(a="LoRA SFT", b="8-shot", win_rate=0.75, ci_low=0.62, ci_high=0.87, rows=36,
                      kappa=1.0, kappa_low=1.0, kappa_high=1.0, rated=3, min_agreement=0.4)
    assert not few.usable
    shown = advise(spans, ["8-shot"], ["LoRA SFT"], judge=few)
    assert not shown.judge_decides and shown.conclusion == advise(spans, ["8-shot"], ["LoRA SFT"]).conclusion
    assert few.why_not() in shown.judge_note


def test_a_timing_cut_short_by_its_budget_is_said_and_decides_no_latency():
    cut = result([0] * 30 + [1] * 10, [1] * 40)
    cut.timing.budget_s, cut.timing.planned_rounds = 120.0, 3
    for table in (cut.timing.batched,):
        for name in table:
            table[name] = table[name][:1]  # one batch each before the budget ran out
    text = str(advise(cut, ["8-shot"], {"LoRA SFT": FakeRun(300)}))
    assert "timing: timed together, interleaved, until the phase's 2-minute budget (of 3 rounds planned)" in text
    assert "too few timed pairs (1) to tell LoRA SFT from 8-shot" in text
    assert "not repaid by latency (no latency difference the timing can see)" in text
