"""DPO's loss computed leaner: the same loss as TRL's ``DPOTrainer``, in a fraction of its work per step
(``benchmarks/dpo_speed.py`` times both side by side).

:func:`ftkit.training.dpo.train_dpo` trains with it when ``DPOSettings.lean_loss`` is on (the default)
and ``fastpath.enabled("trl", "transformers")``; otherwise with TRL's ``DPOTrainer`` as TRL ships it. It
computes TRL's ``sigmoid`` loss, plus the ``sft`` term (RPO) when ``sft_weight`` weighs it in, and
logs the figures TRL logs under TRL's names; in float32 the losses agree with TRL's to 1e-5
(tests/training/test_dpo.py compares the loss, the rewards and the LoRA gradients on a batch). Three things
make it lean:

- only the answer positions go through the LM head (:func:`_completion_logps`), not every
  position of both sequences over the whole vocabulary;
- each pair's prompt goes through the model once for both answers (:func:`_shared_prompt_rows`),
  for the model families in :data:`SHARED_PROMPT_FAMILIES`;
- the reference's log-probabilities are computed once, before the first step
  (``precompute_reference`` on the trainer :func:`_trainer_class` builds), instead of in a second
  forward pass at every step. TRL's own ``precompute_ref_log_probs`` gives the same numbers
  (tests/training/test_dpo.py compares them) but ftkit keeps this one: TRL's runs while the trainer is
  built, so ftkit's first-step check (:func:`ftkit.training.dpo.reference_check`) would compare
  the policy with numbers computed before anything could be checked, not with the reference the
  steps use; it scores every position through the full LM head; and it hashes every weight of the
  model to name a cache file, which it then writes.

The private names of TRL it relies on (``_metrics``, ``_total_train_tokens``, ``_tp_size`` through
:mod:`ftkit.fastpath.trainer_metrics`, ``_compute_loss``, ``_prepare_inputs``,
``precompute_ref_logps``, ``trl.trainer.utils.use_adapter``) each have a contract test in
``tests/fastpath/test_training_contracts.py``.

Where it does not apply: TRL's other loss types, f-divergences, ``ld_alpha`` and ``use_weighting``
(:func:`_lean_refusal` says so before a run starts), a Mixture-of-Experts model's router loss, and
pairs with images; train those with ``lean_loss=False``. Where the shared-prompt layout does not
apply, each sequence goes through the model whole; a model that ignores ``logits_to_keep`` is
trained with TRL's own loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

from ftkit.fastpath.sft_loss import completion_positions
from ftkit.fastpath.trainer_metrics import count_train_tokens, figures, train_tokens

__all__ = ["LEAN_LOSS_TYPES", "SHARED_PROMPT_FAMILIES"]

# TRL's loss terms the lean path computes; TRL 1.16's "sigmoid" takes no label smoothing either.
LEAN_LOSS_TYPES = ("sigmoid", "sft")


def _lean_refusal(args) -> str | None:
    """Why the lean loss cannot stand in for TRL's under these DPOConfig values (a config, or a
    dict of its keyword arguments; a missing key has DPOConfig's default), or None."""
    from trl import DPOConfig

    def get(name):
        if not isinstance(args, dict):
            return getattr(args, name)
        if name in args:
            return args[name]
        f = DPOConfig.__dataclass_fields__[name]
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    loss_types = get("loss_type")
    loss_types = [loss_types] if isinstance(loss_types, str) else list(loss_types)
    extra = [t for t in loss_types if t not in LEAN_LOSS_TYPES]
    found = [f"loss_type {', '.join(map(repr, extra))}"] if extra else []
    if get("f_divergence_type") != "reverse_kl":
        found.append(f"f_divergence_type={get('f_divergence_type')!r}")
    if get("ld_alpha") is not None:
        found.append("ld_alpha")
    if get("use_weighting"):
        found.append("use_weighting")
    if not found:
        return None
    return (f"lean_loss computes DPO's sigmoid loss and the SFT term (sft_weight), not {' or '.join(found)}; "
            "set lean_loss=False to train with TRL's own loss, which has it")


