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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import datasets

from ftkit.data import as_rows
from ftkit.events import EventBus, EventCallback, StopFlag
from ftkit.models import model_info, quiet_library_noise
from ftkit.prompts import PromptTemplate, zero_shot
from ftkit.runs import Run, fingerprint, new_run
from ftkit.training import (Preflight, TrainingSettings, default, train_and_record,
                            trainable_model, trl_arguments)

__all__ = ["DPOSettings", "preflight", "to_trl_pairs", "train_dpo"]


@dataclass
class DPOSettings(TrainingSettings):
    name: str = default("name", "dpo")
    learning_rate: float = default("learning_rate", 5e-5)
    beta: float = field(default=0.1, metadata={
        "help": "How far the model may move from the reference: lower lets it move further",
        "after": "learning_rate"})
    # Measured on the built-in example after a 5-minute SFT: plain DPO at lr 2e-4 widened the
    # margins but cost 10 points of accuracy (0.81 -> 0.71); lr 5e-5 with this term: 0.81 -> 0.82.
    sft_weight: float = field(default=1.0, metadata={
        "help": "Weight of an SFT loss on the chosen answer added to DPO's (RPO); it keeps the right "
                "answers likely. 0 for plain DPO", "after": "beta"})


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


def preflight(tokenizer, trl_pairs: datasets.Dataset, from_run: Run | None = None) -> Preflight:
    """Show the first pair as the model reads it, and report what would stop the run.

    Both answers are trained: DPO raises the chosen one's likelihood against the rejected one's.
    """
    problems = []
    if from_run is not None and not (from_run.adapter_dir / "adapter_config.json").is_file():
        problems.append(f"run {from_run.id} has no saved adapter to continue (status: "
                        f"{from_run.status.get('status')})")
    segments = []
    if len(trl_pairs):
        first = trl_pairs[0]
        prompt = tokenizer.apply_chat_template(first["prompt"], tokenize=False, add_generation_prompt=True)
        segments = [(prompt, False), ("chosen: ", False), (first["chosen"][0]["content"], True),
                    ("\nrejected: ", False), (first["rejected"][0]["content"], True)]
    else:
        problems.append("there are no preference pairs")
    return Preflight(segments=segments, problems=problems, notes=[f"{len(trl_pairs)} preference pairs"])


def _trl_config(settings: DPOSettings, run: Run, device_choice):
    from trl import DPOConfig

    kw = trl_arguments(settings, run, device_choice, DPOConfig)
    kw["beta"] = settings.beta
    if settings.sft_weight:
        kw.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, settings.sft_weight])
    kw.update(settings.trl)
    return DPOConfig(**kw)


def train_dpo(model, tokenizer, pairs, *, template: PromptTemplate | None = None,
              config: DPOSettings | None = None, from_run: Run | None = None, bus: EventBus | None = None,
              stop: StopFlag | None = None, resume: Run | None = None, runs_root=None) -> Run:
    """Train on preference ``pairs``; return the recorded :class:`Run`.

    ``from_run``: an SFT run whose adapter DPO continues (``model`` is then its base model, the
    one ``train_sft`` was given, which it left unchanged). ``template`` must be the one the SFT
    run used, so prompts look the same. ``bus``, ``stop`` and ``resume`` work as in
    :func:`ftkit.sft.train_sft`; ``model`` is left unchanged here too. Raises ``ValueError`` when
    the pre-flight check finds a problem.
    """
    from trl import DPOTrainer

    config = config or DPOSettings()
    template = template or zero_shot()
    bus = bus if bus is not None else EventBus()
    stop = stop if stop is not None else StopFlag()  # not `stop or`: an unset flag is falsy
    trl_pairs = to_trl_pairs(pairs, template)
    check = preflight(tokenizer, trl_pairs, from_run)
    if check.problems:
        raise ValueError("pre-flight check failed:\n" + "\n".join(check.problems))
    info = model_info(model)
    start_adapter = from_run.adapter_dir if from_run is not None else None
    with quiet_library_noise(), trainable_model(model, config.lora, start_adapter) as (trainee, peft_config):
        run = resume or new_run(config.name, {
            "kind": "dpo", "settings": asdict(config), "template": asdict(template), "base_model": info.source,
            "from_run": from_run.id if from_run is not None else None,
            "data_fingerprint": fingerprint(pairs), "train_rows": len(trl_pairs), "device": str(info.device),
        }, root=runs_root)
        trainer = DPOTrainer(model=trainee, ref_model=None, args=_trl_config(config, run, info.device),
                             train_dataset=trl_pairs, processing_class=tokenizer, peft_config=peft_config,
                             callbacks=[EventCallback(bus, stop, run.id, max_seconds=config.max_minutes * 60)])
        return train_and_record(run, trainer, tokenizer, bus, stop, resumed=resume is not None,
                                preflight=str(check))
