import datasets
import pytest
import torch

from ftkit import fastpath
from ftkit.training.dpo import DPOSettings, to_trl_pairs, train_dpo
from ftkit.export.merged import export_run
from ftkit.models.loading import load_model
from ftkit.runs import list_runs
from ftkit.prompts import zero_shot
from ftkit.training.sft import SFTSettings, train_sft

PAIRS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in [
    ("Where is my order?", "order_status", "billing"), ("I was charged twice", "billing", "order_status"),
    ("Reset my password", "account", "address"), ("Change the delivery address", "address", "account")]] * 4


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


def test_dpo_from_an_sft_adapter_logs_rewards_and_widens_the_margin(tiny, tmp_path):
    model, tok = tiny
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    sft = train_sft(model, tok, sft_rows, config=SFTSettings(max_steps=2, batch_size=4, save_steps=100),
                    runs_root=tmp_path)
    # train_sft left `model` as it was: DPO continues the SFT adapter on the same base model.
    run = train_dpo(model, tok, PAIRS, from_run=sft, runs_root=tmp_path,
                    config=DPOSettings(max_steps=6, batch_size=16, logging_steps=1, learning_rate=5e-3, beta=0.5))
    assert run.status["status"] == "completed" and run.config["from_run"] == sft.id
    # Before the first update the reference is the SFT policy itself: the rewards are 0.
    [check] = run.events("reference_check")
    assert abs(check["rewards/chosen"]) < 1e-4 and abs(check["rewards/rejected"]) < 1e-4
    logs = run.events("log")
    assert len(logs) == 6
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert all(key in e for e in logs), key
    margins = [float(e["rewards/margins"]) for e in logs]
    assert margins[-1] > margins[0] + 0.3
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    # One base model in memory: the DPO model's base layers are the caller's very tensors, which
    # neither SFT nor DPO changed, and the caller's model has no adapter layers.
    q = run.model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.base_layer.weight is model.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_before)
    assert not any("lora_" in n for n, _ in model.named_parameters())
    # A DPO run exports like an SFT run: merged weights, checked against the adapter first.
    folder = export_run(run, tmp_path / "dpo-merged", merged=True, rows=PAIRS[:4])
    assert (folder / "config.json").is_file() and not (folder / "adapter_config.json").exists()


def test_pairs_are_rendered_with_the_template_and_bad_rows_named():
    rows = to_trl_pairs(PAIRS[:1], zero_shot("Q: {prompt}"))
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q: Where is my order?"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "order_status"}]
    with pytest.raises(ValueError, match="DPO needs prompt/chosen/rejected rows .* these rows have: prompt, completion"):
        to_trl_pairs([{"prompt": "a", "completion": "b"}], zero_shot())


def test_dpo_preflight_shows_the_first_pair_and_refuses_a_run_without_an_adapter(tiny_tokenizer, tmp_path):
    from ftkit.training.dpo import preflight
    from ftkit.runs import new_run

    check = preflight(tiny_tokenizer, to_trl_pairs(PAIRS, zero_shot()))
    assert check.problems == [] and check.notes == ["16 preference pairs"]
    assert "chosen: [[order_status]]" in check.example and "rejected: [[billing]]" in check.example
    empty = new_run("sft", {}, root=tmp_path)
    check = preflight(tiny_tokenizer, to_trl_pairs(PAIRS, zero_shot()), from_run=empty)
    assert check.problems == [f"run {empty.id} has no saved adapter to continue (status: running)"]
    with pytest.raises(ValueError, match="pre-flight check failed:\nrun .* has no saved adapter"):
        train_dpo(None, tiny_tokenizer, PAIRS, from_run=empty, runs_root=tmp_path)


def test_a_reference_that_is_not_the_sft_model_stops_dpo_before_it_learns_nothing(tiny, tmp_path, monkeypatch):
    from trl import DPOTrainer

    model, tok = tiny
    sft_rows = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]
    sft = train_sft(model, tok, sft_rows, runs_root=tmp_path,
                    config=SFTSettings(max_steps=4, batch_size=4, save_steps=100, learning_rate=5e-2))
    init = DPOTrainer.__init__

    def base_as_reference(self, *args, **kwargs):  # the known failure: the reference is the base model
        init(self, *args, **kwargs)
        self.model.delete_adapter("ref")

    monkeypatch.setattr(DPOTrainer, "__init__", base_as_reference)
    with pytest.raises(ValueError, match="DPO's first-step check failed: .* the rewards must be about 0, but "
                                         r"they are [+-]\d\.\d+ \(chosen\).* Pass the base model and from_run"):
        train_dpo(model, tok, PAIRS, from_run=sft, runs_root=tmp_path, config=DPOSettings(max_steps=2, batch_size=4))
    failed = [r for r in list_runs(tmp_path) if r.config["kind"] == "dpo"][0]
    assert failed.status["status"] == "failed" and "first-step check failed" in failed.status["error"]
    assert failed.events("log") == []  # stopped before the first step