def _completion_logps(model, inputs: dict, details: bool = False, shared: bool = True):
    """Each sequence's summed log-probability of its completion tokens, as TRL's loss sums them
    (TRL's order: the chosen sequences, then the rejected), through the LM head at the completion
    positions only; None when the model ignores ``logits_to_keep``.

    The model's own ``logits_to_keep`` projects just the positions whose next token is a
    completion token, as SFT's completion loss does (ftkit.fastpath.sft_loss): ~5 of ~100 positions per sequence
    for the built-in routing pairs. With ``shared`` (and where :func:`_shared_prompt_rows` applies)
    each pair's prompt goes through the model once instead of twice. With ``details``, also the
    per-token figures: ``(logps, tokens)``, tokens a dict of ``logp``, ``row`` (the sequence, in
    TRL's order) and, without gradient, ``entropy``, ``mean_logit`` and ``top1``.
    """
    import torch
    import torch.nn.functional as F

    packed = _shared_prompt_rows(model, inputs) if shared else None
    if packed is not None:
        forward, keep, target, real, row = packed
        logits = model(**forward, use_cache=False, logits_to_keep=keep).logits
        if logits.dim() != 3 or logits.shape[:2] != keep.shape:  # a model that ignores it returns all positions
            return None
        logits, target, real, row = logits.flatten(0, 1), target.flatten(), real.flatten(), row.flatten()
    else:
        ids = inputs["input_ids"]
        trained = inputs["completion_mask"][:, 1:].bool()
        keep = completion_positions(trained)
        forward = {k: v for k, v in inputs.items()
                   if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps")}
        logits = model(**forward, use_cache=False, logits_to_keep=keep).logits  # boolean: transformers >= 5
        if logits.dim() != 2:  # a model that ignores the mask returns (batch, length, vocab)
            return None
        target = ids[:, 1:][keep[:, :-1]]  # keep's last column is never set: one target per row of logits
        real = F.pad(trained, (0, 1))[keep]  # False only on the stand-in position of a batch without completions
        row = keep.nonzero()[:, 0]  # nonzero() walks the mask in the order the rows were taken
    logits = logits.float()
    token_logps = -F.cross_entropy(logits, target, reduction="none") * real
    logps = token_logps.new_zeros(inputs["input_ids"].size(0)).index_add(0, row, token_logps)
    if not details:
        return logps
    tokens = {"logp": token_logps[real], "row": row[real]}
    with torch.no_grad():
        scored_logits = logits.detach()[real]
        log_p = scored_logits.log_softmax(-1)
        tokens.update(entropy=-(log_p.exp() * log_p).sum(-1), mean_logit=scored_logits.mean(-1),
                      top1=scored_logits.argmax(-1) == target[real])
    return logps, tokens


# The families whose models take a custom 4D attention mask and position ids as they are, so that
# an answer in the shared-prompt layout is scored exactly as in its own row: tests/training/test_dpo.py checks
# each in float32. Bloom is not one (it builds its ALiBi biases from a 2D mask and fails on a 4D one);
# a family not named here sends each sequence through whole.
SHARED_PROMPT_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "phi3", "gpt2")


def _shared_prompt_rows(model, inputs: dict):
    """TRL's batch (``prompt + chosen`` rows, then ``prompt + rejected`` rows) as one row per pair,
    ``prompt + chosen + rejected``, where every answer token sees exactly what it sees in TRL's rows:
    the rejected answer attends to the prompt and to itself, not to the chosen one, and its position
    ids go on from the prompt. The prompt, ~95% of each sequence in the built-in pairs, then goes
    through the model once instead of twice: half the work, forward and backward.

    Returns ``(forward, keep, target, real, row)``: the model's inputs, the ``(pairs, slots)``
    positions to project (``logits_to_keep`` as positions), the token each predicts, which slots
    are real (the rest pad), and each slot's sequence in TRL's order. None where the layout does
    not apply: a family not in :data:`SHARED_PROMPT_FAMILIES`, an attention implementation that
    takes no custom mask, a sliding window shorter than the rows, or prompts that truncation
    (``keep_end``) cut differently on the two sides.
    """
    import torch

    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in SHARED_PROMPT_FAMILIES or \
            getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return None
    text = config.get_text_config()
    ids, completion, attention = inputs["input_ids"], inputs["completion_mask"].bool(), inputs["attention_mask"]
    width = ids.size(1)
    if (getattr(text, "sliding_window", None) or width) < width:
        return None
    n = ids.size(0) // 2
    length, answer = attention.sum(1), completion.sum(1)
    prompt = length - answer
    at = torch.arange(width, device=ids.device)
    # TRL's collator: real tokens first (the answer last), then padding; the same prompt on both sides.
    if not (torch.equal(attention.bool(), at < length[:, None])
            and torch.equal(completion, (at >= prompt[:, None]) & (at < length[:, None]))
            and torch.equal(prompt[:n], prompt[n:]) and bool((prompt > 0).all())
            and not ((ids[:n] != ids[n:]) & (at < prompt[:n, None])).any()):
        return None
    rows, positions, parts, slots = [], [], [], []
    for i, (p, c, r) in enumerate(zip(prompt[:n].tolist(), answer[:n].tolist(), answer[n:].tolist())):
        rows.append(torch.cat([ids[i, :p + c], ids[n + i, p:p + r]]))
        positions.append(torch.cat([at[:p + c], at[p:p + r]]))
        parts.append(torch.tensor([0] * p + [1] * c + [2] * r, device=ids.device))
        # Each answer token is predicted from the position before it; the first one of each answer
        # from the prompt's last token, which both answers share.
        chosen_from = [p - 1 + j for j in range(c)]
        rejected_from = [p - 1] + [p + c + j - 1 for j in range(1, r)] if r else []
        slots.append((chosen_from + rejected_from, ids[i, p:p + c].tolist() + ids[n + i, p:p + r].tolist(),
                      [i] * c + [n + i] * r))
    longest = max(len(x) for x in rows)

    def pad(xs, value):
        return torch.stack([torch.cat([x, x.new_full((longest - len(x),), value)]) for x in xs])

    part, at = pad(parts, -1), torch.arange(longest, device=ids.device)
    may_see = (at[:, None] >= at[None, :]) & (part[:, None, :] >= 0)  # causal, and no padding keys
    may_see &= ~((part[:, :, None] == 2) & (part[:, None, :] == 1))  # the rejected answer never sees the chosen
    mask = may_see[:, None]  # (pairs, 1, query, key): SDPA takes True as "attend"
    if config._attn_implementation == "eager":  # eager attention adds the mask to its scores
        mask = torch.zeros(mask.shape, device=ids.device).masked_fill(~mask, torch.finfo(torch.float32).min)
    forward = {"input_ids": pad(rows, 0), "position_ids": pad(positions, 0), "attention_mask": mask}
    most = max(1, max(len(s[0]) for s in slots))  # a stand-in slot keeps a batch without answers in the graph

    def table(k, value):
        return torch.tensor([s[k] + [value] * (most - len(s[k])) for s in slots], device=ids.device)

    real = table(2, -1) >= 0
    return forward, table(0, 0), table(1, 0), real, table(2, 0)


