import datetime
import json

import pytest

from ftkit.data.canonical import DataError
from ftkit.widgets import DataPanel

from widget_helpers import find_button, text


def test_an_example_is_checked_previewed_charted_and_split(tiny_tokenizer):
    panel = DataPanel(tokenizer=tiny_tokenizer, source="support_routing", max_length=32)
    assert "ftkit-data-panel" in panel._dom_classes
    assert panel.report.ok and panel.report.n_rows == 480
    assert panel.report.mapping == {"prompt": "text", "completion": "label"}
    assert {f: d.value for f, d in panel._dropdowns.items() if d.value} == panel.report.mapping
    assert len(panel.figure.data[0].x) == 480  # one token length per example
    assert [s.x0 for s in panel.figure.layout.shapes] == [32]  # the max_length line
    first = panel.report.dataset[0]
    assert f"<|im_start|>user\n{first['prompt']}<|im_end|>" in text(panel)  # as the model sees it
    assert "longer than max_length=32" in text(panel)  # the report's warning

    splits = panel.use_this_data(test_size=0.2, seed=0, stratify=True)
    assert splits is panel.splits and (len(splits["train"]), len(splits["test"])) == (384, 96)
    assert set(splits["test"]["label"]) == set(splits["train"]["label"])  # 12 of each of 8 labels
    assert "train: 384 rows, test: 96 rows (stratified by label)" in text(panel)
    assert panel.leaks == [] and "Leakage check: no held-out prompt appears in the training rows" in text(panel)

    panel._max_length.value = 64
    assert [s.x0 for s in panel.figure.layout.shapes] == [64]


def test_a_bad_mapping_shows_the_error_and_the_panel_stays_usable(tiny_tokenizer):
    rows = [{"text": f"message {i}", "queue": "ab"[i % 2]} for i in range(10)]
    panel = DataPanel(tokenizer=tiny_tokenizer, source=rows)
    assert not panel.report.ok and "could not tell which columns" in text(panel)

    report = panel.set_mapping({"prompt": "nope", "completion": "queue"})
    assert not report.ok
    assert "column 'nope' (mapped to 'prompt') not found; columns are: text, queue" in text(panel)
    with pytest.raises(DataError, match="cannot be used yet"):
        panel.use_this_data()
    find_button(panel, css="ftkit-use-data").click()  # the button shows the error instead of raising
    assert "the data cannot be used yet" in text(panel)

    panel._dropdowns["prompt"].value, panel._dropdowns["completion"].value = "text", "queue"
    find_button(panel, description="Apply mapping").click()
    assert panel.report.ok and panel.report.mapping == {"prompt": "text", "completion": "queue"}
    assert len(panel.use_this_data(test_size=2, stratify=False)["test"]) == 2


def test_a_file_by_path_and_an_upload(tiny_tokenizer, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is 2+2?,4\nCapital of France?,Paris\nOne more?,Yes\n")
    panel = DataPanel(tokenizer=tiny_tokenizer)
    assert panel.report is None
    panel.load_path(path)
    assert panel.report.ok and panel.report.source == "qa.csv" and panel.report.n_rows == 3

    content = "".join(json.dumps({"prompt": f"p{i}", "completion": f"c{i}"}) + "\n" for i in range(4)).encode()
    panel._upload.value = ({"name": "../../up.jsonl", "type": "", "size": len(content),
                            "content": memoryview(content),
                            "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    assert panel.report.ok and panel.report.source == "up.jsonl" and panel.report.n_rows == 4


def test_a_split_with_near_duplicate_prompts_shows_the_leak(tiny_tokenizer):
    rows = [{"prompt": "Where is my order?", "completion": "a"}, {"prompt": "WHERE is  my order?", "completion": "a"},
            {"prompt": "Reset my password", "completion": "b"}, {"prompt": "Refund please", "completion": "c"}]
    panel = DataPanel(tokenizer=tiny_tokenizer, source=rows)
    splits = panel.use_this_data(test_size=2, seed=0, stratify=False)
    assert splits["test"]["prompt"] == ["Reset my password", "Where is my order?"]  # its twin is in train
    assert panel.leaks == [1]
    assert "Leakage check: 1 of 2 held-out rows have a prompt that is also in the training rows" in text(panel)


def test_the_panel_says_which_task_the_data_is_for(tiny_tokenizer):
    panel = DataPanel(tokenizer=tiny_tokenizer, source="shop_blurbs")
    assert panel.task.name == "creative" and panel.task.headline == "all_rules"  # its own house rules
    panel.load([{"text": f"m{i}", "label": "ab"[i % 2]} for i in range(8)])
    assert panel.task.name == "classification"


def test_the_lengths_and_the_long_rows_count_the_examples_own_prompt(tiny_tokenizer):
    from ftkit.data.canonical import token_lengths

    panel = DataPanel(tokenizer=tiny_tokenizer, source="shop_blurbs", max_length=400)
    rows = panel.report.dataset.to_list()
    house = panel.task.template()  # the blurb house instruction, as training will use it
    assert panel.report.lengths == token_lengths(rows, tiny_tokenizer, house)
    assert min(panel.report.lengths) > max(token_lengths(rows, tiny_tokenizer))  # more than the bare rows
    long = sum(n > 400 for n in panel.report.lengths)
    assert 0 < long < len(rows)
    assert f"{long} example(s) are longer than max_length=400 tokens with the &#x27;zero-shot&#x27; prompt" \
        in panel._report_html.value


def test_questions_about_one_passage_stay_on_one_side_and_the_length_is_the_tasks(tiny_tokenizer):
    rows = [{"question": f"question {i}", "answer": f"answer {i}", "context": f"passage {i % 5}"} for i in range(20)]
    panel = DataPanel(tokenizer=tiny_tokenizer, source=rows)
    splits = panel.use_this_data(test_size=0.2, seed=0)
    assert not set(splits["test"]["context"]) & set(splits["train"]["context"])
    assert "(grouped by context)" in text(panel) and panel.leaks == []
    splits = panel.use_this_data(test_size=0.2, seed=0, group_by="")  # asked for a row-by-row split
    assert "grouped" not in text(panel)

    code = DataPanel(tokenizer=tiny_tokenizer, source="shop_code")  # no max_length given: the task's
    assert code._max_length.value == 768 and code.report.task == "code"
    assert DataPanel(tokenizer=tiny_tokenizer, source="shop_code", max_length=300)._max_length.value == 300
    code._max_length.value = 1500  # typed by the person: it stays, and the check uses it
    assert code._max_length.value == 1500 and "max_length=1500" not in text(code)
    assert [s.x0 for s in code.figure.layout.shapes] == [1500]


def test_the_split_s_data_record_reproduces_its_held_out_rows(tiny_tokenizer, tmp_path):
    """What the DataPanel split, recorded with a run, is made again from the record alone."""
    from ftkit.data.provenance import reproduce

    panel = DataPanel(tokenizer=tiny_tokenizer, source="support_routing", max_length=32)
    assert panel.data_record is None  # nothing split yet
    splits = panel.use_this_data(test_size=0.25, seed=3, stratify=True)
    record = panel.data_record
    assert record["source"]["example"] == "support_routing"
    assert (record["split"]["test_size"], record["split"]["seed"], record["split"]["stratify_by"]) == (0.25, 3, "label")
    train, test = reproduce(record)
    assert test["prompt"] == splits["test"]["prompt"] and len(train) == len(splits["train"])
