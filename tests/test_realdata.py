"""Real public data (../shared/realdata, beside the checkout) through load_data, tasks.infer and
evaluate with each task's own prompts and metrics, on the tiny model: the kit on data it was not
written for. Skipped, with the reason, where the shared data is absent."""

from __future__ import annotations

import pytest
import sacrebleu

from ftkit import load_data, load_model, split, tasks
from ftkit.evaluation.evaluate import Variant, evaluate
from ftkit.evaluation import metrics as M
from ftkit.evaluation.metrics import squad_exact_match, token_f1

pytestmark = pytest.mark.integration

# scenario: (file under realdata, detected layout, extra columns kept, the task infer should give)
FILES = {
    "ntrex": ("translation_ntrex/ntrex128_en-de_sample400.jsonl", "source/target",
              {"id", "source_lang", "target_lang"}, "translation"),
    "nq": ("qa/nq_open_dev_sample.jsonl", "question/answer", {"id", "context", "answers"}, "qa"),
    "scitldr": ("summarization/scitldr_a_train_sample.jsonl", "document/summary",
                {"id", "title", "summaries"}, "summarization"),
}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def load(realdata, name, capsys):
    file, layout, extra, _ = FILES[name]
    data = load_data(realdata / file)
    assert f"400 rows from {file.split('/')[-1]} as prompt_completion (detected layout '{layout}'" \
        in capsys.readouterr().err
    assert set(data.column_names) == {"prompt", "completion"} | extra and len(data) == 400
    return data


def run(realdata, name, tiny, capsys):
    """Split off 4 held-out rows, infer the task, evaluate its templates with its metrics."""
    parts = split(load(realdata, name, capsys), test_size=4, seed=0)
    task, why = tasks.infer(parts["train"])
    assert task.name == FILES[name][3], why
    model, tok = tiny
    variants = [Variant(model, tok, t, max_new_tokens=4) for t in task.templates(parts["train"])]
    result = evaluate(variants, parts["test"], metrics=M.resolve(task.metrics), progress=False, n_boot=200)
    assert result.metrics == task.metric_names()
    for variant, row in result.summary.iterrows():
        assert row[f"{task.headline}_low"] <= row[task.headline] <= row[f"{task.headline}_high"], variant
    return task, parts["test"], result


def test_ntrex_translation_is_scored_by_corpus_chrf(realdata, tiny, capsys):
    task, test, result = run(realdata, "ntrex", tiny, capsys)
    assert task.headline == "chrf" and "chrf" in result.corpus_metrics
    refs = [r["completion"] for r in test]
    for variant in result.variants:
        corpus = sacrebleu.corpus_chrf(result.outputs(variant), [refs]).score / 100
        assert result.summary.loc[variant, "chrf"] == pytest.approx(corpus)


def test_nq_scores_every_accepted_answer(realdata, tiny, capsys):
    task, test, result = run(realdata, "nq", tiny, capsys)
    assert task.headline == "token_f1"
    for variant in result.variants:  # evaluate hands each row (with its `answers`) to the metric
        expected = [token_f1(o, r["completion"], r) for o, r in zip(result.outputs(variant), test)]
        assert list(result.column(variant, "token_f1")) == pytest.approx(expected)
    data = load(realdata, "nq", capsys)
    row = next(r for r in data if any(token_f1(a, r["completion"]) < 1 for a in r["answers"][1:]))
    other = next(a for a in row["answers"][1:] if token_f1(a, row["completion"]) < 1)
    assert token_f1(other, row["completion"], row) == 1.0 == squad_exact_match(other, row["completion"], row)
    assert token_f1(other, row["completion"]) < 1.0  # without the row, only the first answer counts


def test_scitldr_summaries_get_the_plain_summarization_metrics(realdata, tiny, capsys):
    task, _, result = run(realdata, "scitldr", tiny, capsys)
    task_metrics = task.metric_names()
    assert task.headline == "rouge_l"
    for house in ("within_30_words", "house_format"):  # the shop's format, on its own example only
        assert (house in result.summary.columns) == (house in task_metrics)
    assert task.on(str(realdata / FILES["scitldr"][0])) == task
    assert "house_format" in task.on("shop_summaries").metric_names()


def test_mbpp_reference_solutions_pass_and_wrong_ones_fail_in_the_sandbox(realdata):
    """MBPP (real, not written for ftkit): its tests run after its `test_setup`, in the sandbox."""
    from ftkit.evaluation.metrics import pass_at_1

    data = load_data(realdata / "mbpp/mbpp_sample.jsonl", verbose=False)
    assert tasks.infer(data)[0].name == "code"
    # mbpp-367's setup builds trees from the answer's own Node class: setup runs after the code, as
    # MBPP runs it. mbpp-123 takes over 3 s (the README's other odd one).
    ids = ["mbpp-367"] + [r["id"] for r in data.to_list() if r["id"] not in ("mbpp-367", "mbpp-123")][:19]
    rows = [r for r in data.to_list() if r["id"] in ids]
    passed = [pass_at_1(f"```python\n{r['completion']}\n```", r["completion"], r) for r in rows]
    assert [float(p) for p in passed] == [1.0] * len(rows), [p.note for p in passed]
    wrong = pass_at_1("def nothing():\n    return None", "", rows[0])
    assert float(wrong) == 0.0 and wrong.note.startswith("error: NameError")


def test_sgd_dialogues_are_evaluated_turn_by_turn(realdata, tiny):
    """Schema-Guided Dialogue: real multi-turn conversations through the chat task."""
    from ftkit.data.canonical import chat_turns

    data = load_data(realdata / "chat_multiturn/sgd_test_sample.jsonl", verbose=False)
    assert "messages" in data.column_names and tasks.infer(data)[0].name == "chat"
    test = data.select(range(2))
    turns = chat_turns(test)
    assert len(turns) == sum(m["role"] == "assistant" for r in test for m in r["messages"])
    model, tok = tiny
    result = evaluate([Variant(model, tok, tasks.get("chat").template(), max_new_tokens=3)], test,
                      metrics=M.resolve(tasks.get("chat").metrics), progress=False, n_boot=100)
    assert list(result.table["reference"]) == [r["completion"] for r in turns]
    assert result.table["history"].iloc[1].startswith("user: ")