def _lean_loss(trainer, model, inputs: dict):
    """TRL's DPO loss (``sigmoid``, plus ``sft`` when weighted in) and its logged figures, from
    :func:`_completion_logps` and the reference's log-probabilities computed once; None where the
    model ignores the mask, so the caller falls back to TRL's path.

    TRL's loss scores every position of both sequences over the whole vocabulary, with entropy and
    top-1 for its metrics and a recompute in backward, sends each pair's prompt through the model
    twice, and runs the reference forward at every step: for answers of a few tokens after a prompt
    of a hundred, nearly all of that work is for positions no loss term reads.
    """
    import torch
    import torch.nn.functional as F

    found = _completion_logps(model, inputs, details=True)
    if found is None:
        return None
    logps, tokens = found
    chosen_logps, rejected_logps = logps.chunk(2)  # the batch is [chosen..., rejected...]
    ref_chosen, ref_rejected = trainer.reference_logps(inputs)
    chosen_logratios, rejected_logratios = chosen_logps - ref_chosen, rejected_logps - ref_rejected
    pairs = chosen_logps.size(0)
    chosen_token = tokens["row"] < pairs
    loss = 0.0
    for loss_type, weight in zip(trainer.loss_types, trainer.loss_weights, strict=True):
        if loss_type == "sigmoid":
            per_pair = -F.logsigmoid(trainer.beta * (chosen_logratios - rejected_logratios))
        else:  # "sft": the chosen answers' mean token log-likelihood, as TRL's RPO term
            per_pair = -tokens["logp"][chosen_token].mean().expand(pairs)
        loss = loss + per_pair.mean() * weight

    # The figures TRL logs, under its names, from the completion positions (all it averages over).
    acc, mode = trainer.accelerator, "train" if trainer.model.training else "eval"
    metrics = figures(trainer, mode)
    with torch.no_grad():
        chosen_rewards = trainer.beta * chosen_logratios.detach()
        rejected_rewards = trainer.beta * rejected_logratios.detach()
        per_pair = acc.gather(torch.stack([chosen_rewards, rejected_rewards, chosen_logps.detach(),
                                           rejected_logps.detach()], dim=1))
        sums = torch.stack([tokens["entropy"].sum(), chosen_token.sum(), (~chosen_token).sum(),
                            tokens["mean_logit"][chosen_token].sum(), tokens["mean_logit"][~chosen_token].sum(),
                            (tokens["top1"] & chosen_token).sum()]).double()
        entropy, n_chosen, n_rejected, logit_chosen, logit_rejected, top1 = \
            acc.gather_for_metrics(sums).view(-1, 6).sum(0).tolist()
    n = n_chosen + n_rejected
    metrics["entropy"].append(entropy / n if n else 0.0)
    if mode == "train":
        count_train_tokens(trainer, int(acc.gather_for_metrics(inputs["attention_mask"].sum()).sum()))
    metrics["num_tokens"] = [train_tokens(trainer)]
    metrics["logits/chosen"].append(logit_chosen / n_chosen if n_chosen else 0.0)
    metrics["logits/rejected"].append(logit_rejected / n_rejected if n_rejected else 0.0)
    metrics["mean_token_accuracy"].append(top1 / n_chosen if n_chosen else 0.0)
    metrics["rewards/chosen"].append(per_pair[:, 0].mean().item())
    metrics["rewards/rejected"].append(per_pair[:, 1].mean().item())
    metrics["rewards/accuracies"].append((per_pair[:, 0] > per_pair[:, 1]).float().mean().item())
    metrics["rewards/margins"].append((per_pair[:, 0] - per_pair[:, 1]).mean().item())
    metrics["logps/chosen"].append(per_pair[:, 2].mean().item())
    metrics["logps/rejected"].append(per_pair[:, 3].mean().item())
    return loss


