import json
import warnings

import datasets
import pandas as pd
import pytest

from ftkit.tasks import check_data as task_check
from ftkit.data.canonical import (
    DataError,
    check_data,
    detect_mapping,
    find_overlap,
    load_data,
    split,
)

ROWS = [
    {"id": 1, "text": "Where is my parcel?", "label": "order_status"},
    {"id": 2, "text": "Please cancel order 1234", "label": "cancel_order"},
    {"id": 3, "text": "I was charged twice", "label": "billing_issue"},
]


def load(source, **kw):
    return load_data(source, verbose=False, **kw)


# --- every format -----------------------------------------------------------------------------

def write_all_formats(tmp_path):
    df = pd.DataFrame(ROWS)
    paths = {
        "csv": tmp_path / "d.csv", "tsv": tmp_path / "d.tsv", "json": tmp_path / "d.json",
        "jsonl": tmp_path / "d.jsonl", "parquet": tmp_path / "d.parquet",
    }
    df.to_csv(paths["csv"], index=False)
    df.to_csv(paths["tsv"], index=False, sep="\t")
    paths["json"].write_text(json.dumps(ROWS))
    paths["jsonl"].write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    df.to_parquet(paths["parquet"])
    return paths


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet"])
def test_every_file_format_gives_the_same_canonical_rows(tmp_path, fmt):
    ds = load(write_all_formats(tmp_path)[fmt])
    assert ds["prompt"] == [r["text"] for r in ROWS]
    assert ds["completion"] == ds["label"] == [r["label"] for r in ROWS]
    assert [str(i) for i in ds["id"]] == ["1", "2", "3"]  # extra columns are kept


@pytest.mark.parametrize("make", [
    lambda: pd.DataFrame(ROWS),
    lambda: list(ROWS),
    lambda: datasets.Dataset.from_list(ROWS),
    lambda: datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}),
], ids=["dataframe", "list", "dataset", "datasetdict"])
def test_in_memory_sources(make):
    ds = load(make())
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["prompt", "completion", "label", "id"]
    assert ds[2]["prompt"] == "I was charged twice"


def test_datasetdict_split_is_chosen_and_a_wrong_one_named():
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]),
                               "validation": datasets.Dataset.from_list(ROWS[1:])})
    assert len(load(dd, split_name="validation")) == 2
    with pytest.raises(DataError, match="no split 'test'; its splits are: train, validation"):
        load(dd, split_name="test")


def test_json_object_holding_one_list_and_jsonl_saved_as_json(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"data": ROWS}))
    (tmp_path / "b.json").write_text("\n".join(json.dumps(r) for r in ROWS))
    assert len(load(tmp_path / "a.json")) == len(load(tmp_path / "b.json")) == 3


# --- malformed input: the message says what is wrong and where ---------------------------------

def test_bad_csv_quoting_names_the_line_and_the_fix(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('text,label\n"fine",a\nunquoted, comma, here,b\n')
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert "bad.csv is not valid CSV" in message and "line 3" in message
    assert "wrapped in double quotes" in message


def test_jsonl_line_that_is_not_json(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": }\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 3 is not valid JSON \(Expecting value"):
        load(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n["b", "y"]\n')
    with pytest.raises(DataError, match="line 2 is a JSON list, not an object"):
        load(path)


@pytest.mark.parametrize("name,content,expected", [
    ("empty.csv", "", "is empty"),
    ("blank.jsonl", "\n  \n", "is empty"),
    ("header.csv", "text,label\n", "header.csv has no rows (only a header: text, label)"),
    ("notes.txt", "hello", "cannot tell the format of notes.txt"),
])
def test_empty_and_unknown_files(tmp_path, name, content, expected):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path / name)


def test_missing_file_and_unreadable_parquet(tmp_path):
    with pytest.raises(DataError, match="no file at"):
        load(tmp_path / "nope.csv")
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="x.parquet is not a readable Parquet file"):
        load(tmp_path / "x.parquet")


def test_mapped_column_that_does_not_exist_names_it_and_the_real_columns():
    rows = [{"question": "2+2?", "reply": "4"}]
    with pytest.raises(DataError) as info:
        load(rows, mapping={"prompt": "question", "completion": "answer"})
    assert str(info.value) == (
        "column 'answer' (mapped to 'completion') not found; columns are: question, reply. "
        "Pass mapping={'completion': <one of them>}"
    )


