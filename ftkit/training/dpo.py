"""Direct preference optimization with LoRA through TRL's ``DPOTrainer``, recorded as a run.

    sft_run = train_sft(model, tokenizer, train, template=template)
    dpo_run = train_dpo(model, tokenizer, pairs, template=template, from_run=sft_run)

Pairs are canonical ``prompt``/``chosen``/``rejected`` rows. Starting ``from_run`` continues that
run's adapter. No second copy of the model is held in memory for the reference: on a fresh LoRA
adapter the reference is the same weights with the adapter switched off; when continuing an SFT
adapter, TRL adds a frozen copy of that adapter (a few MB, named ``ref``) beside the trained one,
so the reference is the SFT model, as DPO intends, still on the one set of base weights.
TRL logs the DPO figures at every logging step: ``rewards/chosen``, ``rewards/rejected``,
``rewards/margins``, ``rewards/accuracies`` and the loss; they arrive as ``log`` events.

The loss is TRL's, computed leaner (``lean_loss``, on by default, where
``fastpath.enabled("trl", "transformers")``): only the answer positions go through the LM head,
each pair's prompt goes through the model once for both answers, and the reference's
log-probabilities are computed once, before the first step, instead of in a second forward pass
at every step (see :mod:`ftkit.fastpath.dpo_lean`). Otherwise TRL's ``DPOTrainer`` trains as TRL
ships it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from ftkit import fastpath
from ftkit.training.events import EventBus, StopFlag
from ftkit.training.settings import Preflight, TrainingSettings, default

if TYPE_CHECKING:
    import datasets

    from ftkit.prompts import PromptTemplate
    from ftkit.runs import Run

__all__ = ["DPOSettings", "preflight", "reference_check", "to_trl_pairs", "train_dpo", "trainer_class"]


@dataclass
class DPOSettings(TrainingSettings):
    name: str = default("name", "dpo")
    learning_rate: float = default("learning_rate", 5e-5)
    beta: float = field(default=0.1, metadata={
        "help": "How far the model may move from the reference: lower lets it move further",
        "after": "learning_rate", "above": 0})
    # Measured on the built-in example after a 5-minute SFT: plain DPO at lr 2e-4 widened the
    # margins but cost 10 points of accuracy (0.81 -> 0.71); lr 5e-5 with this term: 0.81 -> 0.82.
    sft_weight: float = field(default=1.0, metadata={
        "help": "Weight of an SFT loss on the chosen answer added to DPO's (RPO); it keeps the right "
                "answers likely. 0 for plain DPO", "after": "beta", "min": 0})
    # benchmarks/dpo_speed.py measures the steps both ways, side by side; in float32 the losses
    # agree to 1e-5 (tests/training/test_dpo.py).
    lean_loss: bool = field(default=True, metadata={
        "help": "Score only the answer tokens through the LM head, each pair's prompt once for both answers, "
                "and the reference once, before the first step: the same loss as TRL's, in less work per step. "
                "Off (or with FTKIT_FASTPATH=0): TRL's own loss (needed for its other loss types)",
        "after": "sft_weight"})


def to_trl_pairs(rows, template: PromptTemplate) -> datasets.Dataset:
    """Canonical pairs as TRL's conversational preference rows, prompts rendered by ``template``."""
    import datasets

    from ftkit.data.canonical import as_rows

    rows = as_rows(rows)
    if rows and not {"prompt", "chosen", "rejected"} <= set(rows[0]):
        raise ValueError(f"DPO needs prompt/chosen/rejected rows (load them with ftkit.load_data); "
                         f"these rows have: {', '.join(rows[0])}")
    return datasets.Dataset.from_list([
        {"prompt": template.messages(r),
         "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]}
        for r in rows
    ])


def preflight(tokenizer, trl_pairs: datasets.Dataset, from_run: Run | None = None,
              max_length: int | None = None) -> Preflight:
    """Show the first pair as the model reads it, and check every pair: both sides non-empty and
    different, prompt and longer answer within ``max_length`` tokens.

    Both answers are trained: DPO raises the chosen one's likelihood against the rejected one's.
    """
    from ftkit.data.report import rows_text

    problems = []
    if from_run is not None and not (from_run.adapter_dir / "adapter_config.json").is_file():
        problems.append(f"run {from_run.id} has no saved adapter to continue (status: "
                        f"{from_run.status.get('status')})")
    if not len(trl_pairs):
        return Preflight(problems=[*problems, "there are no preference pairs"])
    empty, same, long, longest = [], [], [], 0
    for i, pair in enumerate(trl_pairs):
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        if not chosen.strip() or not rejected.strip():
            empty.append(i)
        elif " ".join(chosen.split()) == " ".join(rejected.split()):
            same.append(i)
        if max_length is not None:
            prompt = tokenizer.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True)
            answer = max(chosen, rejected, key=len)
            n = len(tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]) + 1  # + end of turn
            longest = max(longest, n)
            if n > max_length:
                long.append(i)
    if empty:
        problems.append(f"{len(empty)} pair(s) have an empty chosen or rejected answer (rows {rows_text(empty)}); "
                        "drop or fix them")
    if same:
        problems.append(f"{len(same)} pair(s) have the same chosen and rejected answer (rows {rows_text(same)}): "
                        "they teach DPO nothing; drop them")
    if long:
        problems.append(f"{len(long)} pair(s) are longer than max_length={max_length} tokens (rows "
                        f"{rows_text(long)}): their answers would be cut and compared half-read. Raise max_length "
                        f"(the longest pair is {longest} tokens) or drop them")
    first = trl_pairs[0]
    prompt = tokenizer.apply_chat_template(first["prompt"], tokenize=False, add_generation_prompt=True)
    segments = [(prompt, False), ("chosen: ", False), (first["chosen"][0]["content"], True),
                ("\nrejected: ", False), (first["rejected"][0]["content"], True)]
    notes = [f"{len(trl_pairs)} preference pairs" + (f", longest {longest} tokens" if longest else "")]
    return Preflight(segments=segments, problems=problems, notes=notes, longest=longest)


