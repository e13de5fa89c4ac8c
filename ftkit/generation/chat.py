"""Chat with a model token by token, and check that its adapters do what a side-by-side needs.

:func:`stream_reply` yields the assistant's answer to a conversation as it is generated:
``model.generate`` runs in a background thread and hands text to a transformers
``TextIteratorStreamer``. The chunks join to exactly the text :func:`ftkit.generation.generate.generate`
returns for the same conversation and settings (greedy: the same tokens, cut at the same
end-of-sequence token or stop string, stripped the same way), so a streamed answer can be compared
with a batch-evaluated one.

One model can carry several adapters (the base model is the same weights with adapters off).
Which adapter is on is state of the model, so a generation holds the per-model lock
(:func:`ftkit.generation.generate.model_lock`, which batched generation holds too) from before it
switches adapters until its last token: two chats, or a chat and an evaluation, on the same model
never interleave their adapter states.

>>> model = with_adapters(base_model, [sft_run, dpo_run])               # doctest: +SKIP
>>> adapter_effect(model, tokenizer, sft_run.id)    # 0.0: the adapter changes nothing  # doctest: +SKIP
>>> for chunk in stream_reply(model, tokenizer, [{"role": "user", "content": "Hi"}],
...                           adapter=sft_run.id):                       # doctest: +SKIP
...     print(chunk, end="", flush=True)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import torch
from accelerate.utils import is_peft_model

from ftkit.generation.generate import (_count_new, adapter_state, eos_token_ids, generation_options, head_context,
                                       model_lock, render_prompts)

__all__ = ["DEFAULT_PROBE", "NO_EFFECT", "adapter_effect", "model_lock", "next_token_logits", "stream_reply",
           "with_adapters"]

# The conversation the checks look at: short, and of the kind a chat playground gets.
DEFAULT_PROBE = [{"role": "user", "content": "Hello! Who are you?"}]
# Below this largest change of a next-token logit an adapter counts as doing nothing. A trained
# LoRA moves logits by far more than 1e-3 even after one step; an untrained one (PEFT starts B at
# zero) moves them by exactly 0.
NO_EFFECT = 1e-6

def _cut(text: str, stop_strings) -> str:
    """Cut at stop strings, in the order :func:`ftkit.generation.generate.generate` cuts (before stripping)."""
    for s in stop_strings or ():
        text = text.split(s, 1)[0]
    return text


def stream_reply(model, tokenizer, messages: list[dict], *, adapter=None, max_new_tokens: int = 128,
                 do_sample: bool = False, temperature: float = 0.7, top_p: float = 0.9,
                 stop_strings: list[str] | None = None, seed: int | None = None) -> Iterator[str]:
    """Yield the assistant's answer to ``messages`` (``{role, content}`` dicts) chunk by chunk.

    The conversation is rendered with the tokenizer's chat template, ending where the assistant
    answers. ``adapter`` is passed to :func:`ftkit.generation.generate.adapter_state` (``False``: the base
    model with adapters off; a name: that adapter) and holds for the whole generation. Greedy by
    default; ``do_sample=True`` samples with ``temperature`` and ``top_p`` from ``seed``. The
    chunks join to exactly what :func:`ftkit.generation.generate.generate` returns for the same arguments:
    leading and trailing blanks are left out, and text that may begin a stop string is held back
    until the next chunk shows it does not. An error in the generation is raised here, after the
    chunks produced before it. Closing the iterator early stops the generation at the next token.

    >>> "".join(stream_reply(model, tokenizer, [{"role": "user", "content": "Hi"}], adapter=False))  # doctest: +SKIP
    'Hello! How can I help you today?'
    """
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    text = render_prompts(tokenizer, [messages])[0]
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    eos_ids = eos_token_ids(model, tokenizer)
    # The same options as ftkit.generation.generate.generate, so greedy gives the same tokens; the stop
    # tokens are the ones generate() cuts at, so generation ends where its text ends.
    options = generation_options(tokenizer, max_new_tokens, do_sample, temperature, top_p, stop_strings, seed=seed,
                                 top_k=getattr(model.generation_config, "top_k", None))
    options["eos_token_id"] = sorted(eos_ids)

    cancelled = threading.Event()

    class Cancelled(StoppingCriteria):  # the consumer closed the iterator: stop at the next token
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    new_ids: list[list[int]] = []
    failure: list[BaseException] = []

    def work():
        try:
            # The lock and the adapter state are taken here, in the thread that generates: they
            # must last until the last token, not until the consumer's first chunk.
            with model_lock(model), adapter_state(model, adapter), head_context(model), torch.inference_mode():
                device = model.device
                out = model.generate(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device),
                                     streamer=streamer, stopping_criteria=StoppingCriteriaList([Cancelled()]),
                                     **options)
                new_ids.append(out[0, ids.shape[1]:].tolist())
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            failure.append(err)
            streamer.end()  # generate() never reached its own end(): without this the consumer waits forever

    thread = threading.Thread(target=work, name="ftkit-chat", daemon=True)
    thread.start()
    # Hold back the last characters that may be the start of a stop string, and trailing blanks
    # (generate() strips them; a later chunk may show they were inside the answer).
    hold = max((len(s) - 1 for s in stop_strings or ()), default=0)
    received, sent = "", ""
    try:
        for chunk in streamer:
            received += chunk
            safe = _cut(received, stop_strings)
            if safe == received:
                safe = safe[:len(safe) - hold]
            safe = safe.strip()
            if safe.startswith(sent) and len(safe) > len(sent):
                yield safe[len(sent):]
                sent = safe
    finally:
        cancelled.set()  # a no-op after a normal end; stops the generation if the consumer left early
        thread.join()
    if failure:
        raise failure[0]
    # The final text from the token ids, decoded as generate() decodes them: whatever the streamer's
    # incremental decoding did, the answer ends exactly as the batch answer does.
    tokens = new_ids[0]
    n = _count_new(tokens, eos_ids, tokenizer.pad_token_id)
    final = _cut(tokenizer.decode(tokens[:n], skip_special_tokens=True), stop_strings).strip()
    if final.startswith(sent):
        if len(final) > len(sent):
            yield final[len(sent):]
    else:  # cannot happen with byte-level tokenizers; never take back text already shown
        rest = _cut(received, stop_strings).strip()
        if rest.startswith(sent) and len(rest) > len(sent):
            yield rest[len(sent):]


def _as_messages(probe) -> list[dict]:
    if probe is None:
        return list(DEFAULT_PROBE)
    return [{"role": "user", "content": probe}] if isinstance(probe, str) else list(probe)


@torch.inference_mode()
def next_token_logits(model, tokenizer, probe=None, adapter=None) -> torch.Tensor:
    """The logits of the first answer token for ``probe`` (messages or a user message; default
    :data:`DEFAULT_PROBE`), with ``adapter`` as in :func:`ftkit.generation.generate.adapter_state`, in float32.

    >>> next_token_logits(model, tokenizer, "Hi", adapter=False).shape     # doctest: +SKIP
    torch.Size([49152])
    """
    text = render_prompts(tokenizer, [_as_messages(probe)])[0]
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with model_lock(model), adapter_state(model, adapter):
        logits = model(input_ids=ids.to(model.device)).logits
    return logits[0, -1].float().cpu()


def adapter_effect(model, tokenizer, adapter, probe=None) -> float:
    """How much ``adapter`` changes the model: the largest absolute difference of a next-token
    logit on ``probe`` between adapters off (the base model) and ``adapter`` on.

    0 means the adapter does nothing: an untrained LoRA (PEFT starts its B matrices at zero), or
    an adapter that did not load onto the layers it names. Below :data:`NO_EFFECT` counts as 0.

    >>> adapter_effect(model, tokenizer, run.id)                          # doctest: +SKIP
    0.8731
    """
    with model_lock(model):  # both passes see the same weights, no generation in between
        base = next_token_logits(model, tokenizer, probe, adapter=False)
        tuned = next_token_logits(model, tokenizer, probe, adapter=adapter)
    return float((tuned - base).abs().max())



def _carries_lora_layers(model) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def with_adapters(model, runs):
    """A PEFT model over ``model``'s own weights carrying each run's adapter, named by run id.

    ``model`` itself is left as it was: the adapters go into a structural copy whose modules are
    new but whose weight tensors are ``model``'s (no second copy of the weights in memory), so
    ``model`` keeps answering as the base model for every other panel, and the copy with
    adapters off is exactly that base model. ``model`` may already be a PEFT model (a run's
    ``run.model``): its adapters stay, and the runs' are added beside them. Without runs,
    ``model`` is returned as it is. Every run's adapter must fit ``model`` (trained on it).

    >>> chat_model = with_adapters(model, [run])                          # doctest: +SKIP
    >>> chat_model.peft_config.keys()                                     # doctest: +SKIP
    dict_keys(['20261125-134501-support-sft'])
    """
    from peft import PeftModel

    from ftkit.models.loading import quiet_library_noise, shared_weights_copy
    from ftkit.runs import Run

    runs = list(runs)
    if not is_peft_model(model) and _carries_lora_layers(model):
        raise ValueError("this model carries LoRA layers from a training run but is not a PEFT model, so its "
                         "adapters cannot be turned off and no column would show the base model. Load the base "
                         "model again with ftkit.load_model(), or pass the run's PEFT model (run.model)")
    if is_peft_model(model) and any(getattr(m, "merged", False) for m in model.modules()):
        # Turning a merged adapter off unmerges it, which would write into the shared weights.
        raise ValueError("this PEFT model has an adapter merged into its weights; call model.unmerge_adapter() "
                         "first, or pass the base model")
    if not runs:
        return model
    for run in runs:
        if not isinstance(run, Run):
            raise TypeError(f"runs must be ftkit.runs.Run objects (from train_sft, train_dpo or load_run), "
                            f"not {type(run).__name__}")
        if not (run.adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"run {run.id} has no saved adapter (status: {run.status.get('status')}); "
                                    "pass finished runs only")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    chat_model = shared_weights_copy(model)
    try:
        with quiet_library_noise():
            for run in runs:
                if is_peft_model(chat_model) and run.id in chat_model.peft_config:
                    continue  # already on the model (a run's own run.model)
                try:
                    if is_peft_model(chat_model):
                        chat_model.load_adapter(run.adapter_dir, adapter_name=run.id)
                    else:
                        chat_model = PeftModel.from_pretrained(chat_model, run.adapter_dir, adapter_name=run.id)
                except (RuntimeError, ValueError, KeyError) as err:
                    raise ValueError(f"run {run.id}'s adapter does not fit this model (it was trained on "
                                     f"{run.config.get('base_model', 'another model')!r}): {err}. Pass the base "
                                     "model the run was trained from") from err
    finally:
        for p, flag in flags:  # PEFT freezes the base weights it wraps, and they are shared with model
            p.requires_grad_(flag)
    return chat_model.eval()
