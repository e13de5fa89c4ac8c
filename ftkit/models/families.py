"""The architecture families ftkit has checked, and what each needs beyond the general handling.

One entry per family, each checked end to end (load, prompt, LoRA SFT, evaluate, merged export) on
a tiny model of it in ``tests/models/test_families.py``; :func:`lora_targets` names the layers LoRA adapts.
Loading reads :data:`FAMILIES` to prepare a tokenizer (:func:`ftkit.models.loading.prepare_tokenizer`).

>>> family_notes("gemma").end_of_turn
'<end_of_turn>'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "Family", "family_notes", "lora_targets"]


@dataclass(frozen=True)
class Family:
    """What ftkit knows about one architecture family (a ``config.model_type``): what it needs
    beyond the general handling, checked end to end (load, prompt, LoRA SFT, evaluate, merged
    export) on a tiny model of it in ``tests/models/test_families.py``."""

    name: str
    note: str  # what was checked, in a sentence, for people
    end_of_turn: str | None = None  # the token that ends a chat turn, where it is not the eos token


# One entry per family checked; a family missing here was not checked. An entry that asks for no
# handling says so on purpose: the general handling was enough there.
FAMILIES: dict[str, Family] = {
    # Hub tokenizers (bigscience/bloom-*) ship no chat template: prepare_tokenizer's plain fallback
    # applies, with its warning. The fused query_key_value is one nn.Linear: adapted whole.
    "bloom": Family("BLOOM", "no chat template: the plain 'role: content' fallback applies; the fused "
                    "query_key_value layer gets one adapter"),
    # No chat template and no pad token: the fallback, and eos as pad. Its layers are transformers'
    # Conv1D (weights stored transposed): "all-linear" includes Conv1D and PEFT sets fan_in_fan_out=True
    # itself (it warns once); the tests check that the saved adapter says so and the merged export
    # answers like the adapter, so nothing is set here.
    "gpt2": Family("GPT-2", "no chat template: the plain 'role: content' fallback applies, eos as pad; "
                   "its Conv1D layers get adapters, PEFT sets fan_in_fan_out=True itself"),
    # Nothing beyond PEFT's defaults (SmolLM2, ftkit's embedded model, is a Llama).
    "llama": Family("Llama", "nothing beyond the defaults"),
    # Nothing beyond PEFT's defaults (q/k/v carry biases; LoRA leaves them as they are).
    "qwen2": Family("Qwen2", "nothing beyond the defaults"),
    # Its chat template ends each turn with <end_of_turn>, yet the tokenizer's eos token is <eos>,
    # which the template never writes: SFT's pre-flight refused every row (the model would not learn
    # to stop), and a merged export would not stop at the end of its turn. The template also refuses
    # a system message (jinja's TemplateError "System role not supported"); ftkit does not rewrite
    # prompts for it: a template without a system prompt works.
    "gemma": Family("Gemma", "its turns end with <end_of_turn>, which ftkit makes the end-of-sequence "
                    "token; its chat template refuses a system prompt", end_of_turn="<end_of_turn>"),
    # Nothing beyond PEFT's defaults: the fused qkv_proj and gate_up_proj get one adapter each.
    "phi3": Family("Phi-3", "nothing beyond the defaults; the fused qkv_proj and gate_up_proj layers get "
                   "one adapter each"),
    # Nothing beyond PEFT's defaults (sliding-window attention needs nothing for LoRA).
    "mistral": Family("Mistral", "nothing beyond the defaults"),
}


def family_notes(model) -> Family | None:
    """What ftkit knows about the family of ``model`` (a model, a PEFT model, its config, or a
    ``model_type``); None for a family that was not checked.

    >>> family_notes("gpt2").note.startswith("no chat template")
    True
    """
    if not isinstance(model, str):
        model = getattr(getattr(model, "config", model), "model_type", "")
    return FAMILIES.get(model)


def lora_targets(model) -> list[str]:
    """The layers that get LoRA adapters, by their name inside a block, sorted.

    For a PEFT model (``run.model``) the layers that carry adapters; for a plain model the ones
    LoRA's default ``target_modules="all-linear"`` adapts: every ``nn.Linear`` and transformers
    ``Conv1D`` (GPT-2) but the output head, as PEFT chooses them.

    >>> from ftkit.models import load_model
    >>> model, tokenizer = load_model("bigscience/bloom-560m")   # doctest: +SKIP
    >>> lora_targets(model)                                      # doctest: +SKIP
    ['dense', 'dense_4h_to_h', 'dense_h_to_4h', 'query_key_value']
    """
    from accelerate.utils import is_peft_model

    if is_peft_model(model):
        from peft.tuners.tuners_utils import BaseTunerLayer

        chosen = [name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    else:
        from transformers.pytorch_utils import Conv1D

        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        import torch

        chosen = [name for name, m in model.named_modules()
                  if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head]
    return sorted({name.rsplit(".", 1)[-1] for name in chosen})