def test_undetectable_layout_suggests_a_mapping():
    with pytest.raises(DataError, match=r"columns are: id, query, reply\. Pass a mapping, e\.g\. "
                                        r"mapping=\{'prompt': 'query', 'completion': 'reply'\}"):
        load([{"id": 1, "query": "hi", "reply": "hello"}])


def test_mapping_that_is_no_shape():
    with pytest.raises(DataError, match="does not give a known shape"):
        load([{"a": "x", "b": "y"}], mapping={"prompt": "a", "chosen": "b"})


def test_empty_and_missing_values_give_row_numbers(tmp_path):
    path = tmp_path / "holes.csv"
    path.write_text("question,answer\nq0,a0\nq1,\n ,a2\nq3,a3\nq4,   \n")
    report = check_data(path)
    assert not report.ok and report.dataset is None
    assert report.errors == [
        "column 'answer' is empty or missing in 2 row(s): 1, 4 (counting from 0, as dataset[i]). "
        "Fix those rows, or pass drop_incomplete=True to skip them",
        "column 'question' is empty or missing in 1 row(s): 2 (counting from 0, as dataset[i]). "
        "Fix those rows, or pass drop_incomplete=True to skip them",
    ]
    with pytest.warns(UserWarning, match=r"dropped 3 incomplete row\(s\): 1, 2, 4"):
        ds = load(path, drop_incomplete=True)
    assert ds["prompt"] == ["q0", "q3"]


def test_nan_from_pandas_is_missing_and_numbers_become_text():
    df = pd.DataFrame({"text": ["a", None, "c"], "label": [1, 2, 3]})
    assert "in 1 row(s): 1 " in check_data(df).errors[0]
    assert load(df.dropna())["completion"] == ["1", "3"]


# --- shape detection ---------------------------------------------------------------------------

def test_openai_messages():
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    report = check_data(rows)
    assert report.shape == "messages" and report.layout == "OpenAI messages"
    assert report.dataset[0]["messages"][1] == {"role": "assistant", "content": "hello"}


def test_sharegpt_conversations_become_messages():
    rows = [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hi"},
                               {"from": "gpt", "value": "hello"}]}]
    ds = load(rows)
    assert ds.column_names == ["messages"]
    assert [m["role"] for m in ds[0]["messages"]] == ["system", "user", "assistant"]