# Before the first update the policy and the reference are the same model, so DPO's rewards
# (beta x the log-probability ratio) are 0 up to rounding. A wrong reference (the base model while
# the policy starts from an SFT adapter) shows at once as rewards of a nat or more.
FIRST_STEP_TOLERANCE = 0.02


def reference_check(trainer) -> dict:
    """DPO's rewards on the first batch before any update: ``{"rewards/chosen", "rewards/rejected"}``.

    Both must be ~0 (see :data:`FIRST_STEP_TOLERANCE`); :func:`train_dpo` stops the run
    otherwise. The batch is the first rows, in order, collated by the trainer's own collator
    without a data loader (whose iterator draws a seed from torch's global generator), so the
    check draws no random number and the run's data order is the same with or without it. The figures
    are the ones TRL logs: the trainer's loss files them, its public ``log`` averages them (as
    ``eval_...``: the model is in eval mode, no dropout), and the entry is taken back out of the
    trainer's log history, since it belongs to no step.
    """
    import itertools

    import torch

    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        rows = list(itertools.islice(trainer.train_dataset, trainer.args.per_device_train_batch_size))
        batch = {k: v.to(trainer.args.device) if isinstance(v, torch.Tensor) else v
                 for k, v in trainer.data_collator(rows).items()}
        with torch.no_grad():
            trainer.compute_loss(model, batch)
        trainer.log({})
        logged = trainer.state.log_history.pop()
    finally:
        model.train(was_training)
    return {key: float(logged[f"eval_{key}"]) for key in ("rewards/chosen", "rewards/rejected")}


def _check_reference(trainer, run: Run) -> None:
    rewards = reference_check(trainer)
    run.record("reference_check", rewards)
    if max(abs(v) for v in rewards.values()) > FIRST_STEP_TOLERANCE:
        raise ValueError(
            f"DPO's first-step check failed: before any update the policy and the reference are the same model, "
            f"so the rewards must be about 0, but they are {rewards['rewards/chosen']:+.3f} (chosen) and "
            f"{rewards['rewards/rejected']:+.3f} (rejected). The reference is not the model DPO starts from: "
            "the run would log a loss near 0 and accuracy 1.0 from step 1 and learn nothing. This happens when "
            "an SFT adapter is already on (or merged into) the model while the reference is the base model. "
            "Pass the base model and from_run=sft_run, and let train_dpo set up the reference")


def _trl_config(settings: DPOSettings, run: Run, device_choice, progress: bool = True):
    from trl import DPOConfig

    from ftkit.training.trainer import trl_arguments

    # settings.trl (in _dpo_arguments) goes over everything, as for SFT.
    return DPOConfig(**{**trl_arguments(settings, run, device_choice, DPOConfig, progress=progress),
                        **_dpo_arguments(settings)})


