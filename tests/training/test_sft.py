import json

import pytest
import torch

from ftkit.training.events import EventBus, StopFlag
from ftkit.export.merged import export_run
from ftkit.models.loading import load_model
from ftkit.models.tuned import load_run_model
from ftkit.prompts import PromptTemplate, zero_shot
from ftkit.runs import list_runs, load_run, outcome
from ftkit.training.sft import SFTSettings, preflight, to_trl_rows, train_sft

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address")]] * 4


def settings(**kw):
    base = dict(max_steps=4, batch_size=4, logging_steps=1, save_steps=100, learning_rate=1e-2)
    return SFTSettings(**{**base, **kw})


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def test_training_logs_a_loss_changes_the_adapter_and_records_the_run(tiny, tmp_path):
    model, tok = tiny
    seen = []
    bus = EventBus()
    bus.on("log", seen.append)
    ends = []
    bus.on("end", ends.append)
    run = train_sft(model, tok, ROWS, config=settings(), bus=bus, runs_root=tmp_path)
    assert run.status["status"] == "completed" and run.status["step"] == 4
    # A run that ran its course: nothing ended it early, and the trainer's closing summary is there.
    assert run.status["ended_by"] is None and run.status["max_steps"] == 4
    [end] = run.events("end")
    assert ends == [{k: v for k, v in end.items() if k not in ("event", "time")}]
    assert end["ended_by"] is None and (end["step"], end["max_steps"], end["status"]) == (4, 4, "completed")
    assert end["train_loss"] > 0 and end["train_runtime"] > 0
    assert outcome(run.status) == "completed at step 4"
    losses = [e["loss"] for e in run.events("log")]
    assert len(losses) == 4 and all(l > 0 for l in losses)
    assert [e["step"] for e in seen] == [1, 2, 3, 4] and seen[-1]["eta_s"] == 0
    lora_b = [p for n, p in run.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert (run.adapter_dir / "tokenizer_config.json").is_file()
    config = run.config
    assert config["kind"] == "sft" and config["settings"]["max_steps"] == 4 and "torch" in config["versions"]
    assert [r.id for r in list_runs(tmp_path)] == [run.id] and load_run(run.id[:15], tmp_path).id == run.id
    assert "[[" in run.events("preflight")[0]["text"]


def test_stop_mid_run_then_resume_reaches_the_same_final_step(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    stop, bus = StopFlag(), EventBus()
    bus.on("log", lambda e: stop.set() if e["step"] == 2 else None)
    cfg = settings(max_steps=6)
    run = train_sft(model, tok, ROWS, config=cfg, bus=bus, stop=stop, runs_root=tmp_path)
    assert run.status["status"] == "stopped" and run.status["ended_by"] == "stop requested"
    stopped_at = run.status["step"]
    assert outcome(run.status) == f"stopped on request at step {stopped_at} of 6"
    assert 2 <= stopped_at < 6 and run.last_checkpoint().name == f"checkpoint-{stopped_at}"
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()

    fresh, tok2 = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    resumed = train_sft(fresh, tok2, ROWS, config=cfg, resume=run)
    assert resumed.id == run.id and resumed.status == {**resumed.status, "status": "completed", "step": 6}
    assert resumed.status["ended_by"] is None  # the stop that ended the first stretch is not this one's
    steps = [e["step"] for e in run.events("log")]
    assert steps == list(range(1, 7))  # no step twice, none missing


def test_a_failed_run_records_its_error_and_keeps_earlier_events(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    from trl import SFTTrainer

    calls = {"n": 0}
    step = SFTTrainer.training_step

    def failing(self, *args, **kwargs):  # the third step runs out of memory
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", failing)
    errors = []
    bus = EventBus()
    bus.on("error", errors.append)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_sft(model, tok, ROWS, config=settings(), bus=bus, runs_root=tmp_path)
    run = list_runs(tmp_path)[0]
    status = run.status
    assert status["status"] == "failed" and "CUDA out of memory" in status["error"]
    assert "lower micro_batch_size" in status["hint"] and errors[0]["hint"] == status["hint"]
    assert len(run.events("log")) >= 1  # what was logged before the failure is kept
    for line in (run.path / "events.jsonl").read_text().splitlines():
        json.loads(line)


def test_preflight_marks_trained_tokens_and_catches_fully_truncated_examples(tiny_tokenizer):
    rows = to_trl_rows(ROWS[:2] + [{"prompt": "word " * 300, "completion": "order_status"}], zero_shot())
    check = preflight(tiny_tokenizer, rows, max_length=64)
    assert check.example.endswith("[[order_status<|im_end|>\n]]")
    assert len(check.problems) == 1
    assert check.problems[0].startswith("1 example(s) have no trained tokens left after truncation to "
                                        "max_length=64 (rows 2)")
    with pytest.raises(ValueError, match="pre-flight check failed"):
        train_sft(None, tiny_tokenizer, ROWS[:2] + [{"prompt": "word " * 300, "completion": "x"}],
                  config=settings(max_length=64))


def test_a_run_loads_in_a_new_session_and_exports_merged_weights(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from ftkit.generation.generate import generate

    model, tok = tiny
    run = train_sft(model, tok, ROWS, config=settings(learning_rate=5e-2), runs_root=tmp_path)
    again = load_run(run.id, tmp_path)  # as a new kernel would, from the folder alone
    loaded, tok2 = load_run_model(again, device="cpu", dtype="float32")
    convs = [[{"role": "user", "content": r["prompt"]}] for r in ROWS[:4]]
    with_adapter = [o.text for o in generate(loaded, tok2, convs, max_new_tokens=6, progress=False)]
    base = [o.text for o in generate(loaded, tok2, convs, max_new_tokens=6, adapter=False, progress=False)]
    assert with_adapter == [o.text for o in generate(run.model, tok, convs, max_new_tokens=6, progress=False)]
    assert with_adapter != base  # the adapter is really on

    export_run(again, tmp_path / "adapter-only")
    assert (tmp_path / "adapter-only" / "adapter_model.safetensors").is_file()
    folder = export_run(again, tmp_path / "merged", merged=True)
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert not any("lora" in n for n, _ in plain.named_parameters())
    merged = [o.text for o in generate(plain, tok2, convs, max_new_tokens=6, progress=False)]
    assert merged == with_adapter


def test_a_time_limit_ends_the_run_completed_saved_and_says_so(tiny, tmp_path):
    model, tok = tiny
    # A budget of 0.6 ms: over after the first step, whatever this CPU's speed; 50 steps planned.
    ends, bus = [], EventBus()
    bus.on("end", ends.append)
    run = train_sft(model, tok, ROWS, config=settings(max_steps=50, max_minutes=1e-5), bus=bus, runs_root=tmp_path,
                    progress=False)
    status = run.status
    # Completed (a pipeline goes on to DPO after it), and known as ended by the budget.
    assert status["status"] == "completed" and status["ended_by"] == "time budget"
    assert 0 < status["step"] < status["max_steps"] == 50
    assert ends[0]["ended_by"] == "time budget" and (ends[0]["step"], ends[0]["max_steps"]) == (status["step"], 50)
    assert run.events("end")[-1]["ended_by"] == "time budget"
    assert outcome(status) == f"stopped by the time budget at step {status['step']} of 50"
    assert run.last_checkpoint().name == f"checkpoint-{status['step']}"
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


CHAT = [{"role": "user", "content": "Hi, it's Ann"}, {"role": "assistant", "content": "Hi Ann, how can I help?"},
        {"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It left today."},
        {"role": "user", "content": "Thanks"}, {"role": "assistant", "content": "You're welcome."}]


def test_a_conversation_trains_every_assistant_turn_token_by_token(tiny_tokenizer):
    from ftkit.training.sft import conversation_tokens

    ids, mask = conversation_tokens(tiny_tokenizer, CHAT)
    assert ids == tiny_tokenizer(tiny_tokenizer.apply_chat_template(CHAT, tokenize=False),
                                 add_special_tokens=False)["input_ids"]
    # Token by token: the expected mask is built from ChatML's pieces, each tokenized on its own.
    def piece(text):
        return tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = []
    for m in CHAT:
        head, body = piece(f"<|im_start|>{m['role']}\n"), piece(f"{m['content']}<|im_end|>\n")
        expected += [0] * len(head) + [int(m["role"] == "assistant")] * len(body)
    assert mask == expected
    trained = [i for i, m in zip(ids, mask) if m]
    assert tiny_tokenizer.decode(trained) == ("Hi Ann, how can I help?<|im_end|>\nIt left today.<|im_end|>\n"
                                              "You're welcome.<|im_end|>\n")
    assert trained.count(tiny_tokenizer.eos_token_id) == 3  # each answer ends with its end-of-turn token


def test_a_slow_tokenizer_gets_the_same_mask_from_prefix_counts(tiny_tokenizer):
    from ftkit.training.sft import conversation_tokens

    class Slow:  # no offsets: the prefix-count path
        is_fast = False

        def __getattr__(self, name):
            return getattr(tiny_tokenizer, name)

        def __call__(self, text, **kw):
            return tiny_tokenizer(text, **kw)

    assert conversation_tokens(Slow(), CHAT) == conversation_tokens(tiny_tokenizer, CHAT)


def test_conversations_become_masked_token_rows_with_the_templates_system_prompt(tiny_tokenizer):
    template = PromptTemplate(system="Be kind.")
    rows = to_trl_rows([{"messages": CHAT}], template, tiny_tokenizer)
    assert rows.column_names == ["input_ids", "assistant_masks"]
    text = tiny_tokenizer.decode(rows[0]["input_ids"])
    assert text.startswith("<|im_start|>system\nBe kind.<|im_end|>")
    with pytest.raises(ValueError, match="pass the tokenizer"):
        to_trl_rows([{"messages": CHAT}], template)


def test_conversation_preflight_checks_every_answer(tiny_tokenizer):
    rows = to_trl_rows([{"messages": CHAT}, {"messages": CHAT[:2]}], zero_shot(), tiny_tokenizer)
    ids, mask = rows[0]["input_ids"], rows[0]["assistant_masks"]
    assert preflight(tiny_tokenizer, rows, max_length=len(ids)).problems == []
    check = preflight(tiny_tokenizer, rows, max_length=len(ids) - 3)  # the last answer loses its end
    assert check.problems == [f"1 example(s) have an answer cut short by max_length={len(ids) - 3} (rows 0): the "
                              "model would learn answers that stop mid-way, without the end-of-turn token. Raise "
                              f"max_length (the longest example is {len(ids)} tokens) or drop those rows"]
    shown = "".join(text for text, trained in check.segments if trained)
    assert "Hi Ann, how can I help?" in shown and "It left today." in shown and "Where is my order?" not in shown
    trained = sum(mask[:len(ids) - 3]) + sum(rows[1]["assistant_masks"])  # what truncation leaves
    assert check.notes[0].startswith(f"2 examples, {trained} trained tokens")


def test_sft_on_conversations_lowers_the_loss_of_every_answer(tiny, tmp_path):
    import torch

    model, tok = tiny
    data = [{"messages": CHAT}] * 8
    rows = to_trl_rows(data, zero_shot(), tok)

    def answer_loss(m):
        ids = torch.tensor([rows[0]["input_ids"]])
        labels = ids.clone()
        labels[0, torch.tensor(rows[0]["assistant_masks"]) == 0] = -100
        with torch.no_grad():
            return float(m(input_ids=ids, labels=labels).loss)

    before = answer_loss(model)
    run = train_sft(model, tok, data, config=settings(max_steps=8, learning_rate=5e-3), runs_root=tmp_path)
    assert run.status["status"] == "completed" and run.events("log")
    assert answer_loss(run.model) < before
    assert answer_loss(model) == pytest.approx(before)  # the given model is unchanged


def test_the_trainer_learns_exactly_the_assistant_tokens_of_a_conversation(tiny, tmp_path):
    from ftkit.models.device import choose_device
    from ftkit.runs import new_run
    from ftkit.training.sft import _trl_config, trainer_class

    model, tok = tiny
    rows = to_trl_rows([{"messages": CHAT}], zero_shot(), tok)
    cfg = settings(batch_size=1)
    trainer = trainer_class()(model=model, args=_trl_config(cfg, new_run("x", {}, root=tmp_path),
                                                            choose_device("cpu"), False),
                              train_dataset=rows, processing_class=tok, peft_config=cfg.lora.peft_config())
    batch = next(iter(trainer.get_train_dataloader()))
    ids, mask = rows[0]["input_ids"], rows[0]["assistant_masks"]
    assert batch["labels"][0].tolist() == [t if m else -100 for t, m in zip(ids, mask)]


def test_preflight_flags_a_template_that_drops_the_end_of_turn_token(tiny_tokenizer):
    from tiny_models import make_tokenizer

    no_end = make_tokenizer("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    check = preflight(no_end, to_trl_rows(ROWS[:1], zero_shot()), max_length=64)
    assert any("does not end with the end-of-turn token '<|im_end|>'" in p for p in check.problems)


def test_the_completion_loss_equals_trls_own_loss_and_gradients(tiny, tmp_path):
    import torch
    from trl import SFTTrainer

    from ftkit.fastpath.sft_loss import trainer_class
    from ftkit.models.device import choose_device
    from ftkit.runs import new_run
    from ftkit.training.sft import _trl_config

    model, tok = tiny
    cfg = settings(batch_size=4)
    run = new_run("x", {}, root=tmp_path)
    trainer = trainer_class()(model=model, args=_trl_config(cfg, run, choose_device("cpu"), False),
                               train_dataset=to_trl_rows(ROWS[:4], zero_shot()), processing_class=tok,
                               peft_config=cfg.lora.peft_config())
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any()  # prompts are masked: the fast path has work to skip
    trainer.model.train()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    assert type(trainer).compute_loss is not SFTTrainer.compute_loss  # the fast path against the plain one
    ours = trainer.compute_loss(trainer.model, dict(batch))
    trls = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch))
    assert torch.allclose(ours, trls, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(trls, params)):
        assert torch.allclose(a, b, atol=1e-6)
    accuracy = trainer._metrics["train"]["mean_token_accuracy"]
    entropy = trainer._metrics["train"]["entropy"]
    assert accuracy[0] == pytest.approx(accuracy[1], abs=1e-6) and entropy[0] == pytest.approx(entropy[1], rel=1e-5)


def test_early_stopping_ends_the_run_and_keeps_the_best_checkpoint(tiny, tmp_path):
    from safetensors.torch import load_file

    model, tok = tiny
    # The evaluation rows pair each prompt with another row's answer: the better the model
    # learns the training rows, the worse it does on these, so evaluation loss soon rises.
    answers = [r["completion"] for r in ROWS[:4]]
    swapped = [{"prompt": r["prompt"], "completion": answers[(i + 1) % 4]} for i, r in enumerate(ROWS[:4])]
    run = train_sft(model, tok, ROWS, swapped, runs_root=tmp_path, config=settings(
        max_steps=40, eval_steps=1, early_stopping_patience=2, learning_rate=2e-2))
    status = run.status
    evals = run.events("eval")
    assert status["status"] == "completed" and status["step"] < 40 and len(evals) == status["step"]
    best = min(evals, key=lambda e: e["eval_loss"])
    assert status["best_checkpoint"].endswith(f"checkpoint-{best['step']}")
    assert status["best_metric"] == pytest.approx(best["eval_loss"])
    assert best["step"] <= status["step"] - 2  # patience: two evaluations without improvement
    kept = load_file(run.adapter_dir / "adapter_model.safetensors")
    at_best = load_file(f"{status['best_checkpoint']}/adapter_model.safetensors")
    last = load_file(run.checkpoints_dir / f"checkpoint-{status['step']}" / "adapter_model.safetensors")
    assert kept.keys() == at_best.keys()
    assert all((kept[k] == at_best[k]).all() for k in kept)  # the saved adapter is the best one
    assert any((kept[k] != last[k]).any() for k in kept)     # not the last one


def test_a_keyboard_interrupt_stops_the_run_and_saves_the_adapter(tiny, tiny_model_dir, tmp_path):
    model, tok = tiny
    bus = EventBus()

    def interrupt(event):  # what pressing the notebook's stop button does, between two steps
        if event["step"] == 3:
            raise KeyboardInterrupt

    bus.on("log", interrupt)
    cfg = settings(max_steps=6, save_steps=2)
    run = train_sft(model, tok, ROWS, config=cfg, bus=bus, runs_root=tmp_path)
    assert run.status["status"] == "stopped" and run.status["step"] == 3
    assert run.status["ended_by"] == run.events("end")[-1]["ended_by"] == "interrupted"
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert run.last_checkpoint().name == "checkpoint-2"

    fresh, tok2 = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    resumed = train_sft(fresh, tok2, ROWS, config=cfg, resume=run)
    assert resumed.status["status"] == "completed" and resumed.status["step"] == 6


def test_micro_batches_accumulate_to_the_same_step(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    adapters = []
    for micro in (4, 2):  # one pass of 4 examples, or two passes of 2 accumulated
        model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
        run = train_sft(model, tok, ROWS, runs_root=tmp_path / str(micro),
                        config=settings(max_steps=2, batch_size=4, micro_batch_size=micro))
        assert run.config["settings"]["micro_batch_size"] == micro
        adapters.append(load_file(run.adapter_dir / "adapter_model.safetensors"))
    full, accumulated = adapters
    assert any(full[k].abs().sum() > 0 for k in full if "lora_B" in k)
    for k in full:
        assert torch.allclose(full[k], accumulated[k], atol=1e-5), k


def test_a_batch_that_is_not_a_multiple_of_the_micro_batch_names_a_fix():
    from ftkit.training.settings import micro_batches

    with pytest.raises(ValueError, match=r"batch_size \(10\) must be a multiple of micro_batch_size \(4\); "
                                         r"set micro_batch_size to 2"):
        micro_batches(10, 4, "cpu")


def test_preflight_checks_every_row_for_answers_cut_by_max_length(tiny_tokenizer):
    long_answer = {"prompt": "Where is my order?", "completion": "order status " * 40}
    rows = to_trl_rows(ROWS[:3] + [long_answer] + ROWS[:1], zero_shot())
    check = preflight(tiny_tokenizer, rows, max_length=64)
    [problem] = check.problems
    assert problem.startswith("1 example(s) have an answer cut short by max_length=64 (rows 3)")
    longest = int(problem.split("the longest example is ")[1].split()[0])
    assert longest > 64 and f"longest {longest} tokens" in check.notes[0]
    assert preflight(tiny_tokenizer, rows, max_length=longest).problems == []


def test_preflight_finds_a_missing_end_of_turn_in_any_row(tiny_tokenizer):
    from tiny_models import make_tokenizer

    # A template that drops the end-of-turn token after short answers only: row 0 is fine.
    template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}"
                "{% if m['content'] | length > 8 or m['role'] != 'assistant' %}{{ '<|im_end|>' }}{% endif %}"
                "{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tok = make_tokenizer(template)
    rows = to_trl_rows([{"prompt": "a", "completion": "order_status"}, {"prompt": "b", "completion": "billing"},
                        {"prompt": "c", "completion": "account"}], zero_shot())
    [problem] = preflight(tok, rows, max_length=64).problems
    assert "does not end with the end-of-turn token '<|im_end|>' in 2 example(s) (rows 1, 2)" in problem


SHARED_ROWS = [{"prompt": f"Labels: order_status, billing, account, address\nMessage: {p}", "completion": c}
               for p, c in [("Where is my order?", "order_status"), ("I was charged twice", "billing"),
                            ("Reset my password", "account"), ("Change the delivery address to 12 Elm Street",
                                                               "address")]]


def _loss_and_grads(trainer, batch, share: bool, monkeypatch, loss_of=None):
    from ftkit.fastpath import prefix

    monkeypatch.setattr(prefix, "MIN_SHARED_PREFIX", 1 if share else 10**9)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    loss = (loss_of or trainer.compute_loss)(trainer.model, dict(batch))
    return loss, torch.autograd.grad(loss, params)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bloom", "qwen2", "phi3", "mistral"])
def test_a_shared_prompt_prefix_computed_once_gives_the_same_loss_and_gradients(family, tmp_path, monkeypatch):
    """Rows that start with the same tokens (system prompt, label list) share one pass over them;
    the loss and every LoRA gradient equal the padded forward's, in float32, for each family
    (absolute positions, ALiBi, rotary), with rows of different lengths (right padding)."""
    from tiny_models import make_tokenizer, save_tiny_family
    from trl import SFTTrainer

    from ftkit.fastpath.sft_loss import shared_prefix, trainer_class
    from ftkit.models.device import choose_device
    from ftkit.runs import new_run
    from ftkit.training.sft import _trl_config

    plain = family in ("gpt2", "bloom")  # saved without a chat template: the plain fallback one
    folder = save_tiny_family(tmp_path / family, family, make_tokenizer(None) if plain else None)
    model, tok = load_model(folder, device="cpu", dtype="float32", verbose=False)
    cfg = settings(batch_size=4)
    trainer = trainer_class()(model=model, args=_trl_config(cfg, new_run("x", {}, root=tmp_path), choose_device("cpu"),
                                                            False),
                               train_dataset=to_trl_rows(SHARED_ROWS, zero_shot()), processing_class=tok,
                               peft_config=cfg.lora.peft_config())
    batch = dict(next(iter(trainer.get_train_dataloader())))
    assert (batch["attention_mask"] == 0).any()  # rows of different lengths: padding is in play
    trainer.model.train()
    for m in trainer.model.modules():  # GPT-2's config has dropout (which turns sharing off, tested below)
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    with torch.no_grad():  # LoRA B starts at zero: give the A matrices a gradient to compare too
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    keep = torch.ones_like(batch["input_ids"], dtype=torch.bool)
    keep[:, :-1] = batch["labels"][:, 1:] != -100
    keep[:, -1] = False
    forward = {k: v for k, v in batch.items() if k != "labels"}
    assert shared_prefix(forward, keep) >= 8 if family == "llama" else True  # "Labels: ..." is shared

    ours, our_grads = _loss_and_grads(trainer, batch, True, monkeypatch)
    padded, padded_grads = _loss_and_grads(trainer, batch, False, monkeypatch)
    assert torch.allclose(ours, padded, atol=1e-5), (float(ours), float(padded))
    for a, b in zip(our_grads, padded_grads):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    # And both equal the plain path: TRL's own SFTTrainer loss on the same batch.
    trls, trl_grads = _loss_and_grads(trainer, batch, True, monkeypatch,
                                      lambda m, b: SFTTrainer.compute_loss(trainer, m, b))
    assert torch.allclose(ours, trls, atol=1e-5), (float(ours), float(trls))
    for a, b in zip(our_grads, trl_grads):
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


def test_no_prefix_is_shared_past_the_first_trained_position_or_across_left_padding():
    from ftkit.fastpath.sft_loss import shared_prefix as _shared_prefix

    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1, 2], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3, 0]])
    mask = torch.tensor([[1] * 12, [1] * 11 + [0]])
    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[:, 9] = True  # the logit at 9 predicts the first answer token: the prefix stops before it
    assert _shared_prefix({"input_ids": ids, "attention_mask": mask}, keep) == 9
    keep[1, 4] = True
    assert _shared_prefix({"input_ids": ids, "attention_mask": mask}, keep) == 0  # under MIN_SHARED_PREFIX
    keep[1, 4] = False
    left = {"input_ids": ids, "attention_mask": torch.tensor([[0] + [1] * 11, [1] * 12])}
    assert _shared_prefix(left, keep) == 0
    assert _shared_prefix({"input_ids": ids[:1], "attention_mask": mask[:1]}, keep[:1]) == 0  # one row
    assert _shared_prefix({"input_ids": ids, "attention_mask": mask, "position_ids": ids}, keep) == 0  # packed


