"""A run's data record (ftkit/data/provenance.py): what prepare_data records, the split made again from
the record alone in a new process, and a changed source file refused with both hashes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit.config import config_from_dict
from ftkit.data.provenance import SourceChanged, data_record, file_sha256, held_out, reproduce, with_prompts
from ftkit.data.sources import DataError
from ftkit.preparation import prepare_data
from ftkit.runs import fingerprint, load_run, new_run

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["order", "refund", "account"]


def tickets(folder: Path, ids: bool) -> Path:
    """24 labelled messages, with an ``id`` column or without."""
    rows = [{**({"id": f"t-{i:03d}"} if ids else {}), "text": f"message {i} about my {LABELS[i % 3]}",
             "label": LABELS[i % 3]} for i in range(24)]
    path = folder / "tickets.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def passages(folder: Path) -> Path:
    """Questions over 6 passages, 3 each, without ids: the split keeps each passage on one side."""
    rows = [{"question": f"q{i}?", "answer": f"a{i}", "context": f"passage {i % 6} says a{i}"} for i in range(18)]
    path = folder / "qa.csv"
    path.write_text("question,answer,context\n" + "".join(f"{r['question']},{r['answer']},{r['context']}\n"
                                                            for r in rows))
    return path


def prepared_run(tmp_path, tokenizer, data: dict, task=None):
    config = config_from_dict({"data": data, "task": task, "output": {"runs_root": str(tmp_path / "runs")}},
                              base=tmp_path)
    prepared = prepare_data(config, tokenizer, say=lambda _line: None)
    run = new_run("data", {"kind": "sft"}, root=tmp_path / "runs", data=prepared.data_record)
    return prepared, run


def in_new_process(run, *, cwd) -> dict:
    code = """