def test_dpo_preflight_checks_every_pair(tiny_tokenizer):
    from ftkit.training.dpo import preflight

    pairs = PAIRS[:2] + [{"prompt": "a", "chosen": "same  answer", "rejected": "same answer"},
                         {"prompt": "b", "chosen": "yes", "rejected": " "},
                         {"prompt": "c " * 100, "chosen": "yes", "rejected": "no"}]
    rows = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                                        "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                        "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
    problems = preflight(tiny_tokenizer, rows, max_length=64).problems
    assert problems[0].startswith("1 pair(s) have an empty chosen or rejected answer (rows 3)")
    assert problems[1].startswith("1 pair(s) have the same chosen and rejected answer (rows 2)")
    assert problems[2].startswith("1 pair(s) are longer than max_length=64 tokens (rows 4)")
    assert len(problems) == 3 and preflight(tiny_tokenizer, rows.select(range(2)), max_length=64).problems == []


# --- the lean loss: TRL's loss, computed at the answer positions only ---------------------------

def _trainer(model, tok, tmp_path, settings, adapter_dir=None):
    """A lean trainer built as train_dpo builds it, entered for the test's duration."""
    import contextlib

    from ftkit.training.dpo import _trl_config
    from ftkit.fastpath.dpo_lean import _trainer_class
    from ftkit.models.device import model_info
    from ftkit.runs import new_run
    from ftkit.training.trainer import trainable_model

    stack = contextlib.ExitStack()
    trainee, peft_config = stack.enter_context(trainable_model(model, settings.lora, adapter_dir))
    run = new_run("dpo", {}, root=tmp_path)
    trainer = _trainer_class()(model=trainee, args=_trl_config(settings, run, model_info(model).device),
                               train_dataset=to_trl_pairs(PAIRS, zero_shot()), processing_class=tok,
                               peft_config=peft_config)
    return trainer, stack


