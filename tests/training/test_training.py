"""What SFT and DPO share (ftkit.training.settings, ftkit.training.trainer): settings, the model a run
trains, quiet output (thread-safe), the pre-flight report, both precision paths, light imports and
the plain TRL path with the fast paths off."""

import dataclasses
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

from ftkit.models import device as models  # cpu_has_native_bf16 is read where choose_device is
from ftkit.training.dpo import DPOSettings
from ftkit.training.events import EventBus
from ftkit.models.device import model_info
from ftkit.models.loading import load_model
from ftkit.models.tuned import load_run_model
from ftkit.training.sft import SFTSettings, train_sft
from ftkit.training.settings import LoraSettings, Preflight, TrainingSettings, device_defaults, settings_fields

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address")]] * 4
FAST = dict(max_steps=3, batch_size=4, logging_steps=1, save_steps=100, learning_rate=1e-2)


@pytest.fixture
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


# --- settings --------------------------------------------------------------------------------

def test_sft_and_dpo_settings_share_one_declaration_of_their_common_fields():
    shared = {f.name: f for f in dataclasses.fields(TrainingSettings)}
    for cls in (SFTSettings, DPOSettings):
        assert issubclass(cls, TrainingSettings)
        for f in dataclasses.fields(cls):
            if f.name in shared:  # a method may change a default, never the help text
                assert f.metadata == shared[f.name].metadata, (cls.__name__, f.name)
    assert (SFTSettings().name, SFTSettings().epochs, SFTSettings().learning_rate) == ("sft", 2.0, 1e-3)
    assert (DPOSettings().name, DPOSettings().epochs, DPOSettings().learning_rate) == ("dpo", 1.0, 5e-5)


def test_the_form_and_help_keep_each_methods_field_order():
    assert [f.name for f in settings_fields(SFTSettings)] == [
        "name", "epochs", "max_steps", "learning_rate", "batch_size", "micro_batch_size", "max_length",
        "logging_steps", "eval_steps", "sample_every", "sample_rows", "save_steps", "early_stopping_patience", "seed",
        "max_minutes", "lora", "trl"]
    assert [f.name for f in settings_fields(DPOSettings)] == [
        "name", "epochs", "max_steps", "learning_rate", "beta", "sft_weight", "lean_loss", "batch_size",
        "micro_batch_size", "max_length", "logging_steps", "save_steps", "seed", "max_minutes", "lora", "trl"]


def test_device_defaults_shrink_interactive_runs_on_a_cpu_only():
    assert device_defaults("cpu") == {"batch_size": 4, "logging_steps": 1, "max_minutes": 5.0}
    assert device_defaults("cuda:0") == {} and device_defaults("mps") == {}
    SFTSettings(**device_defaults("cpu"))  # every key is a real setting