def test_a_model_with_dropout_in_training_computes_every_row_in_full(tiny, monkeypatch):
    import ftkit.fastpath.sft_loss as sft

    model, _ = tiny
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 1, 2]] * 2)
    batch, keep = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.zeros_like(ids, dtype=torch.bool)
    keep[:, 10] = True
    model.train()
    model.add_module("drop", torch.nn.Dropout(0.1))  # one shared dropout mask would be another function
    assert sft.shared_prefix(batch, keep) == 10 and sft.forward_after_prefix(model, batch, keep, 10) is None
    model.eval()
    assert sft.forward_after_prefix(model, batch, keep, 10).shape == (2, model.config.vocab_size)


# --- answers sampled during training ---------------------------------------------------------------

HELD_OUT = [{"prompt": "Where is my parcel?", "completion": "order_status"},
            {"prompt": "Charged two times", "completion": "billing"},
            {"prompt": "Where is my parcel now?", "completion": "order_status"},
            {"prompt": "Cannot sign in", "completion": "account"}]


def test_held_out_rows_are_answered_at_step_0_and_every_n_steps_recorded_and_emitted(tiny, tmp_path):
    model, tok = tiny
    bus, seen, order = EventBus(), [], []
    bus.on("sample", seen.append)
    for name in ("start", "sample", "log"):
        bus.on(name, lambda e, name=name: order.append((name, e["step"])))
    run = train_sft(model, tok, ROWS, config=settings(sample_every=2), bus=bus, runs_root=tmp_path,
                    sample_from=HELD_OUT)
    assert [e["step"] for e in seen] == [0, 2, 4]
    assert order[:3] == [("start", 0), ("sample", 0), ("log", 1)]  # the base model's answers come first
    recorded = run.events("sample")
    assert [{k: v for k, v in e.items() if k not in ("event", "time")} for e in recorded] == seen
    first = seen[0]
    # One row per reference before a second of the same: order_status, billing, account.
    assert [r["index"] for r in first["rows"]] == [0, 1, 3]
    assert [r["reference"] for r in first["rows"]] == ["order_status", "billing", "account"]
    assert first["rows"][0]["prompt"] == "Where is my parcel?"
    assert all(isinstance(r["answer"], str) and r["match"] in (True, False) for r in first["rows"])
    from ftkit.training.samples import SLACK_TOKENS

    assert first["max_new_tokens"] == len(tok("order_status", add_special_tokens=False)["input_ids"]) + SLACK_TOKENS
    assert first["seconds"] > 0
    notes = run.events("preflight")[0]["text"]
    assert "answers 3 held-out rows (rows 0, 1, 3) before the first step and every 2 steps" in notes
    # The last step is answered even when it falls between two samplings.
    run = train_sft(model, tok, ROWS, config=settings(max_steps=5, sample_every=2, sample_rows=1),
                    runs_root=tmp_path, sample_from=HELD_OUT)
    assert [(e["step"], len(e["rows"])) for e in run.events("sample")] == [(0, 1), (2, 1), (4, 1), (5, 1)]