def _move_adapter(model, name="default", seed=1):
    """Random LoRA B matrices for one adapter: the policy then differs from its reference."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n and f".{name}." in n:
                p.normal_(0, 0.3)


def _saved_adapter(model, folder, settings):
    from peft import get_peft_model

    from ftkit.training.trainer import trainable_model

    with trainable_model(model, settings.lora) as (trainee, peft_config):
        peft_model = get_peft_model(trainee, peft_config)
        _move_adapter(peft_model, seed=2)
        peft_model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("continued, sft_weight", [(False, 0.0), (True, 1.0)],
                         ids=["fresh-adapter-plain-dpo", "sft-adapter-with-sft-term"])
def test_the_lean_loss_rewards_and_lora_gradients_equal_trls_on_a_batch(tiny, tmp_path, continued, sft_weight):
    from trl import DPOTrainer

    from ftkit.fastpath.dpo_lean import _shared_prompt_rows

    model, tok = tiny  # float32: the two paths differ only by summation order
    settings = DPOSettings(batch_size=4, beta=0.5, sft_weight=sft_weight)
    adapter = _saved_adapter(model, tmp_path / "sft-adapter", settings) if continued else None
    trainer, stack = _trainer(model, tok, tmp_path, settings, adapter)
    with stack:
        # A continued adapter is its own reference (TRL's frozen copy "ref"), a fresh one has the
        # base model as reference; move the trained adapter away from it so the rewards are not 0.
        assert ("ref" in trainer.model.peft_config) == continued
        _move_adapter(trainer.model)
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        found = {}
        for name, loss_of in [("lean", trainer.compute_loss),
                              ("trl", lambda m, b: DPOTrainer.compute_loss(trainer, m, b))]:
            trainer.model.zero_grad()
            loss = loss_of(trainer.model, batch)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
            logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
            trainer._metrics["train"].clear()
            found[name] = (float(loss.detach()), logged, grads)
    (lean, lean_logged, lean_grads), (trl, trl_logged, trl_grads) = found["lean"], found["trl"]
    assert _shared_prompt_rows(trainer.model, batch) is not None  # each pair's prompt went through once
    assert abs(lean_logged["rewards/chosen"]) > 0.01  # the policy is not its reference (it is ~1e-7 then)
    assert lean == pytest.approx(trl, abs=1e-5)
    # Every figure TRL logs, under its names (num_tokens is a running count: the TRL call came second).
    assert set(lean_logged) == set(trl_logged)
    for key in set(trl_logged) - {"num_tokens"}:
        assert lean_logged[key] == pytest.approx(trl_logged[key], abs=1e-5), key
    assert trl_logged["num_tokens"] == 2 * lean_logged["num_tokens"]
    assert len(lean_grads) == len(trl_grads) > 0
    for n, g in trl_grads.items():
        assert g.abs().max() > 0, n
        torch.testing.assert_close(lean_grads[n], g, rtol=1e-4, atol=1e-6, msg=n)


def _family(family, tmp_path):
    from tiny_models import make_tokenizer, save_tiny_family

    plain = family in ("gpt2", "bloom")  # saved without a chat template
    folder = save_tiny_family(tmp_path / family, family, make_tokenizer(None) if plain else None)
    return load_model(folder, device="cpu", dtype="float32", verbose=False)[0]


def _pairs_batch(vocab: int, **collator):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    torch.manual_seed(0)

    def words(k):
        return torch.randint(3, vocab, (k,)).tolist()

    # Prompts and answers of different lengths (one answer of a single token); max_length=26 cuts one.
    pairs = [{"prompt_ids": words(p), "chosen_ids": words(c), "rejected_ids": words(r)}
             for p, c, r in [(9, 3, 6), (14, 1, 2), (5, 7, 7), (20, 4, 9)]]
    return DataCollatorForPreference(pad_token_id=0, **collator)(pairs)


@pytest.mark.parametrize("family, attention", [(f, "sdpa") for f in ("llama", "mistral", "qwen2", "gemma", "phi3",
                                                                      "gpt2")] + [("llama", "eager")])
def test_each_pairs_prompt_once_gives_the_log_probs_of_the_two_whole_sequences(family, attention, tmp_path):
    from ftkit.fastpath.dpo_lean import SHARED_PROMPT_FAMILIES, _completion_logps, _shared_prompt_rows

    model = _family(family, tmp_path)
    model.config._attn_implementation = attention
    batch = _pairs_batch(model.config.vocab_size, max_length=26)
    assert family in SHARED_PROMPT_FAMILIES and _shared_prompt_rows(model, batch) is not None
    with torch.no_grad():
        shared = _completion_logps(model, batch, shared=True)
        apart = _completion_logps(model, batch, shared=False)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    by_hand = (logp * batch["completion_mask"][:, 1:]).sum(1)  # TRL's sum, from every position's logits
    torch.testing.assert_close(apart, by_hand, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared, by_hand, rtol=0, atol=1e-5)


def test_the_prompt_is_not_shared_where_the_model_or_the_truncation_would_change_the_answers_context(tmp_path):
    from ftkit.fastpath.dpo_lean import _completion_logps, _shared_prompt_rows

    llama = _family("llama", tmp_path)
    # Cut from the start (keep_end), the two sides' prompts differ: each sequence goes whole.
    assert _shared_prompt_rows(llama, _pairs_batch(llama.config.vocab_size, max_length=20,
                                                   truncation_mode="keep_end")) is None
    bloom = _family("bloom", tmp_path)  # its ALiBi biases come from a 2D mask
    batch = _pairs_batch(bloom.config.vocab_size)
    assert _shared_prompt_rows(bloom, batch) is None
    with torch.no_grad():
        assert _completion_logps(bloom, batch).shape == (8,)


def test_reference_log_probs_computed_once_equal_the_ones_computed_at_each_step(tiny, tmp_path):
    model, tok = tiny
    trainer, stack = _trainer(model, tok, tmp_path, DPOSettings(batch_size=4))
    with stack:
        _move_adapter(trainer.model)  # the policy is not the reference: a mix-up would show
        torch.manual_seed(0)
        before = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        assert "ref_chosen_logps" not in before
        chosen, rejected = trainer.reference_logps(before)  # as a step computes them: adapters off
        with torch.no_grad(), trainer.model.disable_adapter():
            base = trainer.model(**{k: before[k] for k in ("input_ids", "attention_mask")}).logits
        trainer.precompute_reference()
        assert trainer.precompute_ref_logps
        assert trainer.train_dataset.column_names[-2:] == ["ref_chosen_logps", "ref_rejected_logps"]
        torch.manual_seed(0)
        after = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))  # the same rows, and theirs
        assert torch.equal(after["input_ids"], before["input_ids"])
        torch.testing.assert_close(after["ref_chosen_logps"], chosen, rtol=0, atol=1e-5)
        torch.testing.assert_close(after["ref_rejected_logps"], rejected, rtol=0, atol=1e-5)
        with torch.no_grad():
            on_the_fly = trainer.compute_loss(trainer.model, before)
            precomputed = trainer.compute_loss(trainer.model, after)
    assert float(precomputed) == pytest.approx(float(on_the_fly), abs=1e-6)
    # They are the base model's, by hand: the completion tokens' log-probabilities, summed.
    logp = base[:, :-1].log_softmax(-1).gather(-1, before["input_ids"][:, 1:, None]).squeeze(-1)
    by_hand = (logp * before["completion_mask"][:, 1:]).sum(1)
    torch.testing.assert_close(torch.cat([chosen, rejected]), by_hand, rtol=0, atol=1e-4)


LEAN_OFF = pytest.mark.skipif(not fastpath.enabled("trl", "transformers"),
                              reason=f"the fast paths are off ({fastpath.disabled_reason('trl', 'transformers')}): "
                                     "train_dpo takes TRL's own DPOTrainer")


@LEAN_OFF
def test_a_lean_run_computes_the_reference_once_logs_a_loss_and_trains_the_adapter(tiny, tmp_path, monkeypatch):
    from trl import DPOTrainer

    from ftkit.fastpath.dpo_lean import _trainer_class

    def refused(*args, **kwargs):
        raise AssertionError("TRL's own loss was used")

    monkeypatch.setattr(DPOTrainer, "_compute_loss", refused)
    cls, precomputed = _trainer_class(), []
    original = cls.precompute_reference

    def spy(self):
        original(self)
        precomputed.append(self.train_dataset.column_names)

    monkeypatch.setattr(cls, "precompute_reference", spy)
    model, tok = tiny
    run = train_dpo(model, tok, PAIRS, runs_root=tmp_path,
                    config=DPOSettings(max_steps=3, batch_size=4, logging_steps=1, learning_rate=1e-2))
    assert run.status["status"] == "completed"
    assert len(precomputed) == 1 and "ref_chosen_logps" in precomputed[0]
    logs = run.events("log")
    assert len(logs) == 3 and all(e["loss"] > 0 for e in logs)
    for key in ("rewards/chosen", "rewards/margins", "logps/chosen", "entropy", "mean_token_accuracy"):
        assert all(key in e for e in logs), key
    # The adapter started at B = 0 (no change to the model); training moved it.
    trained = {n: p for n, p in run.model.named_parameters() if "lora_B" in n}
    assert trained and any(p.abs().max() > 0 for p in trained.values())


@LEAN_OFF
def test_a_loss_the_lean_path_does_not_compute_is_refused_before_the_run_with_the_way_out(tiny, tmp_path):
    model, tok = tiny
    for trl in ({"loss_type": "ipo"}, {"use_weighting": True}, {"ld_alpha": 0.5}):
        with pytest.raises(ValueError, match="lean_loss computes DPO's sigmoid loss .* set lean_loss=False"):
            train_dpo(model, tok, PAIRS, runs_root=tmp_path, config=DPOSettings(max_steps=1, trl=trl))
    assert list_runs(tmp_path) == []


def test_lean_loss_off_trains_through_trls_own_loss(tiny, tmp_path, monkeypatch):
    from trl import DPOTrainer

    calls = []
    original = DPOTrainer._compute_loss
    monkeypatch.setattr(DPOTrainer, "_compute_loss", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    model, tok = tiny
    run = train_dpo(model, tok, PAIRS, runs_root=tmp_path, config=DPOSettings(
        max_steps=2, batch_size=4, logging_steps=1, lean_loss=False, sft_weight=0, trl={"loss_type": "ipo"}))
    assert run.status["status"] == "completed" and len(run.events("log")) == 2
    assert len(calls) == 3  # the first-step check, then two steps


def test_a_stopped_lean_run_resumes_to_the_weights_of_a_run_never_stopped(tiny, tmp_path):
    from safetensors.torch import load_file

    from ftkit.training.events import EventBus, StopFlag

    model, tok = tiny
    config = DPOSettings(max_steps=4, batch_size=4, logging_steps=1, save_steps=1, learning_rate=5e-3)
    straight = train_dpo(model, tok, PAIRS, config=config, runs_root=tmp_path / "a")
    stop, bus = StopFlag(), EventBus()
    bus.on("log", lambda e: stop.set() if e["step"] == 2 else None)
    cut = train_dpo(model, tok, PAIRS, config=config, bus=bus, stop=stop, runs_root=tmp_path / "b")
    assert cut.status["status"] == "stopped" and cut.status["step"] < 4
    # A new trainer: the reference's log-probabilities are computed again, the same as before.
    resumed = train_dpo(model, tok, PAIRS, config=config, resume=cut)
    assert resumed.status["status"] == "completed" and resumed.status["step"] == 4
    a = load_file(straight.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_a_time_budget_ends_dpo_completed_and_known_as_such(tiny, tmp_path):
    model, tok = tiny
    # 0.6 ms: over after the first step (the reference pass before it does not count); 20 planned.
    run = train_dpo(model, tok, PAIRS, runs_root=tmp_path, progress=False,
                    config=DPOSettings(max_steps=20, batch_size=4, logging_steps=1, save_steps=100, max_minutes=1e-5))
    status, [end] = run.status, run.events("end")
    assert status["status"] == "completed" and status["ended_by"] == end["ended_by"] == "time budget"
    assert 0 < status["step"] == end["step"] < end["max_steps"] == status["max_steps"] == 20


def test_with_the_fast_paths_off_dpo_trains_with_trls_own_trainer_and_loss(tiny, tmp_path, monkeypatch):
    from trl import DPOTrainer

    from ftkit.training.dpo import trainer_class

    monkeypatch.setenv(fastpath.ENV, "0")
    assert trainer_class() is DPOTrainer and trainer_class(lean=False) is DPOTrainer
    calls = []
    original = DPOTrainer._compute_loss
    monkeypatch.setattr(DPOTrainer, "_compute_loss", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    model, tok = tiny
    # A loss the lean path refuses: the plain path takes it, with lean_loss left on.
    run = train_dpo(model, tok, PAIRS, runs_root=tmp_path, config=DPOSettings(
        max_steps=2, batch_size=4, logging_steps=1, sft_weight=0, trl={"loss_type": "ipo"}))
    assert run.status["status"] == "completed" and len(run.events("log")) == 2
    assert len(calls) == 3  # the first-step check, then two steps: TRL's loss throughout


def test_the_first_step_check_draws_no_random_numbers(tiny, tmp_path, monkeypatch):
    from ftkit.training.dpo import reference_check

    model, tok = tiny
    trainer, stack = _trainer(model, tok, tmp_path, DPOSettings(batch_size=4))
    with stack:
        history = list(trainer.state.log_history)
        state = torch.random.get_rng_state()
        monkeypatch.setattr(torch.random, "set_rng_state", lambda *a: pytest.fail("the global RNG state was set"))
        found = reference_check(trainer)
        assert torch.equal(torch.random.get_rng_state(), state)
        assert trainer.state.log_history == history  # the check's figures belong to no step
        assert set(found) == {"rewards/chosen", "rewards/rejected"} and max(map(abs, found.values())) < 1e-4
        assert reference_check(trainer) == found  # the same first rows each time


def test_trls_own_precomputed_reference_equals_the_lean_one(tiny, tmp_path):
    """TRL's precompute_ref_log_probs computes the same reference log-probabilities as the lean
    trainer's precompute_reference (which ftkit keeps for the reasons in ftkit.fastpath.dpo_lean)."""
    model, tok = tiny
    lean, stack = _trainer(model, tok, tmp_path, DPOSettings(batch_size=4))
    with stack:
        _move_adapter(lean.model)  # the policy is not the reference: a mix-up would show
        lean.precompute_reference()
        ours = lean.train_dataset
    trls, stack = _trainer(model, tok, tmp_path, DPOSettings(batch_size=4, trl={"precompute_ref_log_probs": True}))
    with stack:
        theirs = trls.train_dataset
    assert ours["prompt_ids"] == theirs["prompt_ids"]
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        torch.testing.assert_close(torch.tensor(ours[column]), torch.tensor(theirs[column]), rtol=0, atol=1e-4,
                                   msg=column)
