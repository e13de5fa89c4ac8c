"""The output head given a contiguous input, so a model with frozen weights runs the same
operations as a trainable one.

transformers computes the first new token's logits from ``hidden[:, -1:, :]``
(``logits_to_keep=1``), a strided view. For a bias-free head, torch's ``matmul`` folds that view
into one matrix product only when the head weight requires grad; for a frozen weight (PEFT freezes
the base model, ``merge_and_unload`` keeps it frozen) it broadcasts the weight to a batched
product, and in bfloat16 on a CPU it first copies the expanded weight: batch x vocabulary x hidden
values per prefill. A tuned variant then looked much slower than the base model it was trained
from, for the same tokens (``benchmarks/latency.py`` measures it). Copying the batch x hidden slice
costs nothing, and the head then runs the trainable model's operations (tested) with the same
logits. It leans on how torch's ``matmul`` dispatches, not on a private name; the plain path
(``FTKIT_FASTPATH=0``) leaves the head alone.

>>> with contiguous_lm_head(model):   # doctest: +SKIP
...     out = model.generate(**enc, max_new_tokens=8)
"""

from __future__ import annotations

import contextlib

__all__ = ["contiguous_lm_head"]


def _packed(x) -> bool:
    """Row-major strides in every dimension. Stricter than ``is_contiguous()``, which skips
    dimensions of size 1: ``hidden[:, -1:, :]`` of a single prompt passes it, yet torch's matmul
    reads the strides and still takes the slow path above."""
    expected = 1
    for size, stride in zip(reversed(x.shape), reversed(x.stride())):
        if stride != expected:
            return False
        expected *= size
    return True


def _contiguous_input(module, args):
    import torch

    if args and isinstance(args[0], torch.Tensor) and not _packed(args[0]):
        return (args[0].clone(memory_format=torch.contiguous_format), *args[1:])
    return None


@contextlib.contextmanager
def contiguous_lm_head(model):
    """Run with the model's output head given a contiguous input, then restore the model as it
    was. Training is untouched: the hook lasts for the ``with`` only."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield model
        return
    handle = head.register_forward_pre_hook(_contiguous_input)
    try:
        yield model
    finally:
        handle.remove()