def test_on_a_cpu_sft_takes_the_whole_batch_in_one_pass_and_dpo_keeps_passes_of_four(tmp_path):
    """SFT computes a shared prompt start once per pass, so fewer, larger passes are faster there;
    DPO's CPU default is unchanged. An explicit micro_batch_size wins for both."""
    from trl import DPOConfig

    from ftkit.models.device import choose_device
    from ftkit.runs import new_run
    from ftkit.training.sft import _trl_config
    from ftkit.training.settings import micro_batches
    from ftkit.training.trainer import trl_arguments

    assert micro_batches(8, 0, "cpu") == (4, 2) and micro_batches(8, 0, "cpu", cpu_default=0) == (8, 1)
    assert micro_batches(8, 2, "cpu", cpu_default=0) == (2, 4) and micro_batches(8, 0, "cuda", 4) == (8, 1)
    run, cpu = new_run("x", {}, root=tmp_path), choose_device("cpu", "float32")
    assert SFTSettings().batch_size == 4 and DPOSettings().batch_size == 8
    sft = _trl_config(SFTSettings(batch_size=8), run, cpu, False)
    assert (sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (8, 1)
    dpo = trl_arguments(DPOSettings(batch_size=8), run, cpu, DPOConfig)
    assert (dpo["per_device_train_batch_size"], dpo["gradient_accumulation_steps"]) == (4, 2)
    sft = _trl_config(SFTSettings(batch_size=8, micro_batch_size=2), run, cpu, False)
    assert (sft.per_device_train_batch_size, sft.gradient_accumulation_steps) == (2, 4)


# --- the model a run trains ------------------------------------------------------------------

def test_training_leaves_the_callers_model_unchanged_and_shares_its_weights(tiny, tmp_path):
    model, tok = tiny
    ids = tok(["Where is my order?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(ids).logits.clone()
    flags = [p.requires_grad for p in model.parameters()]
    run = train_sft(model, tok, ROWS, config=SFTSettings(**FAST), runs_root=tmp_path)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # the base model answers as before
        assert not torch.equal(run.model(ids).logits, before)  # the trained one does not
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    # No second copy of the weights: the trained model's base layers are the caller's tensors.
    base_q = run.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert base_q is model.model.layers[0].self_attn.q_proj.weight
    again = train_sft(model, tok, ROWS, config=SFTSettings(**FAST), runs_root=tmp_path)  # a new run, same base
    assert again.status["status"] == "completed" and again.id != run.id


def test_a_model_that_already_carries_adapters_is_refused_with_what_to_do(tiny, tmp_path):
    model, tok = tiny
    run = train_sft(model, tok, ROWS, config=SFTSettings(**FAST), runs_root=tmp_path)
    with pytest.raises(ValueError, match=r"already carries LoRA adapters .*Pass the base model.*resume=run"):
        train_sft(run.model, tok, ROWS, config=SFTSettings(**FAST), runs_root=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1  # the refused call left no run folder behind


def test_full_fine_tuning_trains_a_copy(tiny, tmp_path):
    model, tok = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = SFTSettings(**{**FAST, "learning_rate": 1e-4}, lora=LoraSettings(full_finetune=True))
    run = train_sft(model, tok, ROWS, config=settings, runs_root=tmp_path)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in run.model.named_parameters())


def test_model_info_for_a_model_ftkit_did_not_load():
    from transformers import LlamaConfig, LlamaForCausalLM

    plain = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                         num_attention_heads=2)).to(torch.bfloat16)
    info = model_info(plain)
    assert (info.device.device, info.device.dtype) == ("cpu", torch.bfloat16)
    assert info.device.trainer_precision() == {"bf16": True, "fp16": False}  # from its weights


# --- both precision paths, forced ----------------------------------------------------------------

@pytest.mark.parametrize("native_bf16,dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_training_runs_in_the_precision_the_cpu_gets(native_bf16, dtype, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native_bf16)
    model, tok = load_model(tiny_model_dir, device="cpu", verbose=False)
    assert model.dtype == dtype and model_info(model).device.dtype == dtype
    run = train_sft(model, tok, ROWS, config=SFTSettings(**FAST), runs_root=tmp_path)
    assert run.status["status"] == "completed" and len(run.events("log")) == 3
    assert all(e["loss"] > 0 for e in run.events("log"))
    assert str(dtype).removeprefix("torch.") in run.config["device"]
    lora = {n: p for n, p in run.model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: it was trained
    # PEFT keeps the adapter (and so AdamW's state) in float32 on a bf16 base model.
    assert {p.dtype for p in lora.values()} == {torch.float32}
    assert "_original_forward" not in run.model.__dict__  # mixed precision's autocast wrapper is gone


# --- what a learner sees -------------------------------------------------------------------------

def test_training_and_loading_hide_known_noise_and_keep_real_warnings(tiny, tmp_path, capfd):
    model, tok = tiny
    bus = EventBus()
    bus.on("log", lambda e: warnings.warn(f"a real warning at step {e['step']}", UserWarning))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = train_sft(model, tok, ROWS, config=SFTSettings(**FAST), bus=bus, runs_root=tmp_path)
        load_run_model(run, device="cpu", dtype="float32")  # PEFT's loading asks for it too
        warnings.warn("is_gradient_checkpointing is deprecated (outside training)", FutureWarning)
    messages = [str(w.message) for w in seen]
    assert "a real warning at step 1" in messages
    assert [m for m in messages if "is_gradient_checkpointing" in m] == [
        "is_gradient_checkpointing is deprecated (outside training)"]  # silenced only around training
    err = capfd.readouterr().err
    assert "Tokenizing train dataset" not in err and "Truncating" not in err


def test_preflight_html_highlights_trained_tokens_and_escapes_the_data():
    check = Preflight(segments=[("<b>prompt</b> ", False), ("<script>x</script>", True)], problems=["a < b"])
    page = check._repr_html_()
    assert "<mark class='ftkit-trained' style='background:#fff3a3'>&lt;script&gt;x&lt;/script&gt;</mark>" in page
    assert "<span class='ftkit-context' style='color:#888'>&lt;b&gt;prompt&lt;/b&gt; </span>" in page
    assert "<script>" not in page and "a &lt; b" in page
    assert check.example == "<b>prompt</b> [[<script>x</script>]]"


def test_under_fsdp_the_adapter_is_saved_from_a_full_state_dict(tmp_path, tiny_tokenizer):
    from types import SimpleNamespace

    from ftkit.training.events import StopFlag
    from ftkit.runs import new_run
    from ftkit.training.trainer import train_and_record

    calls = []
    plugin = SimpleNamespace(set_state_dict_type=lambda kind: calls.append(("state_dict_type", kind)))
    model = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(
        model=model, is_fsdp_enabled=True, train=lambda resume_from_checkpoint=None: calls.append(("train",)),
        args=SimpleNamespace(disable_tqdm=True), callback_handler=SimpleNamespace(callbacks=[]),
        pop_callback=lambda cls: None, add_callback=lambda cb: None,
        state=SimpleNamespace(global_step=3, max_steps=3, best_model_checkpoint=None),
        save_model=lambda folder: calls.append(("save_model", folder)),
        accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), wait_for_everyone=lambda: None,
                                    unwrap_model=lambda m, keep_fp32_wrapper=True: m))
    run = new_run("fsdp", {}, root=tmp_path)
    train_and_record(run, trainer, tiny_tokenizer, EventBus(), StopFlag())
    assert [c[0] for c in calls] == ["train", "state_dict_type", "save_model"]
    assert calls[1] == ("state_dict_type", "FULL_STATE_DICT") and run.status["status"] == "completed"


def test_the_trainers_printing_callbacks_give_way_to_one_loss_bar_or_to_nothing(tiny, tmp_path):
    """transformers adds ProgressCallback (PrinterCallback when disable_tqdm), both print the log
    dicts; show_progress leaves ftkit's LossBar, or nothing, and the other callbacks as they were."""
    from transformers import PrinterCallback, ProgressCallback

    from ftkit.training.events import EventCallback, LossBar, StopFlag
    from ftkit.models.device import choose_device
    from ftkit.prompts import zero_shot
    from ftkit.runs import new_run
    from ftkit.training.sft import _trainer_class, _trl_config, to_trl_rows
    from ftkit.training.trainer import show_progress

    model, tok = tiny
    run, cpu = new_run("x", {}, root=tmp_path), choose_device("cpu", "float32")
    for progress, trl, bar in [(True, {}, True), (False, {}, False), (True, {"disable_tqdm": True}, False)]:
        args = _trl_config(SFTSettings(**FAST, trl=trl), run, cpu, False, progress)
        assert args.disable_tqdm is (not bar)  # set either way: not left to transformers' log level
        trainer = _trainer_class()(model=model, args=args, train_dataset=to_trl_rows(ROWS, zero_shot()),
                                   processing_class=tok, callbacks=[EventCallback(EventBus(), StopFlag())])
        printer = PrinterCallback if args.disable_tqdm else ProgressCallback
        assert any(type(cb) is printer for cb in trainer.callback_handler.callbacks)  # what transformers adds
        printing = (ProgressCallback, PrinterCallback)
        others = [cb for cb in trainer.callback_handler.callbacks if not isinstance(cb, printing)]
        show_progress(trainer, progress)
        show_progress(trainer, progress)  # twice: still one bar at most
        kept = trainer.callback_handler.callbacks
        bars = [cb for cb in kept if type(cb) is LossBar]
        assert [cb for cb in kept if isinstance(cb, printing)] == bars and len(bars) == int(bar)
        assert [cb for cb in kept if type(cb) is not LossBar] == others


def test_training_on_a_worker_thread_leaves_the_process_warning_filters_alone(tiny, tmp_path):
    """warnings.catch_warnings is not thread-safe: a panel's training thread must not enter it."""
    model, tok = tiny
    before, during, errors = list(warnings.filters), [], []
    bus = EventBus()
    bus.on("log", lambda e: during.append(list(warnings.filters)))

    def train():
        try:
            train_sft(model, tok, ROWS, config=SFTSettings(**FAST), bus=bus, runs_root=tmp_path, progress=False)
        except Exception as err:  # noqa: BLE001 - reported below, on the test's thread
            errors.append(err)

    worker = threading.Thread(target=train)
    worker.start()
    worker.join()
    assert errors == [] and len(during) == 3
    assert all(filters == before for filters in during) and list(warnings.filters) == before


def test_hide_known_noise_hides_transformers_deprecation_only_where_transformers_issues_it(tiny):
    from ftkit.training.trainer import hide_known_noise

    model, _ = tiny
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        hide_known_noise()
        hide_known_noise()  # once is enough: the filter is not added twice
        assert model.is_gradient_checkpointing is False  # transformers warns each time it is read
        warnings.warn("`is_gradient_checkpointing` is deprecated (said by someone else)", FutureWarning)
        filters = [f for f in warnings.filters if f[0] == "ignore" and f[3] is not None
                   and f[3].pattern.startswith("transformers")]
    assert [str(w.message) for w in seen] == ["`is_gradient_checkpointing` is deprecated (said by someone else)"]
    assert len(filters) == 1


def test_settings_methods_events_and_curves_import_no_ml_library():
    code = ("import sys, ftkit.training.settings, ftkit.training.sft, ftkit.training.dpo, ftkit.training.events, "
            "ftkit.training.curves, ftkit.training\n"
            "from ftkit.training import SFTSettings, DPOSettings, EventBus\n"
            "print([m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', 'pandas', 'accelerate') "
            "if m in sys.modules])")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_with_the_fast_paths_off_sft_trains_with_trls_own_trainer(tiny, tmp_path, monkeypatch):
    from trl import SFTTrainer

    from ftkit import fastpath
    from ftkit.fastpath import sft_loss
    from ftkit.training.sft import trainer_class

    monkeypatch.setenv(fastpath.ENV, "0")
    assert trainer_class() is SFTTrainer
    monkeypatch.setattr(sft_loss, "completion_loss", lambda *a: pytest.fail("the fast path was taken"))
    model, tok = tiny
    run = train_sft(model, tok, ROWS, config=SFTSettings(**FAST), runs_root=tmp_path, progress=False)
    assert run.status["status"] == "completed" and all(e["loss"] > 0 for e in run.events("log"))
    monkeypatch.setenv(fastpath.ENV, "1")
    if fastpath.enabled("trl", "transformers"):
        assert trainer_class() is sft_loss.trainer_class() and trainer_class() is not SFTTrainer