@functools.cache
def _trainer_class():
    """TRL's ``DPOTrainer`` with :func:`_lean_loss` as its loss, and the reference's
    log-probabilities added to the training rows once, when training starts."""
    from accelerate.utils import is_peft_model
    from tqdm.auto import tqdm
    from trl import DPOTrainer
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import use_adapter

    class LeanDPOTrainer(DPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            problem = _lean_refusal(self.args)
            if problem is None and self.aux_loss_enabled:
                problem = ("lean_loss does not add a Mixture-of-Experts model's router loss; set lean_loss=False "
                           "to train with TRL's own loss, which does")
            if problem is None and self._is_vision_dataset:
                problem = "lean_loss covers text pairs only; set lean_loss=False for pairs with images"
            if problem:
                raise ValueError(problem)

        @contextlib.contextmanager
        def _reference(self):
            """The reference model, as TRL's loss sets it up: a frozen copy of the adapter DPO
            continues (``ref``), the base model (adapters off) for a fresh one, or ``ref_model``."""
            if self.ref_model is not None:
                yield self.ref_model
                return
            unwrapped = self.accelerator.unwrap_model(self.model)
            with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs), \
                    use_adapter(unwrapped, "ref" if "ref" in unwrapped.peft_config else None):
                yield self.model

        def reference_logps(self, inputs: dict):
            """The reference's ``(chosen, rejected)`` log-probabilities of a batch: the precomputed
            ones when it carries them, else computed now, with TRL's own path where the lean one
            does not apply."""
            import torch

            if "ref_chosen_logps" in inputs:
                return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            with torch.no_grad(), self._reference() as model:
                logps = _completion_logps(model, inputs)
            if logps is None:
                return self.compute_ref_log_probs(self.ref_model or self.model, inputs)
            return logps.chunk(2)

        def precompute_reference(self) -> None:
            """Add each pair's reference log-probabilities to the training rows (TRL's columns
            ``ref_chosen_logps``/``ref_rejected_logps``, which its collator and loss read).

            The reference is fixed, so one forward pass over the pairs replaces one at every step.
            Done here, when training starts, rather than with TRL's ``precompute_ref_log_probs``
            while the trainer is built: ftkit's first-step check then sees the reference the steps
            use, and no cache file is written (TRL keys its cache on a hash of every weight).
            """
            import torch

            if self.precompute_ref_logps or self.args.sync_ref_model or \
                    not (is_peft_model(self.model) or self.ref_model is not None):
                return  # already there, a moving reference, or none kept besides the policy
            import datasets

            rows = self.train_dataset
            if not isinstance(rows, datasets.Dataset):
                return  # rows that stream in are scored as they come
            size = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            keys = ("prompt_ids", "chosen_ids", "rejected_ids")
            chosen, rejected = [], []
            was_training = self.model.training
            self.model.eval()
            try:
                # leave=False: once done, the stage's one bar on screen is the training bar.
                for start in tqdm(range(0, len(rows), size), desc="Reference log-probabilities",
                                  disable=self.args.disable_tqdm, leave=False):
                    part = rows[start:start + size]
                    batch = self._prepare_inputs(self.data_collator(
                        [{k: part[k][i] for k in keys} for i in range(len(part[keys[0]]))]))
                    with self.accelerator.autocast():
                        c, r = self.reference_logps(batch)
                    chosen.append(c.float().cpu())
                    rejected.append(r.float().cpu())
            finally:
                self.model.train(was_training)
            self.train_dataset = rows.add_column("ref_chosen_logps", torch.cat(chosen).tolist()) \
                .add_column("ref_rejected_logps", torch.cat(rejected).tolist())
            self.precompute_ref_logps = True  # TRL's own loss reads them too

        def train(self, *args, **kwargs):
            self.precompute_reference()
            return super().train(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not return_outputs:
                loss = _lean_loss(self, model, inputs)
                if loss is not None:
                    return loss
            if self.precompute_ref_logps and "ref_chosen_logps" not in inputs:  # rows not precomputed (eval)
                chosen, rejected = self.reference_logps(inputs)
                inputs = {**inputs, "ref_chosen_logps": chosen, "ref_rejected_logps": rejected}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return LeanDPOTrainer
