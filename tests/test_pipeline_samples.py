from ftkit.pipeline import progress_printer


def test_the_console_prints_one_short_line_per_sampling():
    lines = []
    bus = progress_printer("sft", lines.append)
    rows = [{"index": 0, "reference": "billing", "answer": "billing", "match": True},
            {"index": 1, "reference": "account", "answer": "I think this is about a\nlogin problem", "match": False}]
    bus.emit("sample", {"step": 12, "rows": rows})
    bus.emit("sample", {"step": 0, "rows": [{"index": 0, "reference": "a long summary " * 3, "answer": "text",
                                             "match": None}]})
    assert lines == ["sft step 12 answers (1/2 match): 'billing', 'I think this is about a\u2026'",
                     "sft step 0 answers: 'text'"]


def test_ftkit_run_samples_the_evaluated_rows_by_default_prints_them_and_reports_them(tmp_path, tiny_model_dir):
    import json

    from ftkit.config import config_from_dict
    from ftkit.pipeline import run_pipeline

    texts = {"order": ["Where is my order?", "My parcel is late", "Has it shipped?", "Delivery date?"],
             "refund": ["Refund please", "Return this lamp", "Money back", "Return label"]}
    rows = [{"text": t, "label": label} for label, ts in texts.items() for t in ts]
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = config_from_dict({
        "data": {"source": "tickets.jsonl", "test_size": 4}, "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "templates": [{"kind": "zero_shot"}], "max_new_tokens": 4,
        "sft": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 100, "max_length": 512},
        "output": {"runs_root": str(tmp_path / "runs"), "report": str(tmp_path / "report.html")}}, base=tmp_path)
    lines = []
    result = run_pipeline(config, say=lines.append, progress=False)
    [sft] = result.runs
    # 2 planned steps: one sampling a step, each of 3 of the 4 evaluated rows.
    assert [(e["step"], len(e["rows"])) for e in sft.events("sample")] == [(0, 3), (1, 3), (2, 3)]
    assert sft.config["settings"]["sample_every"] == 1
    assert [line.split(" answers")[0] for line in lines if line.startswith("sft step") and " answers" in line] == ["sft step 0", "sft step 1",
                                                                                    "sft step 2"]
    assert "<h2>Answers during training</h2>" in result.report.read_text()
