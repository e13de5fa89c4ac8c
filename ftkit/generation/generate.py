"""Batched generation with timings and token counts: the local backend, and the one call for both.

:func:`generate` answers conversations with whatever :class:`~ftkit.generation.backend.Backend`
it is given: a transformers model with its tokenizer (wrapped in :class:`LocalModel`) or a hosted
:class:`~ftkit.generation.endpoint.Endpoint`. Locally, prompts are chat messages rendered through
the model's chat template and generated in batches, padded on the left (a decoder-only model
continues from the last position, so padding must come before the text); a batch of short
prompts costs little more than one on a CPU.

Three speed-ups come from :mod:`ftkit.fastpath`, each taken only when
``fastpath.enabled("torch", "transformers")`` (off under ``FTKIT_FASTPATH=0`` or an untested
release, when transformers' own ``generate`` runs each prompt whole):

- the static-cache prefix (:mod:`ftkit.fastpath.static_cache`): the longest token prefix all
  prompts share (a few-shot prompt's system prompt and examples) runs through the model once,
  and each batch starts from a cache holding it;
- the shared-prefix attention (:mod:`ftkit.fastpath.prefix_attention`): within a batch that
  prefix is attended once for all rows, not once per row;
- the contiguous output head (:mod:`ftkit.fastpath.lm_head`): a model with frozen weights (a
  PEFT model, a merged run) runs the trainable model's operations.

Greedy outputs are the same either way (tested); ``benchmarks/generation.py`` and
``benchmarks/latency.py`` measure what each saves.

A shared model is shared state: which adapter is on, and which attention implementation, are
switched for a generation. Every generation holds the model's lock (:func:`model_lock`) from
before it switches until its last token, and sampling draws from a ``torch.Generator`` of its
own, never from torch's global random state.

>>> outs = generate(model, tokenizer, [[{"role": "user", "content": "Hi"}]])  # doctest: +SKIP
>>> outs[0].text, outs[0].prompt_tokens, outs[0].new_tokens                  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from dataclasses import dataclass, replace
from typing import Any

from ftkit import fastpath
from ftkit.fastpath.lm_head import contiguous_lm_head
from ftkit.fastpath.prefix import MIN_CACHED_PREFIX, cache_argument, shared_prefix
from ftkit.generation import stops
from ftkit.generation.backend import Backend, Generation
from ftkit.generation.labels import label_trie, prefix_allowed_tokens_fn

__all__ = ["Generation", "LocalModel", "adapter_state", "as_backend", "contiguous_lm_head", "eos_token_ids",
           "generate", "generation_options", "model_lock", "render_prompts"]

# The libraries whose internals the generation fast paths lean on.
FAST = ("torch", "transformers")


_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _is_peft(model) -> bool:
    from accelerate.utils import is_peft_model

    return is_peft_model(model)


def model_lock(model) -> threading.RLock:
    """The lock that generations on ``model`` hold while they switch its adapters or attention
    and generate.

    Keyed by the underlying transformer, so two PEFT wrappers around the same modules share it.

    >>> model_lock(model) is model_lock(model)                            # doctest: +SKIP
    True
    """
    key = model.get_base_model() if _is_peft(model) else model
    with _locks_guard:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = threading.RLock()
    return lock


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
    adapter. Hold :func:`model_lock` around it when other threads use the model.

    >>> with adapter_state(model, False):        # doctest: +SKIP
    ...     base_outputs = generate(model, tokenizer, prompts)
    """
    if adapter is None:
        yield model
        return
    if not _is_peft(model):
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


def head_context(model):
    """The output head's fast path (:func:`ftkit.fastpath.lm_head.contiguous_lm_head`) where the
    fast paths are on; the model as it is otherwise."""
    return contiguous_lm_head(model) if fastpath.enabled(*FAST) else contextlib.nullcontext(model)


def eos_token_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the generation config's end-of-sequence ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    ids.discard(None)
    return ids


class _SeededSampling:
    """Sampling from a ``torch.Generator``: transformers' ``generate`` takes no generator and
    draws from torch's global random state, which seeding would change for every thread of the
    process. This logits processor applies the sampling warpers (temperature, top-k, top-p; the
    same classes transformers uses), draws each row's next token with ``torch.multinomial(...,
    generator=...)``, and hands back scores where only that token is finite, so ``generate`` runs
    greedy (``do_sample=False``) and takes it. The same distribution as transformers' sampling;
    the same tokens for the same seed, whatever other threads draw meanwhile."""

    def __init__(self, seed: int, temperature: float, top_p: float, top_k: int | None):
        import torch
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.generator = torch.Generator().manual_seed(seed)
        warpers = []
        if temperature is not None and temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers = LogitsProcessorList(warpers)

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        picked = torch.multinomial(probs.cpu(), 1, generator=self.generator).to(scores.device)
        return torch.full_like(scores, float("-inf")).scatter_(1, picked, 0.0)


