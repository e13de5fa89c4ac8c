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

The loss is TRL's, computed leaner (``lean_loss``, on by default): only the answer positions go
through the LM head, each pair's prompt goes through the model once for both answers, and the
reference's log-probabilities are computed once, before the first step, instead of in a second
forward pass at every step (see :mod:`ftkit.fastpath.dpo_lean`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import datasets

from ftkit.data.canonical import as_rows
from ftkit.data.report import rows_text
from ftkit.fastpath.dpo_lean import _lean_refusal, _trainer_class
from ftkit.training.events import EventBus, EventCallback, StopFlag
from ftkit.models.loading import model_info, quiet_library_noise
from ftkit.prompts import PromptTemplate, zero_shot
from ftkit.runs import Run, fingerprint, new_run
from ftkit.training.settings import (Preflight, TrainingSettings, default, train_and_record,
                            trainable_model, trl_arguments)

__all__ = ["DPOSettings", "preflight", "reference_check", "to_trl_pairs", "train_dpo"]


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
    # Measured on the embedded model and the built-in pairs, 4 a step (benchmarks/dpo_speed.py, 2
    # CPU cores, bf16): 3.5 s a step with TRL's own loss, 0.84 s lean (4.2x), after a reference pass
    # of 12 s over the 160 pairs (a third of an epoch's steps); in float32 the losses agree to 1e-5.
    lean_loss: bool = field(default=True, metadata={
        "help": "Score only the answer tokens through the LM head, each pair's prompt once for both answers, "
                "and the reference once, before the first step: the same loss as TRL's, steps several times "
                "faster on a CPU. Off: TRL's own loss (needed for its other loss types)", "after": "sft_weight"})


def to_trl_pairs(rows, template: PromptTemplate) -> datasets.Dataset:
    """Canonical pairs as TRL's conversational preference rows, prompts rendered by ``template``."""
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
    otherwise. The RNG state is restored, so the run's data order is the same with or without it.
    """
    import torch

    rng = torch.random.get_rng_state()
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            trainer.compute_loss(model, batch)
        metrics = trainer._metrics["eval"]  # TRL files metrics by the model's mode: eval, no dropout
        found = {key: float(metrics[key][-1]) for key in ("rewards/chosen", "rewards/rejected")}
        metrics.clear()  # not part of any logged step
    finally:
        model.train(was_training)
        torch.random.set_rng_state(rng)
    return found


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

    # settings.trl (in _dpo_arguments) goes over everything, as for SFT.
    return DPOConfig(**{**trl_arguments(settings, run, device_choice, DPOConfig, progress=progress),
                        **_dpo_arguments(settings)})


def _dpo_arguments(settings: DPOSettings) -> dict:
    """DPOConfig's keyword arguments for the loss, then ``settings.trl``."""
    kw = {"beta": settings.beta}
    if settings.sft_weight:
        kw.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, settings.sft_weight])
    return {**kw, **settings.trl}


def train_dpo(model, tokenizer, pairs, *, template: PromptTemplate | None = None,
              config: DPOSettings | None = None, from_run: Run | None = None, bus: EventBus | None = None,
              stop: StopFlag | None = None, resume: Run | None = None, runs_root=None,
              progress: bool = True) -> Run:
    """Train on preference ``pairs``; return the recorded :class:`Run`.

    ``from_run``: an SFT run whose adapter DPO continues (``model`` is then its base model, the
    one ``train_sft`` was given, which it left unchanged). ``template`` must be the one the SFT
    run used, so prompts look the same. ``bus``, ``stop``, ``resume`` and ``progress`` work as in
    :func:`ftkit.training.sft.train_sft` (``progress=False`` hides the reference pass's bar too; with
    ``True`` it shows while it runs, then leaves the training bar alone), and so does a
    ``config.max_minutes`` budget (``ended_by: "time budget"``); ``model`` is left unchanged here
    too. Raises ``ValueError`` when the pre-flight check finds a problem.

    >>> dpo_run = train_dpo(model, tokenizer, pairs, from_run=sft_run, progress=False)  # doctest: +SKIP
    """
    from trl import DPOTrainer

    config = config or DPOSettings()
    template = template or zero_shot()
    bus = bus if bus is not None else EventBus()
    stop = stop if stop is not None else StopFlag()  # not `stop or`: an unset flag is falsy
    trl_pairs = to_trl_pairs(pairs, template)
    check = preflight(tokenizer, trl_pairs, from_run, config.max_length)
    if check.problems:
        raise ValueError("pre-flight check failed:\n" + "\n".join(check.problems))
    if config.lean_loss and (problem := _lean_refusal(_dpo_arguments(config))):
        raise ValueError(problem)
    trainer_class = _trainer_class() if config.lean_loss else DPOTrainer
    info = model_info(model)
    start_adapter = from_run.adapter_dir if from_run is not None else None
    with quiet_library_noise(), trainable_model(model, config.lora, start_adapter) as (trainee, peft_config):
        run = resume or new_run(config.name, {
            "kind": "dpo", "settings": asdict(config), "template": asdict(template), "base_model": info.source,
            "from_run": from_run.id if from_run is not None else None,
            "data_fingerprint": fingerprint(pairs), "train_rows": len(trl_pairs), "device": str(info.device),
        }, root=runs_root)
        trainer = trainer_class(model=trainee, ref_model=None, args=_trl_config(config, run, info.device, progress),
                                train_dataset=trl_pairs, processing_class=tokenizer, peft_config=peft_config,
                                callbacks=[EventCallback(bus, stop, run.id, max_seconds=config.max_minutes * 60,
                                                         run=run)])
        return train_and_record(run, trainer, tokenizer, bus, stop, resumed=resume is not None,
                                preflight=str(check), progress=progress,
                                before=None if resume is not None else lambda: _check_reference(trainer, run))
