"""What training puts on the screen: with progress=True one bar of the stage's steps with the loss
in its postfix, with progress=False nothing; never the trainer's raw log dicts (transformers'
ProgressCallback writes each under its bar, PrinterCallback prints them), whose numbers are in the
run's events already."""

import pytest

from ftkit.training.dpo import DPOSettings, train_dpo
from ftkit.models.loading import load_model
from ftkit.training.sft import SFTSettings, train_sft

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address")]] * 2
PAIRS = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "billing" if r["completion"] != "billing"
          else "account"} for r in ROWS]
FAST = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 100, "learning_rate": 1e-2}
# What transformers prints of a log dict: the per-step one, evaluation's, and the closing summary.
RAW = ("'loss':", "grad_norm", "'learning_rate'", "eval_loss", "train_runtime", "train_loss", "total_flos")


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def _train(method, model, tok, tmp_path, **kw):
    if method == "sft":  # with evaluation rows: transformers writes the eval dict under its bar too
        return train_sft(model, tok, ROWS, ROWS[:4], config=SFTSettings(**FAST, eval_steps=1, **kw.pop("settings", {})),
                         runs_root=tmp_path, **kw)
    return train_dpo(model, tok, PAIRS, config=DPOSettings(**FAST, **kw.pop("settings", {})), runs_root=tmp_path, **kw)


def _no_raw_dicts(text):
    for raw in RAW:
        assert raw not in text, (raw, text[-2000:])


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_progress_false_prints_nothing_of_the_trainers(method, tiny, tmp_path, capfd):
    model, tok = tiny
    capfd.readouterr()
    run = _train(method, model, tok, tmp_path, progress=False)
    out, err = capfd.readouterr()
    assert run.status["status"] == "completed" and len(run.events("log")) == 2  # the numbers are in the record
    _no_raw_dicts(out + err)
    assert "it/s" not in err and "s/it" not in err and "%|" not in err  # no bar, no reference pass bar either
    assert out == ""


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_progress_true_shows_one_bar_with_the_loss_and_no_raw_dict(method, tiny, tmp_path, capfd):
    model, tok = tiny
    capfd.readouterr()
    run = _train(method, model, tok, tmp_path)  # progress=True is the default
    out, err = capfd.readouterr()
    assert run.status["status"] == "completed"
    _no_raw_dicts(out + err)
    assert "2/2" in err and "loss=" in err  # the stage's bar, its postfix the last loss
    assert out == ""


def test_disable_tqdm_passed_through_to_trl_hides_the_bar_without_printing_the_dicts_instead(tiny, tmp_path, capfd):
    # The TrainPanel's learning curve does this: transformers' answer to disable_tqdm is PrinterCallback.
    model, tok = tiny
    capfd.readouterr()
    _train("sft", model, tok, tmp_path, settings={"trl": {"disable_tqdm": True}})
    out, err = capfd.readouterr()
    _no_raw_dicts(out + err)
    assert "%|" not in err and out == ""