def generation_options(tokenizer, max_new_tokens: int, do_sample: bool = False, temperature: float = 0.7,
                       top_p: float = 0.9, stop_strings=None, seed: int | None = None, top_k: int | None = None) -> dict:
    """The keyword arguments of ``model.generate`` for these settings: greedy unless ``do_sample``.
    With a ``seed``, sampling draws from a generator of its own (see :class:`_SeededSampling`);
    ``top_k`` is the model's own (``model.generation_config.top_k``), as transformers' sampling uses it."""
    options = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id)
    if do_sample and seed is not None:
        from transformers import LogitsProcessorList

        options.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                       logits_processor=LogitsProcessorList([_SeededSampling(seed, temperature, top_p, top_k)]))
    elif do_sample:
        options.update(temperature=temperature, top_p=top_p)
    else:  # silence the "temperature is set but do_sample is False" warnings of some configs
        options.update(temperature=None, top_p=None, top_k=None)
    if stop_strings:
        options.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    return options


def _count_new(ids: list[int], eos_ids: set[int], pad_id: int | None) -> int:
    """Tokens generated up to and including the first end-of-sequence token (or stop)."""
    for k, t in enumerate(ids):
        if t in eos_ids:
            return k + 1
    n = len(ids)
    while n and pad_id is not None and ids[n - 1] == pad_id:
        n -= 1
    return n


@dataclass
class LocalModel:
    """A transformers model and its tokenizer as a generation backend (batched on this machine).

    >>> outs = LocalModel(model, tokenizer).generate([[{"role": "user", "content": "Hi"}]])  # doctest: +SKIP
    """

    model: Any
    tokenizer: Any
    # A classifier's label set: every answer is one of them (see :func:`generate`'s ``labels``),
    # unless a call passes its own. A backend of its own, so whatever generates through it (the
    # scoring, the timing of the same variant) answers under the same constraint.
    labels: tuple[str, ...] | None = None
    hosted = False  # class attributes, not fields: the Backend protocol's constants
    warmup_rows = 4  # the first call of a model pays for allocations and kernel selection

    @property
    def name(self) -> str:
        config = getattr(self.model, "config", None)
        return str(getattr(config, "name_or_path", "") or type(self.model).__name__)

    def prompt_tokens(self, conversations: list[list[dict]]) -> list[int]:
        return [len(self.tokenizer(t, add_special_tokens=False)["input_ids"])
                for t in render_prompts(self.tokenizer, conversations)]

    def cost_usd(self, prompt_tokens: int, new_tokens: int) -> None:
        return None

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 32, batch_size: int | None = 16,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                 stop_strings: list[str] | None = None, prefix_cache: bool = True, adapter=None,
                 progress: bool = True, answer_end: str | None = None,
                 labels: list[str] | None = None) -> list[Generation]:
        """See :func:`generate`; holds :func:`model_lock` for the whole call."""
        with model_lock(self.model):
            return _generate_locked(self.model, self.tokenizer, conversations, max_new_tokens=max_new_tokens,
                                    batch_size=batch_size or 16, do_sample=do_sample, temperature=temperature,
                                    top_p=top_p, seed=seed, stop_strings=stop_strings, prefix_cache=prefix_cache,
                                    adapter=adapter, progress=progress, answer_end=answer_end,
                                    labels=labels if labels is not None else self.labels)


def as_backend(model, tokenizer=None) -> Backend:
    """``model`` itself when it is a :class:`~ftkit.generation.backend.Backend` (an endpoint, a
    :class:`LocalModel`), else ``LocalModel(model, tokenizer)``.

    >>> as_backend(Endpoint(model="m")).hosted                         # doctest: +SKIP
    True
    """
    return model if isinstance(model, Backend) else LocalModel(model, tokenizer)


def generate(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 32,
             batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, seed: int | None = None, stop_strings: list[str] | None = None,
             prefix_cache: bool = True, adapter=None, progress: bool = True,
             answer_end: str | None = None, labels: list[str] | None = None) -> list[Generation]:
    """Generate an answer for each conversation (a list of ``{role, content}`` messages).

    Greedy by default, so results are repeatable; ``do_sample=True`` with ``temperature``,
    ``top_p`` and ``seed`` samples (the same answers for the same seed and batches). Generation
    ends at the end-of-sequence token, after ``max_new_tokens``, or at any string in
    ``stop_strings`` (cut from the text), and where the answer a task expects ends: ``answer_end``
    (``"code block"``, ``"first line"``; :mod:`ftkit.generation.stops`), each row on its own, the
    text cut after that end. A hosted backend stops at its own end-of-turn, and its answers are cut
    at ``answer_end`` after. ``labels`` (a classifier's label set; None: unconstrained): a local
    model's answer can only be one of them, then its end-of-turn (:mod:`ftkit.generation.labels`);
    a hosted backend cannot be constrained so and answers freely. ``adapter`` is passed to
    :func:`adapter_state`. Latency
    is the batch's wall time divided evenly among its examples, plus an equal share of the shared
    prefix's one-time pass: what a request costs when served in batches.

    ``model`` may be any :class:`~ftkit.generation.backend.Backend`, such as a hosted
    :class:`~ftkit.generation.endpoint.Endpoint` (``tokenizer``: None): the same call, answered
    by its server (``batch_size`` then caps the requests in flight).
    """
    backend = as_backend(model, tokenizer)
    local = {k: v for k, v in (("answer_end", answer_end), ("labels", labels)) if v} \
        if isinstance(backend, LocalModel) else {}
    outs = backend.generate(
        conversations, max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
        temperature=temperature, top_p=top_p, seed=seed, stop_strings=stop_strings, prefix_cache=prefix_cache,
        adapter=adapter, progress=progress, **local)
    if answer_end and "answer_end" not in local:  # a server cannot stop there: cut as a local answer would be
        outs = [replace(o, text=stops.cut(o.text, answer_end).strip()) for o in outs]
    return outs


