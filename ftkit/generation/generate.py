"""Batched generation with timings and token counts, and a shared-prefix KV cache.

Prompts are chat messages rendered through the model's chat template and generated in batches,
padded on the left (a decoder-only model continues from the last position, so padding must come
before the text). On a 2-core CPU a batch of 16 short prompts costs little more than one.

Few-shot prompts repeat the same long prefix (system prompt + solved examples) in every request.
With ``prefix_cache=True`` (the default) the longest token prefix shared by all prompts is run
through the model once; each batch then starts from a preallocated cache holding that prefix and
only computes its own suffix. The padding then sits between the prefix and the suffix; position
ids come from the attention mask, so every token gets the position it would have without the
cache, and greedy outputs are the same as without it (tested). Within a batch the prefix is also
attended once for all rows rather than once per row (:mod:`ftkit.fastpath.prefix_attention`): on a 2-core
CPU a 10-shot prompt of the built-in example then costs 1.3-1.5x its zero-shot prompt
(benchmarks/generation.py), 2x without it.

The output head is handed a contiguous input (:func:`contiguous_lm_head`): without it a model
whose weights are frozen (a PEFT model, a merged run) paid for a copy of the whole head weight
once per batch, and a tuned variant looked twice as slow as the base model it was trained from.

>>> outs = generate(model, tokenizer, [[{"role": "user", "content": "Hi"}]])  # doctest: +SKIP
>>> outs[0].text, outs[0].prompt_tokens, outs[0].new_tokens                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from dataclasses import dataclass

import torch
from accelerate.utils import is_peft_model
from tqdm.auto import tqdm

from ftkit.fastpath.prefix_attention import attend_prefix_once

__all__ = ["Generation", "adapter_state", "contiguous_lm_head", "eos_token_ids", "generate", "generation_options",
           "render_prompts"]

# Below this many shared tokens a cached prefix saves less than the cache copies cost.
MIN_CACHED_PREFIX = 32


@dataclass
class Generation:
    """One output: the text, the tokens it cost, and its share of the batch's wall time."""

    text: str
    prompt_tokens: int
    new_tokens: int
    latency_s: float


def render_prompts(tokenizer, conversations: list[list[dict]]) -> list[str]:
    """The exact text the model sees for each conversation, ending where the assistant answers."""
    return [
        tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)
        for m in conversations
    ]


@contextlib.contextmanager
def adapter_state(model, adapter=None):
    """Run with PEFT adapters as asked, then restore: ``None`` leaves the model as it is,
    ``False`` turns adapters off (the base model, same weights in memory), a name enables that
    adapter.

    >>> with adapter_state(model, False):        # doctest: +SKIP
    ...     base_outputs = generate(model, tokenizer, prompts)
    """
    if adapter is None:
        yield model
        return
    if not is_peft_model(model):
        if adapter is False:
            yield model
            return
        raise ValueError(f"adapter {adapter!r} was asked for, but the model has no PEFT adapters")
    if adapter is False:
        with model.disable_adapter():
            yield model
        return
    if adapter not in model.peft_config:
        raise ValueError(f"no adapter {adapter!r}; the model has: {', '.join(model.peft_config)}")
    previous = model.active_adapter
    model.set_adapter(adapter)
    try:
        yield model
    finally:
        model.set_adapter(previous)


def _packed(x: torch.Tensor) -> bool:
    """Row-major strides in every dimension. Stricter than ``is_contiguous()``, which skips
    dimensions of size 1: ``hidden[:, -1:, :]`` of a single prompt passes it, yet torch's matmul
    reads the strides and still takes the slow path below."""
    expected = 1
    for size, stride in zip(reversed(x.shape), reversed(x.stride())):
        if stride != expected:
            return False
        expected *= size
    return True


def _contiguous_input(module, args):
    if args and isinstance(args[0], torch.Tensor) and not _packed(args[0]):
        return (args[0].clone(memory_format=torch.contiguous_format), *args[1:])
    return None