def test_sampling_leaves_the_training_losses_as_they_were(tiny, tmp_path):
    model, tok = tiny
    # Dropout on the LoRA path and a second epoch (a new shuffle) both draw from torch's random state,
    # and dropout only acts in train mode: a sampling that left either changed would change the losses.
    from ftkit.training.settings import LoraSettings

    def losses(**kw):
        config = settings(max_steps=8, lora=LoraSettings(dropout=0.1), seed=3, **kw)
        run = train_sft(model, tok, ROWS, config=config, runs_root=tmp_path, sample_from=HELD_OUT)
        return [e["loss"] for e in run.events("log")], run.events("sample")

    plain, none = losses()
    sampled, samples = losses(sample_every=3)
    assert none == [] and [e["step"] for e in samples] == [0, 3, 6, 8]
    assert len(plain) == 8 and sampled == plain
    assert model.dtype == torch.float32


def test_sampling_without_held_out_rows_is_off_and_says_so_once(tiny, tmp_path):
    model, tok = tiny
    seen, bus = [], EventBus()
    bus.on("sample", seen.append)
    with pytest.warns(UserWarning, match="sample_every=2, but no held-out rows were given to answer: pass "
                                         "sample_from="):
        run = train_sft(model, tok, ROWS, config=settings(max_steps=2, sample_every=2), bus=bus, runs_root=tmp_path)
    assert seen == [] and run.events("sample") == [] and run.status["status"] == "completed"
    assert "no held-out rows were given" in run.events("preflight")[0]["text"]


def test_sample_settings_declare_their_ranges():
    from ftkit.config import ConfigError, config_from_dict
    from ftkit.training.settings import range_problem

    fields = SFTSettings.__dataclass_fields__
    assert range_problem(fields["sample_every"], -1) == "-1 is below its minimum 0; allowed: >= 0"
    assert range_problem(fields["sample_rows"], 0) == "0 is below its minimum 1; allowed: >= 1 and <= 16"
    assert range_problem(fields["sample_rows"], 3) is None and SFTSettings().sample_every == 0
    with pytest.raises(ConfigError, match="sft.sample_every: -5 is below its minimum 0"):
        config_from_dict({"sft": {"sample_every": -5}})