def _generate_locked(model, tokenizer, conversations, *, max_new_tokens, batch_size, do_sample, temperature, top_p,
                     seed, stop_strings, prefix_cache, adapter, progress, answer_end=None,
                     labels=None) -> list[Generation]:
    import torch
    from tqdm.auto import tqdm

    texts = render_prompts(tokenizer, conversations)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    pad_id = tokenizer.pad_token_id
    eos_ids = eos_token_ids(model, tokenizer)
    options = generation_options(tokenizer, max_new_tokens, do_sample, temperature, top_p, stop_strings, seed=seed,
                                 top_k=getattr(model.generation_config, "top_k", None))
    fast = fastpath.enabled(*FAST)
    trie = None
    if labels:
        # max_new_tokens stays the caller's cap: one inside a label cuts it into an invalid answer
        # (the pipeline's cap covers its training answers, so the labels, with a margin).
        trie = label_trie(tokenizer, labels, eos_ids)

    results: list[Generation | None] = [None] * len(texts)
    with torch.inference_mode(), adapter_state(model, adapter), head_context(model):
        n_prefix = shared_prefix(ids) if prefix_cache and fast else 0
        cache, prefix_s, argument = None, 0.0, cache_argument(model) or "past_key_values"
        if n_prefix >= MIN_CACHED_PREFIX:
            from ftkit.fastpath.static_cache import prefill

            t0 = time.perf_counter()
            cache = prefill(model, ids[0][:n_prefix])
            # The shared prefix is paid once; each request carries an equal share of it.
            prefix_s = (time.perf_counter() - t0) / len(texts)
        else:
            n_prefix = 0
        # Longest first: batches of similar length waste less compute on padding.
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        head = ids[0][:n_prefix]
        device = model.device
        bar = tqdm(total=len(texts), desc="generating", unit="ex", disable=not progress)
        with _prefix_attention(model, n_prefix):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                suffixes = [ids[i][n_prefix:] for i in idx]
                width = max(len(s) for s in suffixes)
                input_ids = torch.tensor([head + [pad_id] * (width - len(s)) + s for s in suffixes], device=device)
                mask = torch.tensor([[1] * n_prefix + [0] * (width - len(s)) + [1] * len(s) for s in suffixes],
                                    device=device)
                extra = {}
                if cache is not None:
                    from ftkit.fastpath.static_cache import batch_cache

                    extra[argument] = batch_cache(model, cache, len(idx), n_prefix + width + max_new_tokens)
                # Each row ends where its answer does (a state per batch: which rows ended, when).
                ended = stops.stopping_criteria(answer_end, tokenizer, input_ids.shape[1])
                if ended is not None:
                    from transformers import StoppingCriteriaList

                    extra["stopping_criteria"] = StoppingCriteriaList([ended])
                if trie is not None:  # left padding: every row's answer starts at the input's width
                    extra["prefix_allowed_tokens_fn"] = prefix_allowed_tokens_fn(trie, input_ids.shape[1])
                t0 = time.perf_counter()
                out = model.generate(input_ids=input_ids, attention_mask=mask, **options, **extra)
                elapsed = time.perf_counter() - t0
                new = out[:, input_ids.shape[1]:]
                for row, i in enumerate(idx):
                    toks = new[row].tolist()
                    n = _count_new(toks, eos_ids, pad_id)
                    if ended is not None and row in ended.ended_at:  # not the padding after (pad may be eos)
                        n = min(n, ended.ended_at[row])
                    text = stops.cut(tokenizer.decode(toks[:n], skip_special_tokens=True), answer_end)
                    for s in stop_strings or ():
                        text = text.split(s, 1)[0]
                    results[i] = Generation(text=text.strip(), prompt_tokens=len(ids[i]), new_tokens=n,
                                            latency_s=elapsed / len(idx) + prefix_s)
                bar.update(len(idx))
        bar.close()
    return results


def _prefix_attention(model, n_prefix: int):
    """Each batch attends to the cached shared prefix once, not once per row
    (:mod:`ftkit.fastpath.prefix_attention`); only with a cached prefix, so only on the fast path."""
    if n_prefix <= 0:
        return contextlib.nullcontext(model)
    from ftkit.fastpath.prefix_attention import attend_prefix_once

    return attend_prefix_once(model, n_prefix)