@contextlib.contextmanager
def contiguous_lm_head(model):
    """Run with the model's output head given a contiguous input, then restore the model as it was.

    transformers computes the first token's logits from ``hidden[:, -1:, :]`` (``logits_to_keep=1``),
    a strided view. For a bias-free head, torch's ``matmul`` folds that view into one matrix
    product only when the head weight requires grad; for a frozen weight (PEFT freezes the base
    model, ``merge_and_unload`` keeps it frozen) it broadcasts the weight to a batched product,
    and in bfloat16 on a CPU it first copies the expanded weight: for the embedded model, 16 x
    49152 x 576 values (906 MB) per batch. On a 2-core CPU with avx512_bf16 (torch 2.13) that head
    call took 1.6 s against 12 ms, and benchmarks/latency.py measured 1.7-1.85x the base model's
    time per request (batches of 16, same tokens) for the frozen copy, 1.01x with this. Copying
    the 16 x 576 slice costs nothing, and the head then runs the trainable model's operations
    (tested), with the same logits. Training is untouched: the hook lasts for the ``with`` only.

    >>> with contiguous_lm_head(model):   # doctest: +SKIP
    ...     out = model.generate(**enc, max_new_tokens=8)
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        yield model
        return
    handle = head.register_forward_pre_hook(_contiguous_input)
    try:
        yield model
    finally:
        handle.remove()


def eos_token_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the generation config's end-of-sequence ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    ids.discard(None)
    return ids


def generation_options(tokenizer, max_new_tokens: int, do_sample: bool = False, temperature: float = 0.7,
                       top_p: float = 0.9, stop_strings=None) -> dict:
    """The keyword arguments of ``model.generate`` for these settings: greedy unless ``do_sample``."""
    options = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id)
    if do_sample:
        options.update(temperature=temperature, top_p=top_p)
    else:  # silence the "temperature is set but do_sample is False" warnings of some configs
        options.update(temperature=None, top_p=None, top_k=None)
    if stop_strings:
        options.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    return options


def _shared_prefix(sequences: list[list[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one token of its own."""
    if len(sequences) < 2:
        return 0
    first, n = sequences[0], min(len(s) for s in sequences) - 1
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in sequences):
            return i
    return max(n, 0)


def _batch_cache(model, prefix_cache, batch: int, max_len: int):
    """A preallocated (static) cache holding the shared prefix once per row of the batch.

    Static, not dynamic: a dynamic cache concatenates every new token onto the whole cache at
    every step, which for an 800-token few-shot prefix cost more than the prefix itself
    (measured: 6.8 s against 3.8 s for a batch of 16 on a 2-core CPU).
    """
    from transformers import StaticCache

    config = model.get_base_model().config if is_peft_model(model) else model.config
    cache = StaticCache(config=config, max_cache_len=max_len)
    for i, layer in enumerate(prefix_cache.layers):
        cache.update(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1), i)
    return cache


def _cache_kwarg(model) -> str | None:
    """The argument under which the model's forward takes a KV cache: transformers renamed
    ``past_key_values`` to ``cache`` during the 5.x series; None for a model that takes neither.
    Read once per model class (it is asked at every SFT step)."""
    base = model.get_base_model() if is_peft_model(model) else model
    return next((a for a in ("cache", "past_key_values") if _forward_accepts(type(base), a)), None)


def _last_logits_only(model) -> dict:
    """``logits_to_keep=1`` where the model takes it: the shared prefix's pass only needs its cache,
    not the vocabulary's logits at every position (0.13 s for an 829-token prefix on 2 cores)."""
    base = model.get_base_model() if is_peft_model(model) else model
    return {"logits_to_keep": 1} if _forward_accepts(type(base), "logits_to_keep") else {}


@functools.cache
def _forward_accepts(cls, name: str) -> bool:
    """Whether the model class's forward takes the argument ``name`` (its signature read once)."""
    return name in inspect.signature(cls.forward).parameters


def _count_new(ids: list[int], eos_ids: set[int], pad_id: int | None) -> int:
    """Tokens generated up to and including the first end-of-sequence token (or stop)."""
    for k, t in enumerate(ids):
        if t in eos_ids:
            return k + 1
    n = len(ids)
    while n and pad_id is not None and ids[n - 1] == pad_id:
        n -= 1
    return n


