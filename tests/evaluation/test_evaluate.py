import numpy as np
import pandas as pd
import pytest

from ftkit.evaluation.evaluate import EvalResult, Variant, bootstrap_ci, evaluate, pairs_from_ratings
from ftkit.models.loading import load_model
from ftkit.prompts import PromptTemplate, zero_shot

ROWS = [{"prompt": f"Where is order {i}?", "completion": "order_status", "label": "order_status", "id": i}
        for i in range(4)] + [{"prompt": "charged twice", "completion": "billing", "label": "billing", "id": 9}]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def test_every_variant_runs_on_the_same_rows_and_is_summarized(tiny):
    model, tok = tiny
    calls = []

    def first_word_is_where(prediction, reference, row):  # a user metric sees the row too
        calls.append(row["id"])
        return float(row["prompt"].startswith("Where"))

    variants = [Variant(model, tok, zero_shot()),
                Variant(model, tok, PromptTemplate(name="sys", instruction="Q: {prompt}", system="Be brief."),
                        max_new_tokens=4)]
    result = evaluate(variants, ROWS, metrics=["exact_match", first_word_is_where],
                      labels=["order_status", "billing"], n_boot=200, progress=False)
    t = result.table
    assert len(t) == 5 and list(t["id"]) == [0, 1, 2, 3, 9] and list(t["reference"])[-1] == "billing"
    for name in ("zero-shot", "sys"):
        for col in ("output", "exact_match", "first_word_is_where", "label_accuracy", "prompt_tokens",
                    "new_tokens"):
            assert f"{name}: {col}" in t.columns
    assert calls == [0, 1, 2, 3, 9] * 2
    s = result.summary
    assert list(s.index) == ["zero-shot", "sys"]
    assert s.loc["sys", "first_word_is_where"] == pytest.approx(0.8)
    assert s.loc["sys", "first_word_is_where_low"] <= 0.8 <= s.loc["sys", "first_word_is_where_high"]
    assert s.loc["sys", "prompt_tokens"] > s.loc["zero-shot", "prompt_tokens"]  # the system prompt costs
    assert (t["sys: new_tokens"] <= 4).all()
    assert {"macro_f1", "macro_f1_low", "invalid_rate"} <= set(s.columns)


def test_paired_comparison_hand_computed():
    result = EvalResult(table=None, summary=None, n_boot=500,
                        scores={"a": {"em": np.array([1.0, 1, 0, 1])}, "b": {"em": np.array([0.0, 1, 0, 0])}})
    c = result.compare("a", "b")
    assert (c.wins, c.ties, c.losses, c.mean_diff) == (2, 2, 0, 0.5)
    assert 0.0 <= c.ci_low <= 0.5 <= c.ci_high <= 1.0
    assert str(c).startswith("a vs b on em: +0.50 (95% CI ")
    same = result.compare("a", "a")
    assert (same.mean_diff, same.ci_low, same.ci_high, same.significant) == (0.0, 0.0, 0.0, False)
    with pytest.raises(KeyError, match="no variant 'c'; variants are: a, b"):
        result.compare("a", "c")


def test_bootstrap_ci_hand_computed():
    assert bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)
    mean, low, high = bootstrap_ci([0.0, 1.0] * 50, n_boot=2000, seed=1)
    # The standard error of a mean of 100 fair coin flips is 0.05: the interval is about +-0.1.
    assert mean == 0.5 and 0.38 < low < 0.43 and 0.57 < high < 0.62


def test_shots_from_the_evaluation_rows_are_refused(tiny):
    model, tok = tiny
    leaky = PromptTemplate(name="leaky", shots=[ROWS[0]])
    with pytest.raises(ValueError, match="variant 'leaky' shows few-shot examples that are in the evaluation rows"):
        evaluate([Variant(model, tok, leaky)], ROWS, progress=False)