def test_messages_without_assistant_turn_or_with_unknown_role():
    no_answer = [{"messages": [{"role": "user", "content": "hi"}]}]
    assert "has no assistant turn" in check_data(no_answer).errors[0]
    odd = [{"messages": [{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    assert "unknown role 'narrator'" in check_data(odd).errors[0]


def test_alpaca_input_is_appended_to_the_instruction_when_present():
    rows = [{"instruction": "Translate to French", "input": "cat", "output": "chat"},
            {"instruction": "Name a colour", "input": "", "output": "blue"}]
    ds = load(rows)
    assert ds["prompt"] == ["Translate to French\n\ncat", "Name a colour"]
    assert ds["completion"] == ["chat", "blue"]


@pytest.mark.parametrize("columns,layout,shape", [
    (["prompt", "chosen", "rejected"], "prompt/chosen/rejected", "preference"),
    (["messages"], "OpenAI messages", "messages"),
    (["conversations"], "ShareGPT conversations", "messages"),
    (["prompt", "completion"], "prompt/completion", "prompt_completion"),
    (["instruction", "input", "output"], "Alpaca instruction/input/output", "prompt_completion"),
    (["instruction", "output"], "Alpaca instruction/output", "prompt_completion"),
    (["question", "answer"], "question/answer", "prompt_completion"),
    (["text", "label"], "text/label", "prompt_completion"),
])
def test_each_layout_is_detected(columns, layout, shape):
    from ftkit.data.canonical import shape_of

    name, mapping = detect_mapping(columns + ["id"])
    assert name == layout and shape_of(mapping) == shape


def test_preference_rows_and_mapping_override():
    rows = [{"q": "Is it safe?", "good": "Yes, with care.", "bad": "No idea."}]
    report = check_data(rows, mapping={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert report.ok and report.shape == "preference" and report.layout is None
    assert report.mapping_line() == "preference (mapping as given: prompt <- q, chosen <- good, rejected <- bad)"
    # An override beats detection: here the text column is the answer, not the prompt.
    ds = load([{"text": "Paris", "question": "Capital of France?", "label": "geo"}],
              mapping={"prompt": "question", "completion": "text"})
    assert ds[0]["prompt"] == "Capital of France?" and ds[0]["completion"] == "Paris"
    assert ds[0]["label"] == "geo"


def test_system_column_becomes_a_system_message():
    rows = [{"sys": "Answer in French.", "msgs": [{"role": "user", "content": "hi"},
                                                  {"role": "assistant", "content": "salut"}]}]
    ds = load(rows, mapping={"messages": "msgs", "system": "sys"})
    assert ds[0]["messages"][0] == {"role": "system", "content": "Answer in French."}


def test_detected_mapping_is_reported(capsys):
    load_data(ROWS)
    err = capsys.readouterr().err
    assert "3 rows from list as prompt_completion (detected layout 'text/label': prompt <- text, " \
           "completion <- label)" in err


# --- warnings and statistics -------------------------------------------------------------------

class WordTokenizer:
    """Counts words: token lengths in the tests are then easy to compute by hand."""

    chat_template = None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_duplicates_chosen_equal_rejected_and_label_counts():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "a", "rejected": "b"},
            {"prompt": "q", "chosen": "same", "rejected": " same "}]
    report = check_data(rows)
    assert report.ok
    assert "1 duplicate row(s), repeating an earlier row: 1" in report.warnings
    assert any(w.startswith("chosen equals rejected in 1 row(s): 2;") for w in report.warnings)
    assert check_data(ROWS + ROWS[:1]).label_counts == {"order_status": 2, "cancel_order": 1,
                                                        "billing_issue": 1}


def test_token_length_percentiles_and_max_length_warning():
    # "prompt\ncompletion" word counts: 2, 3, 4, 5, 11
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "a b", "completion": "c"},
            {"prompt": "a b c", "completion": "d"}, {"prompt": "a b c d", "completion": "e"},
            {"prompt": " ".join("x" * 10), "completion": "y"}]
    report = task_check(rows, tokenizer=WordTokenizer(), max_length=4)  # the task inferred from the rows
    assert report.token_lengths == {"p50": 4, "p90": 8, "p99": 10, "max": 11}
    assert report.lengths == [2, 3, 4, 5, 11]  # per row, in order: the panel's histogram
    assert report.task == "creative"  # free-form answers; its zero-shot prompt is the row's prompt alone
    assert report.warnings == ["2 example(s) are longer than max_length=4 tokens with the 'zero-shot' prompt"
                               ": 3, 4 (longest 11 tokens); training refuses to start on them, since their answers "
                               "would be cut: raise max_length or drop them"]


def test_long_rows_are_counted_with_the_tasks_prompt():
    # 2 + 1 words as plain text; the summarization prompt adds its 6 words of instruction.
    rows = [{"prompt": f"text {i}", "completion": "short"} for i in range(3)]
    plain = task_check(rows, tokenizer=WordTokenizer(), max_length=5, task="creative")
    assert plain.lengths == [3, 3, 3] and plain.warnings == []
    report = task_check(rows, tokenizer=WordTokenizer(), max_length=5, task="summarization")
    assert report.lengths == [9, 9, 9]
    assert report.warnings == ["3 example(s) are longer than max_length=5 tokens with the 'zero-shot' prompt"
                               ": 0, 1, 2 (longest 9 tokens); training refuses to start on them, since their answers "
                               "would be cut: raise max_length or drop them"]
    assert "tokens per example (summarization task, with the 'zero-shot' prompt): p50 9" in report.summary()


def test_data_alone_counts_rows_as_they_stand_or_inside_a_task_given_to_it():
    from ftkit import tasks

    rows = [{"prompt": f"text {i}", "completion": "short"} for i in range(3)]
    alone = check_data(rows, tokenizer=WordTokenizer(), max_length=5)  # the data layer knows no task table
    assert alone.lengths == [3, 3, 3] and alone.task is None and alone.length_basis == ""
    given = check_data(rows, tokenizer=WordTokenizer(), max_length=5, task=tasks.get("summarization"))
    fitted = check_data(rows, tokenizer=WordTokenizer(), max_length=5, task=lambda rows: tasks.get("summarization"))
    assert given.lengths == fitted.lengths == [9, 9, 9] and given.task == fitted.task == "summarization"


def test_token_lengths_use_the_chat_template_and_the_tasks_prompt(tiny_tokenizer):
    from ftkit import tasks

    report = task_check(ROWS[:1], tokenizer=tiny_tokenizer, task="qa")
    user = tasks.get("qa").template().messages({"prompt": ROWS[0]["text"]})
    text = tiny_tokenizer.apply_chat_template(user + [{"role": "assistant", "content": ROWS[0]["label"]}],
                                              tokenize=False)
    assert report.token_lengths["max"] == len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])


