"""A run's tuned model: the base model it trained from, its saved adapter, and the template to ask it with.

The run record (:mod:`ftkit.runs`) only reads and writes the run folder; this module turns a
record into a model. It works in a new kernel: the base model is loaded again by the name the
run recorded (``config.json``'s ``base_model``), the adapter and the tokenizer from the run's
``adapter/`` folder.

>>> model, tokenizer = load_run_model(load_run("support-sft"), merged=True)   # doctest: +SKIP
>>> run_template(load_run("support-sft")).messages({"prompt": "Where is my order?"})   # doctest: +SKIP
[{'role': 'system', 'content': ...}, {'role': 'user', 'content': 'Where is my order?'}]
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ftkit.models.loading import load_model, prepare_tokenizer, quiet_library_noise
from ftkit.prompts import PromptTemplate

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["load_run_model", "run_template"]


def run_template(run: Run) -> PromptTemplate:
    """The :class:`~ftkit.prompts.PromptTemplate` the run trained on (its ``config.json``): ask the
    tuned model the same way."""
    return PromptTemplate(**run.config["template"])


def load_run_model(run: Run, device: str = "auto", dtype="auto", verbose: bool = False, merged: bool = False):
    """The run's base model with its trained adapter, and its tokenizer, ready for evaluate.

    ``merged=True``: the adapter merged into the weights (a plain transformers model), the form a
    tuned model is served in; its latency compares with the base model's on equal terms (an
    attached adapter adds two small products to every adapted layer). The base weights are loaded
    afresh, so merging never changes a model shared with a notebook.

    >>> model, tokenizer = load_run_model(run, device="cpu", dtype="float32")   # doctest: +SKIP
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    if not (run.adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"run {run.id} has no saved adapter (status: "
                                f"{run.status.get('status')}); nothing to load")
    # The run's own tokenizer (below) carries the template it trained with: the base's warning is noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="this tokenizer has no chat template")
        base, _ = load_model(run.config["base_model"], device=device, dtype=dtype, verbose=verbose)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(run.adapter_dir))
    with quiet_library_noise():
        model = PeftModel.from_pretrained(base, run.adapter_dir, adapter_name="default").eval()
    return (model.merge_and_unload() if merged else model), tokenizer