@torch.inference_mode()
def generate(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 32,
             batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, seed: int | None = None, stop_strings: list[str] | None = None,
             prefix_cache: bool = True, adapter=None, progress: bool = True) -> list[Generation]:
    """Generate an answer for each conversation (a list of ``{role, content}`` messages).

    Greedy by default, so results are repeatable; ``do_sample=True`` with ``temperature``,
    ``top_p`` and ``seed`` samples. Generation ends at the end-of-sequence token, after
    ``max_new_tokens``, or at any string in ``stop_strings`` (cut from the text). ``adapter`` is passed
    to :func:`adapter_state`. Latency is the batch's wall time divided evenly among its examples,
    plus an equal share of the shared prefix's one-time pass: what a request costs when served in
    batches.

    ``model`` may also be a hosted :class:`~ftkit.generation.endpoint.Endpoint` (``tokenizer``: None): the
    same call, answered by its server (``batch_size`` then caps the requests in flight).
    """
    from ftkit.generation.endpoint import Endpoint  # imported here: endpoint.py imports this module

    if isinstance(model, Endpoint):
        if adapter is not None:
            raise ValueError(f"adapter={adapter!r} was asked for, but {model.model} is a hosted endpoint: it has "
                             "no adapters to switch; leave adapter=None")
        return model.generate(conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed,
                              stop_strings=stop_strings, progress=progress)
    texts = render_prompts(tokenizer, conversations)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    pad_id = tokenizer.pad_token_id
    eos_ids = eos_token_ids(model, tokenizer)
    options = generation_options(tokenizer, max_new_tokens, do_sample, temperature, top_p, stop_strings)
    if seed is not None:
        torch.manual_seed(seed)

    results: list[Generation | None] = [None] * len(texts)
    with adapter_state(model, adapter), contiguous_lm_head(model):
        device = model.device
        n_prefix = _shared_prefix(ids) if prefix_cache else 0
        cache, prefix_s, cache_kwarg = None, 0.0, _cache_kwarg(model) or "past_key_values"
        if n_prefix >= MIN_CACHED_PREFIX:
            t0 = time.perf_counter()
            prefix = torch.tensor([ids[0][:n_prefix]], device=device)
            out = model(input_ids=prefix, use_cache=True, **_last_logits_only(model))
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            # The shared prefix is paid once; each request carries an equal share of it.
            prefix_s = (time.perf_counter() - t0) / len(texts)
        else:
            n_prefix = 0
        # Longest first: batches of similar length waste less compute on padding.
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        head = ids[0][:n_prefix]
        bar = tqdm(total=len(texts), desc="generating", unit="ex", disable=not progress)
        # Each batch attends to the shared prefix once, not once per row (ftkit.fastpath.prefix_attention).
        with attend_prefix_once(model, n_prefix):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                suffixes = [ids[i][n_prefix:] for i in idx]
                width = max(len(s) for s in suffixes)
                input_ids = torch.tensor([head + [pad_id] * (width - len(s)) + s for s in suffixes], device=device)
                mask = torch.tensor([[1] * n_prefix + [0] * (width - len(s)) + [1] * len(s) for s in suffixes],
                                    device=device)
                extra = {}
                if cache is not None:
                    extra[cache_kwarg] = _batch_cache(model, cache, len(idx), n_prefix + width + max_new_tokens)
                t0 = time.perf_counter()
                out = model.generate(input_ids=input_ids, attention_mask=mask, **options, **extra)
                elapsed = time.perf_counter() - t0
                new = out[:, input_ids.shape[1]:]
                for row, i in enumerate(idx):
                    toks = new[row].tolist()
                    n = _count_new(toks, eos_ids, pad_id)
                    text = tokenizer.decode(toks[:n], skip_special_tokens=True)
                    for s in stop_strings or ():
                        text = text.split(s, 1)[0]
                    results[i] = Generation(text=text.strip(), prompt_tokens=len(ids[i]), new_tokens=n,
                                            latency_s=elapsed / len(idx) + prefix_s)
                bar.update(len(idx))
        bar.close()
    return results
