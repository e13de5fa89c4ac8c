"""One test per private name (or unstated behaviour) of TRL and transformers that the training fast
paths rely on (ftkit.fastpath.sft_loss, ftkit.fastpath.dpo_lean, ftkit.fastpath.trainer_metrics).

An upgrade that removes or changes one fails here, by name, saying what to do, instead of deep
inside a trainer in the middle of a run. These check the installed releases whether or not
FTKIT_FASTPATH is set: they say whether the fast paths would work on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect

import pytest
import torch

from ftkit import fastpath
from ftkit.models.loading import load_model

ROWS = [{"prompt": "Where is my order?", "completion": "order_status"},
        {"prompt": "I was charged twice", "completion": "billing"}] * 2
PAIRS = [{"prompt": "Where is my order?", "chosen": "order_status", "rejected": "billing"},
         {"prompt": "I was charged twice", "chosen": "billing", "rejected": "order_status"}] * 2


def broken(library: str, symbol: str, what: str) -> str:
    """The failure message: the symbol, what changed, and the way out."""
    version = importlib.metadata.version(library)
    return (f"{library} {version}: {symbol} {what}; ftkit's training fast path relies on it. Run with "
            f"FTKIT_FASTPATH=0 (TRL's own trainers, same results) and pin {library} to a tested line "
            f"({library} {fastpath.TESTED[library]}, ftkit.fastpath.TESTED)")


def parameters(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)


@pytest.fixture(scope="module")
def sft_trainer(tiny_model_dir, tmp_path_factory):
    from trl import SFTTrainer

    from ftkit.models.device import choose_device
    from ftkit.prompts import zero_shot
    from ftkit.runs import new_run
    from ftkit.training.sft import SFTSettings, _trl_config, to_trl_rows

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)  # LoRA goes on it
    settings = SFTSettings(max_steps=1, batch_size=4)
    run = new_run("contract", {}, root=tmp_path_factory.mktemp("sft"))
    return SFTTrainer(model=model, args=_trl_config(settings, run, choose_device("cpu", "float32"), False),
                      train_dataset=to_trl_rows(ROWS, zero_shot()), processing_class=tok,
                      peft_config=settings.lora.peft_config())


@pytest.fixture(scope="module")
def dpo_trainer(tiny_model_dir, tmp_path_factory):
    from trl import DPOTrainer

    from ftkit.models.device import choose_device
    from ftkit.prompts import zero_shot
    from ftkit.runs import new_run
    from ftkit.training.dpo import DPOSettings, _trl_config, to_trl_pairs
    from ftkit.training.trainer import trainable_model

    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    settings = DPOSettings(max_steps=1, batch_size=4)
    run = new_run("contract", {}, root=tmp_path_factory.mktemp("dpo"))
    with trainable_model(model, settings.lora) as (trainee, peft_config):
        yield DPOTrainer(model=trainee, ref_model=None,
                         args=_trl_config(settings, run, choose_device("cpu", "float32"), progress=False),
                         train_dataset=to_trl_pairs(PAIRS, zero_shot()), processing_class=tok,
                         peft_config=peft_config)


def _has_metric_store(trainer) -> bool:
    store = getattr(trainer, "_metrics", None)
    return (isinstance(store, dict) and {"train", "eval"} <= set(store)
            and all(getattr(store[m], "default_factory", None) is list for m in ("train", "eval")))


# --- SFT (ftkit.fastpath.sft_loss) ---------------------------------------------------------------

def test_sft_trainer_compute_loss_takes_num_items_in_batch():
    from trl import SFTTrainer

    names = parameters(SFTTrainer.compute_loss)
    assert names[:5] == ["self", "model", "inputs", "return_outputs", "num_items_in_batch"], broken(
        "trl", "SFTTrainer.compute_loss(model, inputs, return_outputs, num_items_in_batch)",
        f"has the parameters {names}")


def test_sft_trainer_keeps_metrics_by_mode(sft_trainer):
    assert _has_metric_store(sft_trainer), broken(
        "trl", "SFTTrainer._metrics", "is no longer a {'train', 'eval'} dict of lists")


def test_sft_trainer_counts_train_tokens(sft_trainer):
    assert isinstance(getattr(sft_trainer, "_total_train_tokens", None), int), broken(
        "trl", "SFTTrainer._total_train_tokens", "is gone or no longer an int")


def test_sft_trainer_knows_its_tensor_parallel_size(sft_trainer):
    assert isinstance(getattr(sft_trainer, "_tp_size", None), int), broken(
        "trl", "SFTTrainer._tp_size", "is gone or no longer an int")


def test_sft_trainer_says_when_its_own_loss_is_needed(sft_trainer):
    """The fast loss stands in only for the plain NLL: these say when it must not."""
    missing = [name for name in ("_is_vision_dataset", "aux_loss_enabled", "compute_loss_func", "label_smoother")
               if not hasattr(sft_trainer, name)]
    missing += [f"args.{name}" for name in ("loss_type", "average_tokens_across_devices")
                if not hasattr(sft_trainer.args, name)]
    assert not missing, broken("trl", f"SFTTrainer's {', '.join(missing)}", "is gone")


# --- transformers, for both fast losses ------------------------------------------------------------

def test_a_boolean_logits_to_keep_projects_only_the_kept_positions(tiny):
    model, _ = tiny
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    keep = torch.tensor([[False, True, True, False], [False, False, True, False]])
    with torch.no_grad():
        kept = model(input_ids=ids, logits_to_keep=keep).logits
        every = model(input_ids=ids).logits
    assert kept.shape == (3, model.config.vocab_size), broken(
        "transformers", "forward(logits_to_keep=<boolean mask>)", f"returns logits of shape {tuple(kept.shape)}")
    torch.testing.assert_close(kept, every[keep], rtol=0, atol=1e-5)


def test_a_models_cache_repeats_along_the_batch(tiny):
    from ftkit.fastpath.prefix import cache_argument

    model, _ = tiny
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True, logits_to_keep=1)
    cache = out.cache if "cache" in out else out.get("past_key_values")
    assert cache_argument(model) is not None and hasattr(cache, "batch_repeat_interleave"), broken(
        "transformers", "the forward's cache argument and Cache.batch_repeat_interleave", "are gone")


def test_a_models_config_names_its_attention_implementation(tiny):
    model, _ = tiny
    assert getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager"), broken(
        "transformers", "PretrainedConfig._attn_implementation", "is gone or names neither sdpa nor eager")


# --- DPO (ftkit.fastpath.dpo_lean) -----------------------------------------------------------------

def test_dpo_trainer_keeps_metrics_by_mode(dpo_trainer):
    assert _has_metric_store(dpo_trainer), broken(
        "trl", "DPOTrainer._metrics", "is no longer a {'train', 'eval'} dict of lists")


def test_dpo_trainer_counts_train_tokens(dpo_trainer):
    assert isinstance(getattr(dpo_trainer, "_total_train_tokens", None), int), broken(
        "trl", "DPOTrainer._total_train_tokens", "is gone or no longer an int")


def test_dpo_trainer_knows_its_tensor_parallel_size(dpo_trainer):
    assert isinstance(getattr(dpo_trainer, "_tp_size", None), int), broken(
        "trl", "DPOTrainer._tp_size", "is gone or no longer an int")


def test_dpo_trainer_holds_its_loss_settings_and_reference_state(dpo_trainer):
    missing = [name for name in ("precompute_ref_logps", "loss_types", "loss_weights", "beta", "ref_model",
                                 "aux_loss_enabled", "_is_vision_dataset") if not hasattr(dpo_trainer, name)]
    assert not missing, broken("trl", f"DPOTrainer's {', '.join(missing)}", "is gone")


def test_dpo_trainer_computes_its_loss_in_compute_loss_underscore():
    from trl import DPOTrainer

    assert parameters(DPOTrainer._compute_loss)[:4] == ["self", "model", "inputs", "return_outputs"], broken(
        "trl", "DPOTrainer._compute_loss(model, inputs, return_outputs)", "is gone or takes other parameters")


def test_dpo_trainer_scores_a_batch_under_the_reference():
    from trl import DPOTrainer

    assert parameters(DPOTrainer.compute_ref_log_probs)[:3] == ["self", "model", "inputs"], broken(
        "trl", "DPOTrainer.compute_ref_log_probs(model, inputs)", "is gone or takes other parameters")


def test_trainer_prepares_inputs_in_prepare_inputs():
    from transformers import Trainer

    assert parameters(Trainer._prepare_inputs)[:2] == ["self", "inputs"], broken(
        "transformers", "Trainer._prepare_inputs(inputs)", "is gone or takes other parameters")


def test_dpo_config_has_the_fields_the_lean_loss_checks():
    from trl import DPOConfig

    names = {f.name for f in dataclasses.fields(DPOConfig)}
    missing = sorted({"loss_type", "loss_weights", "f_divergence_type", "ld_alpha", "use_weighting",
                      "precompute_ref_log_probs", "precompute_ref_batch_size", "sync_ref_model"} - names)
    assert not missing, broken("trl", f"DPOConfig's {', '.join(missing)}", "is gone")


def test_trl_use_adapter_is_a_context_manager_taking_model_and_adapter_name(dpo_trainer):
    from trl.trainer import utils

    use_adapter = getattr(utils, "use_adapter", None)
    assert use_adapter is not None and parameters(use_adapter)[:2] == ["model", "adapter_name"], broken(
        "trl", "trl.trainer.utils.use_adapter(model, adapter_name)", "is gone or takes other parameters")
    with use_adapter(dpo_trainer.model, None) as entered:  # None: every adapter off
        assert isinstance(use_adapter(dpo_trainer.model, None), contextlib.AbstractContextManager)
    assert entered is None or entered is dpo_trainer.model


def test_trl_disable_gradient_checkpointing_takes_model_and_kwargs():
    from trl.models import utils

    fn = getattr(utils, "disable_gradient_checkpointing", None)
    assert fn is not None and parameters(fn)[:2] == ["model", "gradient_checkpointing_kwargs"], broken(
        "trl", "trl.models.utils.disable_gradient_checkpointing(model, gradient_checkpointing_kwargs)",
        "is gone or takes other parameters")