def test_input_errors(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="evaluate needs prompt/completion rows .* these rows have: chosen"):
        evaluate([Variant(model, tok, zero_shot())], [{"chosen": "a", "rejected": "b"}], progress=False)
    with pytest.raises(ValueError, match="the conversations have no assistant turn after a user turn"):
        evaluate([Variant(model, tok, zero_shot())], [{"messages": [{"role": "user", "content": "hi"}]}],
                 progress=False)
    with pytest.raises(ValueError, match="variant names must differ"):
        evaluate([Variant(model, tok, zero_shot()), Variant(model, tok, zero_shot())], ROWS, progress=False)


def _result(outputs: dict[str, list[str]], reference: list[str]) -> EvalResult:
    table = {"input": [f"q{i}" for i in range(len(reference))], "reference": reference}
    scores = {}
    for name, outs in outputs.items():
        table[f"{name}: output"] = outs
        scores[name] = {"em": np.array([float(o == r) for o, r in zip(outs, reference)])}
        table[f"{name}: em"] = scores[name]["em"]
    return EvalResult(table=pd.DataFrame(table), summary=pd.DataFrame({"variant": list(outputs), "n": 3}
                                                                      ).set_index("variant"), scores=scores)


def test_a_result_owns_its_columns_and_merges_with_another_on_the_same_rows():
    a = _result({"zero-shot": ["x", "b", "c"]}, ["a", "b", "c"])
    b = _result({"LoRA": ["a", "b", "c"]}, ["a", "b", "c"])
    assert a.variants == ["zero-shot"] and a.metrics == ["em"]
    assert a.outputs("zero-shot") == ["x", "b", "c"] and list(a.column("zero-shot", "em")) == [0.0, 1.0, 1.0]
    with pytest.raises(KeyError, match="variant 'zero-shot' has no column 'latency_s'; it has: output, em"):
        a.column("zero-shot", "latency_s")
    with pytest.raises(KeyError, match="no variant 'nope'; variants are: zero-shot"):
        a.outputs("nope")
    both = a.merge(b)
    assert both.variants == ["zero-shot", "LoRA"] and both.outputs("LoRA") == ["a", "b", "c"]
    assert list(both.summary.index) == ["zero-shot", "LoRA"]
    assert both.compare("LoRA", "zero-shot").wins == 1
    with pytest.raises(ValueError, match="did not score the same rows"):
        a.merge(_result({"other": ["a"]}, ["a"]))
    with pytest.raises(ValueError, match="both evaluations have a variant named 'zero-shot'"):
        a.merge(a)


def test_ratings_become_preference_pairs():
    rows = [{"prompt": "q0", "completion": "a", "label": "a"}, {"prompt": "q1", "completion": "b"},
            {"prompt": "q2", "completion": "c"}]
    result = _result({"x": ["wrong", "b", ""], "y": ["a", "B.", "c"], "z": ["a", "nope", "c"]}, ["a", "b", "c"])
    ratings = {(0, "x"): False, (0, "y"): True, (0, "z"): True,   # two ups against one down
               (1, "x"): True, (1, "y"): False,                   # the same answer after normalization
               (2, "x"): False}                                   # only a down, and an empty one
    assert pairs_from_ratings(result, rows, ratings) == [
        {"prompt": "q0", "chosen": "a", "rejected": "wrong", "label": "a"}]  # y and z say the same
    assert pairs_from_ratings(result, rows, {(1, "z"): False}) == [
        {"prompt": "q1", "chosen": "b", "rejected": "nope"}]  # only a down: the reference is chosen