def test_rows_shared_between_train_and_test_are_flagged():
    train = load(ROWS)
    test = load([{"text": "where is my PARCEL?", "label": "order_status"}, {"text": "new", "label": "x"}])
    assert find_overlap(train, test) == [0]  # case and spacing do not hide a leak
    report = check_data(ROWS, test=test)
    assert any("1 test row(s) have a prompt that is also in the training rows (test rows 0)" in w
               for w in report.warnings)


def test_warnings_are_issued_by_load_data():
    with pytest.warns(UserWarning, match="duplicate row"):
        load(ROWS + ROWS[:1])


# --- split -------------------------------------------------------------------------------------

def many(n=60):
    labels = ["a"] * (n // 2) + ["b"] * (n // 3) + ["c"] * (n - n // 2 - n // 3)
    return load([{"text": f"message {i}", "label": lab} for i, lab in enumerate(labels)])


def test_split_is_deterministic_for_a_seed():
    ds = many()
    first, again, other = (split(ds, 0.25, seed=s) for s in (7, 7, 8))
    assert first["test"]["prompt"] == again["test"]["prompt"]
    assert first["test"]["prompt"] != other["test"]["prompt"]
    assert len(first["test"]) == 15 and len(first["train"]) == 45
    assert not set(first["test"]["prompt"]) & set(first["train"]["prompt"])


def test_stratified_split_keeps_label_proportions():
    parts = split(many(), test_size=0.5, seed=3, stratify_by="label")
    counts = pd.Series(parts["test"]["label"]).value_counts().to_dict()
    assert counts == {"a": 15, "b": 10, "c": 5}
    assert parts["test"].column_names == ["prompt", "completion", "label"]


def test_split_errors_say_what_to_change():
    ds = many()
    with pytest.raises(DataError, match="cannot stratify by 'topic': no such column; columns are: prompt"):
        split(ds, 0.2, stratify_by="topic")
    lonely = load([{"text": f"m{i}", "label": "a"} for i in range(5)] + [{"text": "z", "label": "solo"}])
    with pytest.raises(DataError, match="value\\(s\\) 'solo' occur only once"):
        split(lonely, 0.5, stratify_by="label")
    with pytest.raises(DataError, match="leaves 0 of 60 rows for testing"):
        split(ds, 0.001)


# --- nothing the user gave is modified -----------------------------------------------------------

def test_source_file_and_dataframe_are_left_untouched(tmp_path):
    paths = write_all_formats(tmp_path)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths.values()}
    for p in paths.values():
        load(p)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths.values()} == before
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
    df = pd.DataFrame(ROWS)
    copy = df.copy()
    load(df)
    pd.testing.assert_frame_equal(df, copy)


# --- real public data ----------------------------------------------------------------------------

def test_realdata_files_load_in_their_shapes(realdata):
    banking = load(realdata / "banking77" / "banking77_test_10labels.jsonl")
    assert len(banking) == 400 and len(set(banking["label"])) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the red-team set has a few duplicate pairs
        pairs = load(realdata / "hh_rlhf_harmless" / "hh_rlhf_harmless_base_test_singleturn.jsonl")
    assert pairs.column_names[:3] == ["prompt", "chosen", "rejected"] and len(pairs) == 658
    slots = check_data(realdata / "restaurant8k" / "restaurant8k_test_sample2000.jsonl")
    assert "mapping={'prompt': 'text', 'completion': 'target_json'}" in slots.errors[0]
    ds = load(realdata / "restaurant8k" / "restaurant8k_test_sample2000.jsonl",
              mapping={"prompt": "text", "completion": "target_json"})
    assert json.loads(ds[0]["completion"]) is not None


def test_report_html_escapes_user_data():
    rows = [{"text": "<script>alert(1)</script>", "label": "<img src=x onerror=alert(2)>"}] * 2
    page = check_data(rows)._repr_html_()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(2)&gt; 2" in page