def _dpo_arguments(settings: DPOSettings) -> dict:
    """DPOConfig's keyword arguments for the loss, then ``settings.trl``."""
    kw = {"beta": settings.beta}
    if settings.sft_weight:
        kw.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, settings.sft_weight])
    return {**kw, **settings.trl}


def trainer_class(lean: bool = True):
    """The trainer class a run trains with: TRL's ``DPOTrainer`` with the lean loss of
    :mod:`ftkit.fastpath.dpo_lean` when ``lean`` and ``fastpath.enabled("trl", "transformers")``,
    else ``DPOTrainer`` as TRL ships it."""
    if lean and fastpath.enabled("trl", "transformers"):
        from ftkit.fastpath.dpo_lean import _trainer_class

        return _trainer_class()
    from trl import DPOTrainer

    return DPOTrainer


def train_dpo(model, tokenizer, pairs, *, template: PromptTemplate | None = None,
              config: DPOSettings | None = None, from_run: Run | None = None, bus: EventBus | None = None,
              stop: StopFlag | None = None, resume: Run | None = None, runs_root=None,
              progress: bool = True, data_record: dict | None = None) -> Run:
    """Train on preference ``pairs``; return the recorded :class:`Run`.

    ``from_run``: an SFT run whose adapter DPO continues (``model`` is then its base model, the
    one ``train_sft`` was given, which it left unchanged). ``template`` must be the one the SFT
    run used, so prompts look the same. ``bus``, ``stop``, ``resume`` and ``progress`` work as in
    :func:`ftkit.training.sft.train_sft` (``progress=False`` hides the reference pass's bar too; with
    ``True`` it shows while it runs, then leaves the training bar alone), and so does a
    ``config.max_minutes`` budget (``ended_by: "time budget"``); ``model`` is left unchanged here
    too. ``data_record`` is kept as the run's ``data.json`` as there. Raises ``ValueError`` when the
    pre-flight check finds a problem.

    >>> dpo_run = train_dpo(model, tokenizer, pairs, from_run=sft_run, progress=False)  # doctest: +SKIP
    """
    from ftkit.models.device import model_info
    from ftkit.prompts import zero_shot
    from ftkit.runs import fingerprint, new_run
    from ftkit.training.callbacks import EventCallback
    from ftkit.training.trainer import quiet_training, train_and_record, trainable_model

    config = config or DPOSettings()
    template = template or zero_shot()
    bus = bus if bus is not None else EventBus()
    stop = stop if stop is not None else StopFlag()  # not `stop or`: an unset flag is falsy
    trl_pairs = to_trl_pairs(pairs, template)
    check = preflight(tokenizer, trl_pairs, from_run, config.max_length)
    if check.problems:
        raise ValueError("pre-flight check failed:\n" + "\n".join(check.problems))
    lean = config.lean_loss and fastpath.enabled("trl", "transformers")
    if lean:
        from ftkit.fastpath.dpo_lean import _lean_refusal

        if problem := _lean_refusal(_dpo_arguments(config)):
            raise ValueError(problem)
    build = trainer_class(lean)
    info = model_info(model)
    start_adapter = from_run.adapter_dir if from_run is not None else None
    with quiet_training(), trainable_model(model, config.lora, start_adapter) as (trainee, peft_config):
        run = resume or new_run(config.name, {
            "kind": "dpo", "settings": asdict(config), "template": asdict(template), "base_model": info.source,
            "from_run": from_run.id if from_run is not None else None,
            "data_fingerprint": fingerprint(pairs), "train_rows": len(trl_pairs), "device": str(info.device),
        }, root=runs_root, data=data_record)
        trainer = build(model=trainee, ref_model=None, args=_trl_config(config, run, info.device, progress),
                                train_dataset=trl_pairs, processing_class=tokenizer, peft_config=peft_config,
                                callbacks=[EventCallback(bus, stop, run.id, max_seconds=config.max_minutes * 60,
                                                         run=run)])
        return train_and_record(run, trainer, tokenizer, bus, stop, resumed=resume is not None,
                                preflight=str(check), progress=progress,
                                before=None if resume is not None else lambda: _check_reference(trainer, run))