def test_bleu_and_chrf_are_summarized_and_compared_at_corpus_level(tiny):
    import sacrebleu

    model, tok = tiny
    rows = [{"prompt": f"Where is order {i}?", "completion": ref} for i, ref in
            enumerate(["your order ships today", "it left the warehouse", "delivery is late", "we are sorry"])]
    result = evaluate([Variant(model, tok, zero_shot(), name="a"), Variant(model, tok, zero_shot("Q: {prompt}"),
                                                                           name="b")],
                      rows, metrics=["bleu", "chrf", "token_f1"], n_boot=200, progress=False)
    assert result.corpus_metrics == ("bleu", "chrf")
    refs = [r["completion"] for r in rows]
    for name in ("a", "b"):
        outputs = result.outputs(name)
        assert result.summary.loc[name, "bleu"] == pytest.approx(sacrebleu.corpus_bleu(outputs, [refs]).score / 100)
        assert result.summary.loc[name, "chrf"] == pytest.approx(sacrebleu.corpus_chrf(outputs, [refs]).score / 100)
        assert list(result.column(name, "bleu")) == [sacrebleu.sentence_bleu(o, [r]).score / 100
                                                     for o, r in zip(outputs, refs)]  # the table: per sentence
        assert result.summary.loc[name, "token_f1"] == pytest.approx(np.mean(result.column(name, "token_f1")))
    c = result.compare("a", "b", "chrf")
    expected = (sacrebleu.corpus_chrf(result.outputs("a"), [refs]).score
                - sacrebleu.corpus_chrf(result.outputs("b"), [refs]).score) / 100
    assert c.mean_diff == pytest.approx(expected) and c.ci_low <= c.mean_diff <= c.ci_high


def test_a_variants_stop_strings_reach_generation(tiny, monkeypatch):
    import ftkit.evaluation.answering as module  # where evaluate generates its answers
    import ftkit.generation.timing as timing

    model, tok = tiny
    seen = []
    real = module.generate

    def spy(*args, **kwargs):
        seen.append((kwargs["max_new_tokens"], kwargs.get("stop_strings")))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "generate", spy)
    monkeypatch.setattr(timing, "generate", spy)
    evaluate([Variant(model, tok, zero_shot(), name="a", max_new_tokens=4, stop_strings=("\n\n",)),
              Variant(model, tok, zero_shot(), name="b", max_new_tokens=5)], ROWS[:2], progress=False)
    # Scored and timed alike: every call of "a" cuts at its stop string, no call of "b" does.
    assert all(s == ["\n\n"] for n, s in seen if n == 4) and all(s is None for n, s in seen if n == 5)
    assert sum(n == 4 for n, _ in seen) == sum(n == 5 for n, _ in seen) > 2  # the cut itself: test_integration.py


def test_scoring_answers_every_row_once_then_the_timing_phase_times_all(tiny, monkeypatch):
    import ftkit.evaluation.answering as module  # where evaluate generates its answers
    import ftkit.generation.timing as timing

    model, tok = tiny
    calls = []
    real = module.generate

    def spy(where):
        def call(model, tok, conversations, **kwargs):
            calls.append((where, len(conversations), kwargs["batch_size"], kwargs["progress"]))
            return real(model, tok, conversations, **kwargs)
        return call

    monkeypatch.setattr(module, "generate", spy("score"))
    monkeypatch.setattr(timing, "generate", spy("time"))
    rows = ROWS * 3
    result = evaluate([Variant(model, tok, zero_shot(), name="a", max_new_tokens=3)], rows, batch_size=5,
                      timing_rounds=2, interactive_rows=2)
    # every row once in batches (its bar shown); then the timing phase: a warm-up, and per round one
    # batch and two rows alone, without bars of their own
    assert calls == [("score", len(rows), 5, True), ("time", timing.WARMUP_ROWS, 5, False),
                     *[("time", 5, 5, False), ("time", 1, 1, False), ("time", 1, 1, False)] * 2]
    line = result.summary.loc["a"]
    assert line["latency_s"] > 0 and line["latency_1_s"] > 0 and result.timing.rounds == 2
    assert "latency_1_s" not in evaluate([Variant(model, tok, zero_shot(), name="a", max_new_tokens=3)], rows,
                                         interactive_rows=0, progress=False).summary.columns
    untimed = evaluate([Variant(model, tok, zero_shot(), name="a", max_new_tokens=3)], rows, timing_rounds=0,
                       progress=False)
    assert untimed.timing is None and "latency_s" not in untimed.summary.columns


