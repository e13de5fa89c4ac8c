"""SFT's next-token loss computed leaner: the same loss and gradients as TRL's ``SFTTrainer``, with
the LM head over the completion positions only and a prompt start the rows share computed once.

:func:`ftkit.training.sft.train_sft` trains with :func:`trainer_class` when
``fastpath.enabled("trl", "transformers")``; otherwise with TRL's ``SFTTrainer`` as TRL ships it.
Two things make it lean:

- TRL's fused LM head scores every position of the batch on devices without Triton (CPUs), and
  computes entropy and top-1 over the whole vocabulary with a recompute in backward, for a loss
  that covers a few completion tokens of each example. The model's own ``logits_to_keep`` (a
  boolean mask: transformers >= 5) projects just the trained positions (:func:`completion_loss`).
- Prompts of one task start alike (the chat template's system prompt, a label list). Those tokens
  go through the model once per pass instead of once per row (:func:`forward_after_prefix`), the
  prefix found by :func:`ftkit.fastpath.prefix.shared_prefix_of_batch`.

``benchmarks/time_to_accuracy.py`` measures what each saves. What it leans on: TRL's
``SFTTrainer.compute_loss`` signature and its ``_metrics``/``_total_train_tokens`` (written through
:mod:`ftkit.fastpath.trainer_metrics`), a boolean ``logits_to_keep``, a cache argument and the
cache's ``batch_repeat_interleave``; ``tests/fastpath/test_training_contracts.py`` checks each, and
``tests/training/test_sft.py`` checks the loss and gradients against TRL's own.

>>> import torch
>>> completion_positions(torch.tensor([[False, True], [True, True]])).tolist()
[[False, True, False], [True, True, False]]
"""

from __future__ import annotations

import functools

from ftkit.fastpath import prefix
from ftkit.fastpath.trainer_metrics import count_train_tokens, figures, train_tokens

__all__ = ["completion_loss", "completion_positions", "forward_after_prefix", "shared_prefix", "trainer_class"]


def completion_positions(trained):
    """The positions whose logits a next-token loss needs, for the model's ``logits_to_keep``:
    ``trained`` (batch, length - 1) marks the target tokens 1 .. length - 1 that count, and
    position t predicts token t + 1. A batch with nothing to learn keeps its first position, so
    the loss is still a (zero) part of the graph. SFT's loss and DPO's lean loss both project
    only these (this module, :mod:`ftkit.fastpath.dpo_lean`)."""
    import torch

    keep = torch.zeros((trained.shape[0], trained.shape[1] + 1), dtype=torch.bool, device=trained.device)
    keep[:, :-1] = trained
    if not keep.any():
        keep[:, 0] = True
    return keep


def shared_prefix(inputs: dict, keep) -> int:
    """How many leading tokens every row of the batch has in common and that need no logits
    (:func:`ftkit.fastpath.prefix.shared_prefix_of_batch`); 0 for a batch with other model inputs
    than ids and mask (packed rows carry position ids) or without either."""
    ids, mask = inputs.get("input_ids"), inputs.get("attention_mask")
    if ids is None or mask is None or set(inputs) - {"input_ids", "attention_mask"}:
        return 0
    return prefix.shared_prefix_of_batch(ids, mask, keep)


def forward_after_prefix(model, inputs: dict, keep, shared: int):
    """The logits at ``keep`` for a batch whose rows share their first ``shared`` tokens: the shared
    tokens go through the model once (one row), their keys and values are repeated for every row,
    and the rest of each row attends to them as to its own. The same function of the weights as one
    padded forward pass (tests/training/test_sft.py checks the loss and gradients for every family), with the
    prefix computed once instead of once per row; its gradient is the sum over the rows, as autograd
    gives it. None where the model takes no cache argument."""
    import torch

    argument = prefix.cache_argument(model)
    # Dropout would draw one mask for the shared prefix instead of one per row (GPT-2's configs
    # have 0.1): another function of the weights. SmolLM2 and LoRA here have none.
    dropout = model.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    if argument is None or dropout:
        return None
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    head = model(input_ids=ids[:1, :shared], attention_mask=mask[:1, :shared], use_cache=True, logits_to_keep=1)
    # transformers 5 names it `cache` (reading the old name logs a deprecation warning on the console)
    cache = head.cache if hasattr(type(head), "cache") or "cache" in head else getattr(head, "past_key_values", None)
    if not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(ids.shape[0])
    return model(input_ids=ids[:, shared:], attention_mask=mask, use_cache=True, logits_to_keep=keep[:, shared:],
                 **{argument: cache}).logits


def completion_loss(trainer, model, inputs, num_items_in_batch):
    """The next-token loss over the completion positions only, and the token figures TRL logs
    (``entropy``, ``mean_token_accuracy``, ``num_tokens``). None where that does not apply (no
    labels, a model that ignores ``logits_to_keep``), so the caller falls back to TRL's path."""
    import torch
    import torch.nn.functional as F

    labels = inputs.get("labels")
    if labels is None:
        return None
    target = labels[:, 1:]
    trained = target != -100
    keep = completion_positions(trained)
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    shared = shared_prefix(forward, keep)
    logits = forward_after_prefix(model, forward, keep, shared) if shared else None
    if logits is None:
        logits = model(**forward, use_cache=False, logits_to_keep=keep).logits
    if logits.dim() != 2:  # a model that ignores the mask returns (batch, length, vocab)
        return None
    wanted = target[keep[:, :-1]]  # keep's last column is never set: same count as logits rows
    total = F.cross_entropy(logits.float(), wanted, ignore_index=-100, reduction="sum")
    count = trained.sum() if num_items_in_batch is None else num_items_in_batch
    loss = total / torch.as_tensor(count).clamp(min=1)
    if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        loss = loss * trainer.accelerator.num_processes

    mode = "train" if trainer.model.training else "eval"
    metrics = figures(trainer, mode)
    with torch.no_grad():
        valid = wanted != -100
        scored = logits[valid].float()
        log_p = scored.log_softmax(-1)
        n = max(int(valid.sum()), 1)
        metrics["entropy"].append(float(-(log_p.exp() * log_p).sum()) / n)
        metrics["mean_token_accuracy"].append(float((scored.argmax(-1) == wanted[valid]).sum()) / n)
        if mode == "train" and "attention_mask" in inputs:
            count_train_tokens(trainer, int(inputs["attention_mask"].sum()))
        metrics["num_tokens"] = [train_tokens(trainer)]
    return loss


@functools.cache
def trainer_class():
    """TRL's ``SFTTrainer`` with :func:`completion_loss` as its plain-NLL loss; TRL's own loss for
    everything else it offers (other loss types, label smoothing, a router loss, images, several
    processes)."""
    from trl import SFTTrainer

    class CompletionSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            simple = (not return_outputs and self.compute_loss_func is None and self.label_smoother is None
                      and self.args.loss_type == "nll" and not self.aux_loss_enabled
                      and not getattr(self, "_is_vision_dataset", False)
                      and self.accelerator.num_processes == 1)
            loss = completion_loss(self, model, inputs, num_items_in_batch) if simple else None
            if loss is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return loss

    return CompletionSFTTrainer