import json, sys
from ftkit.data.provenance import reproduce
from ftkit.runs import load_run
train, test = reproduce(load_run(sys.argv[1], sys.argv[2]))
print(json.dumps({"train": train.to_list(), "test": test.to_list()}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, run.id, str(run.path.parent)], capture_output=True, text=True,
                         env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("ids", [True, False])
def test_a_run_folder_reproduces_its_split_in_a_new_process(tmp_path, tiny_tokenizer, ids):
    source = tickets(tmp_path, ids)
    prepared, run = prepared_run(tmp_path, tiny_tokenizer, {"source": str(source), "test_size": 9, "seed": 7,
                                                             "stratify_by": "label", "limit": 6, "train_limit": 10})
    record = run.data
    assert record["source"]["path"] == str(source) and record["source"]["sha256"] == file_sha256(source)
    split = record["split"]
    assert (split["seed"], split["test_size"], split["stratify_by"], split["limit"], split["train_limit"]) == \
           (7, 9, "label", 6, 10)
    assert (split["test_rows"], split["evaluated_rows"], split["train_rows"]) == (9, 6, 15)
    assert len(split["held_out_positions"]) == 6
    if ids:
        assert split["held_out_ids"] == prepared.test["id"]
    else:
        assert split["held_out_ids"] is None  # the positions and the content hash say which rows
    assert split["training_fingerprint"] == fingerprint(prepared.training_rows)

    again = in_new_process(run, cwd=tmp_path / "runs")  # another folder: the absolute path is recorded
    assert again["test"] == prepared.test.to_list() and again["train"] == prepared.train.to_list()
    assert [r["prompt"] for r in again["test"]] == [f"message {p} about my {LABELS[p % 3]}"
                                                  for p in split["held_out_positions"]]


def test_a_group_split_without_ids_reproduces_from_positions_and_content(tmp_path, tiny_tokenizer):
    prepared, run = prepared_run(tmp_path, tiny_tokenizer, {"source": str(passages(tmp_path)), "test_size": 0.34},
                                 task="qa")
    split = run.data["split"]
    assert split["group_by"] == "context" and split["stratify_by"] is None and split["held_out_ids"] is None
    assert held_out(run).to_list() == prepared.test.to_list()
    assert in_new_process(run, cwd=tmp_path)["test"] == prepared.test.to_list()


def test_a_built_in_example_is_recorded_by_name_and_reproduces():
    record = data_record("support_routing", test_size=0.2, seed=0, stratify_by="label", limit=8)
    assert record["source"]["example"] == "support_routing" and record["split"]["held_out_ids"][0].startswith("sr-")
    train, test = reproduce(record)
    assert len(test) == 8 and len(train) == 384 and test["id"] == record["split"]["held_out_ids"]


def test_a_changed_source_file_is_refused_naming_it_and_both_hashes(tmp_path, tiny_tokenizer):
    source = tickets(tmp_path, ids=True)
    prepared, run = prepared_run(tmp_path, tiny_tokenizer, {"source": str(source), "test_size": 6})
    before = file_sha256(source)
    source.write_text(source.read_text().replace("message 3 ", "message three "))
    after = file_sha256(source)
    with pytest.raises(SourceChanged) as caught:
        reproduce(run)
    message = str(caught.value)
    assert str(source) in message and before in message and after in message and "allow_changed=True" in message
    # Knowing the change, the split of the file as it is now, with a warning for each check that failed.
    with pytest.warns(UserWarning) as said:
        train, test = reproduce(run, allow_changed=True)
    said = [str(w.message) for w in said]
    assert any(before in w and after in w for w in said) and any("training rows" in w for w in said)
    assert len(test) == len(prepared.test)


def test_other_differences_are_named_too(tmp_path):
    source = tickets(tmp_path, ids=True)
    record = data_record(str(source), test_size=6, seed=1)
    record["source"]["sha256"] = None  # a record of a file whose hash was not taken: the rows are still checked
    record["split"]["held_out_positions"] = record["split"]["held_out_positions"][::-1]
    with pytest.raises(DataError, match="holds out other rows than the run recorded"):
        reproduce(record)


def test_a_record_that_cannot_be_reproduced_says_what_to_do(tmp_path):
    in_memory = data_record([{"text": f"m{i}", "label": "ab"[i % 2]} for i in range(10)], test_size=2)
    with pytest.raises(DataError, match="rows held in memory"):
        reproduce(in_memory)
    moved = data_record(str(tickets(tmp_path, ids=False)), test_size=4)
    (tmp_path / "tickets.jsonl").unlink()
    with pytest.raises(DataError, match="which is not there"):
        reproduce(moved)
    old = new_run("old", {"kind": "sft"}, root=tmp_path / "runs")
    with pytest.raises(DataError, match=f"run {old.id} has no data record"):
        held_out(old)
    with pytest.raises(DataError, match="version 99"):
        reproduce({**moved, "version": 99})
    with pytest.raises(DataError, match="lacks read, split.seed: it was not written by ftkit"):
        reproduce({**moved, "read": [1], "split": {k: v for k, v in moved["split"].items() if k != "seed"}})


def test_the_record_refuses_held_out_rows_its_split_would_not_draw(tmp_path):
    from ftkit.data.canonical import load_data

    source = tickets(tmp_path, ids=True)
    data = load_data(source, verbose=False)
    with pytest.raises(ValueError, match="not the ones this split draws"):
        data_record(str(source), data=data, test_size=6, seed=0, test=data.select(range(6)))


def test_with_prompts_keeps_the_task_and_every_template_without_a_key():
    from ftkit.generation.endpoint import Endpoint
    from ftkit.prompts import few_shot, zero_shot

    shots = few_shot([{"prompt": "p", "completion": "c"}] * 2, k=2, name="2-shot")
    hosted = zero_shot(name="hosted")
    record = with_prompts({"version": 1}, task="classification", metrics=["exact_match", "macro_f1"],
                          max_new_tokens=8, labels=["a", "b"], training_template=zero_shot(),
                          templates=[zero_shot(), shots, hosted],
                          endpoints={"hosted": Endpoint(model="gpt-x", api_key_env="SECRET_KEY_ENV")})
    assert record["task"] == {"name": "classification", "metrics": ["exact_match", "macro_f1"], "max_new_tokens": 8,
                              "max_new_tokens_from": "", "labels": ["a", "b"], "stop_strings": [],
                              "answer_end": None}
    assert record["training_template"]["name"] == "zero-shot" and record["training_template"]["kind"] == "zero_shot"
    assert [(t["name"], t["kind"], t["k"]) for t in record["templates"]] == \
           [("zero-shot", "zero_shot", 0), ("2-shot", "few_shot", 2), ("hosted", "zero_shot", 0)]
    assert record["templates"][2]["endpoint"]["model"] == "gpt-x" and "SECRET_KEY_ENV" not in json.dumps(record)


def test_train_sft_keeps_the_record_from_the_run_s_creation(tmp_path, tiny_model_dir):
    from ftkit.models.loading import load_model
    from ftkit.training.events import EventBus
    from ftkit.training.sft import SFTSettings, train_sft

    source = tickets(tmp_path, ids=True)
    record = data_record(str(source), test_size=6, seed=0)
    train, _ = reproduce(record)
    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    seen = []
    bus = EventBus()
    bus.on("start", lambda e: seen.append(load_run(e["run_id"], tmp_path / "runs").data))  # while it runs
    run = train_sft(model, tok, [{"prompt": r["prompt"], "completion": r["completion"]} for r in train],
                    config=SFTSettings(max_steps=1, batch_size=4, logging_steps=1, save_steps=100), bus=bus,
                    runs_root=tmp_path / "runs", progress=False, data_record=record)
    assert seen == [record] and run.data == record