def test_a_conversation_is_scored_turn_by_turn(tiny):
    model, tok = tiny
    chat = [{"role": "user", "content": "Hi, it's Ann"}, {"role": "assistant", "content": "Hi Ann!"},
            {"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It left today."}]
    result = evaluate([Variant(model, tok, zero_shot(), max_new_tokens=3)], [{"id": "c1", "messages": chat}],
                      metrics=["rouge_l"], progress=False)
    table = result.table
    assert list(table["id"]) == ["c1#1", "c1#2"] and list(table["reference"]) == ["Hi Ann!", "It left today."]
    assert list(table["input"]) == ["Hi, it's Ann", "Where is my order?"]
    assert list(table["history"]) == ["", "user: Hi, it's Ann\n\nassistant: Hi Ann!"]
    last = evaluate([Variant(model, tok, zero_shot(), max_new_tokens=3)], [{"messages": chat}], metrics=["rouge_l"],
                    progress=False, turns="last")
    assert list(last.table["reference"]) == ["It left today."]
    assert last.outputs("zero-shot")[0] == result.outputs("zero-shot")[1]  # same turn, same prompt: same answer


def test_a_metrics_notes_reach_the_table(tiny):
    from ftkit.evaluation.metrics import Scored

    model, tok = tiny

    def verdict(prediction, reference, row=None):
        return Scored(float(row["id"] % 2), f"row {row['id']}")

    result = evaluate([Variant(model, tok, zero_shot(), max_new_tokens=2)], ROWS[:3], metrics=[verdict],
                      progress=False)
    assert list(result.column("zero-shot", "verdict")) == [0.0, 1.0, 0.0]
    assert result.notes("zero-shot", "verdict") == ["row 0", "row 1", "row 2"]
    assert "zero-shot: verdict_note" in result.table.columns  # beside the scores, in the one table


def test_a_short_reply_shared_by_two_conversations_is_not_a_leak(tiny):
    from ftkit.data.canonical import chat_turns

    model, tok = tiny

    def chat(name):
        return [{"role": "user", "content": f"Hi, it's {name}. Cancel my order?"},
                {"role": "assistant", "content": f"Hi {name}, confirm order HC-1?"},
                {"role": "user", "content": "Yes"}, {"role": "assistant", "content": "Done."}]

    shots = chat_turns([{"messages": chat("Ann")}])  # "Yes" is a prompt here and in the evaluated rows
    template = PromptTemplate(name="1-shot", shots=shots[1:])
    result = evaluate([Variant(model, tok, template, max_new_tokens=2)], [{"messages": chat("Ben")}],
                      metrics=["rouge_l"], progress=False)
    assert len(result.table) == 2
    with pytest.raises(ValueError, match="shows few-shot examples that are in the evaluation rows"):
        evaluate([Variant(model, tok, template, max_new_tokens=2)], [{"messages": chat("Ann")}], progress=False)


def test_a_time_limit_answers_a_random_sample_every_variant_alike_and_max_rows_repeats_it(tiny):
    from ftkit.evaluation.answering import MIN_ROWS, sample_order

    model, tok = tiny
    rows = [{"prompt": f"Where is order {i}?", "completion": "order_status", "id": i} for i in range(50)]
    both = [Variant(model, tok, zero_shot(), max_new_tokens=2),
            Variant(model, tok, PromptTemplate(name="sys", instruction="Q: {prompt}", system="Be brief."),
                    max_new_tokens=2)]
    cut = evaluate(both, rows, n_boot=50, progress=False, timing_rounds=0, max_seconds=0)
    ids = list(cut.table["id"])
    # No time at all: the rows a 95% interval needs (two batches of 16), never fewer, and not the first 32.
    assert len(ids) == MIN_ROWS and ids == sample_order(50, 0, MIN_ROWS) and ids != list(range(MIN_ROWS))
    assert list(cut.summary["n"]) == [MIN_ROWS, MIN_ROWS]
    later = evaluate(both[:1], rows, n_boot=50, progress=False, timing_rounds=0, max_rows=MIN_ROWS)
    assert list(later.table["id"]) == ids  # a tuned variant scored later answers the same sample
    assert list(cut.table["zero-shot: output"]) == list(later.table["zero-shot: output"])  # each row its own answer
    every = evaluate(both[:1], rows, n_boot=50, progress=False, timing_rounds=0, max_seconds=3600)
    assert list(every.table["id"]) == list(range(50))  # time enough: every row, in the rows' order
