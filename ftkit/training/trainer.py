"""The run around TRL's trainer: the model a run trains, the TRL arguments every method sets the
same way, what the trainer shows while it trains, and the recorded run around ``trainer.train()``.

Training never changes the model you pass. LoRA is put on a structural copy whose modules are
new but whose weights are the very same tensors (no second copy in memory); the trained model is
``run.model``, and your model still answers as the base model, for the prompt baselines:

>>> run = train_sft(model, tokenizer, rows)      # doctest: +SKIP
>>> run.model                                     # base weights (shared) + the trained adapter  # doctest: +SKIP

The settings these take live in :mod:`ftkit.training.settings`, which imports no ML library.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from typing import TYPE_CHECKING

from ftkit.runs import KEYBOARD_INTERRUPT, STOP_REQUESTED, is_main_process
from ftkit.training.settings import LoraSettings, TrainingSettings, micro_batches

if TYPE_CHECKING:
    from ftkit.runs import Run

__all__ = ["completion_positions", "hide_known_noise", "quiet_training", "show_progress", "trainable_model",
           "train_and_record", "trl_arguments"]


# --- quiet output ----------------------------------------------------------------------------------

@contextlib.contextmanager
def quiet_training():
    """The known library noise hidden while a run is set up and trains: the messages in
    ``ftkit.models.loading.KNOWN_NOISE`` and datasets' bars over rows ftkit already checked.

    Warning filters belong to the whole process, and ``warnings.catch_warnings`` is not
    thread-safe: entered on a worker thread, its restore would drop any filter the main thread set
    meanwhile. So the scoped filter is used on the main thread only; a run on another thread (a
    panel's) leaves the filters alone, and the main thread calls :func:`hide_known_noise` once,
    before it starts that thread.
    """
    from ftkit.models.loading import datasets_bars_off, quiet_library_noise

    on_main = threading.current_thread() is threading.main_thread()
    with quiet_library_noise() if on_main else datasets_bars_off():
        yield


def hide_known_noise() -> None:
    """Hide the known library noise (``ftkit.models.loading.KNOWN_NOISE``) for the rest of the
    process, where transformers itself issues it; the same message from any other module still
    shows. For the main thread, before it starts a run on a worker thread (see
    :func:`quiet_training`); calling it again adds nothing.

    >>> hide_known_noise()   # doctest: +SKIP
    """
    import warnings

    from ftkit.models.loading import KNOWN_NOISE

    for message in KNOWN_NOISE:  # an identical filter is moved to the front, not added twice
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=r"transformers\.")


# --- the model a run trains --------------------------------------------------------------------

def _carries_adapters(model) -> bool:
    from accelerate.utils import is_peft_model

    return is_peft_model(model) or any("lora_" in name for name, _ in model.named_parameters())



@contextlib.contextmanager
def trainable_model(model, lora: LoraSettings, adapter_dir=None):
    """The model a run trains, and the PEFT config its trainer should add (None: already set).

    ``model`` is never changed: LoRA goes on a copy that shares its weights (see the module
    docstring); a full fine-tune trains a real copy. ``adapter_dir`` continues a saved adapter
    (DPO from an SFT run). Under a distributed launch each process's model exists only to be
    trained, and FSDP frees the weights it shards only if nothing else holds them: it is trained
    in place there.
    """
    from ftkit.models.loading import shared_weights_copy

    if _carries_adapters(model):
        raise ValueError("this model already carries LoRA adapters (is it run.model from an earlier run?). "
                         "Pass the base model: training leaves the model you give it unchanged, so the "
                         "one you trained from still works. To continue a run, pass resume=run (the same "
                         "run) or, for DPO after SFT, from_run=sft_run")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    in_place = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        if lora.full_finetune:
            yield (model if in_place else copy.deepcopy(model)), None
        else:
            trainee = model if in_place else shared_weights_copy(model)
            if adapter_dir is not None:
                from peft import PeftModel

                yield PeftModel.from_pretrained(trainee, adapter_dir, is_trainable=True), None
            else:
                yield trainee, lora.peft_config()
    finally:
        for p, flag in flags:  # PEFT froze the shared base weights; they were trainable before
            p.requires_grad_(flag)


def completion_positions(trained):
    """The positions whose logits a next-token loss needs (see
    :func:`ftkit.fastpath.sft_loss.completion_positions`, where the fast paths that use it live)."""
    from ftkit.fastpath.sft_loss import completion_positions as positions

    return positions(trained)


# --- the trainer ---------------------------------------------------------------------------------

def trl_arguments(settings: TrainingSettings, run: Run, device_choice, config_cls, cpu_micro_batch: int = 4,
                  progress: bool = True) -> dict:
    """The keyword arguments of TRL's ``SFTConfig``/``DPOConfig`` that every method sets the same
    way, from ftkit's settings and the model's device (a method adds its own, then
    ``settings.trl``). ``cpu_micro_batch``: the method's micro-batch on a CPU when the settings
    leave it at 0 (0: the whole batch), see :func:`micro_batches`. ``progress``: the trainer's
    bars (training, evaluation, DPO's reference pass) on or off, see :func:`train_and_record`."""
    micro, accumulate = micro_batches(settings.batch_size, settings.micro_batch_size, device_choice.device,
                                      cpu_micro_batch)
    kw = dict(
        output_dir=str(run.checkpoints_dir), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        learning_rate=settings.learning_rate, per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulate,
        # An eval batch larger than the train batch is a classic out-of-memory at the first eval.
        per_device_eval_batch_size=micro, max_length=settings.max_length,
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_strategy="steps",
        seed=settings.seed, report_to=[], lr_scheduler_type="constant", include_num_input_tokens_seen=True,
        use_cpu=device_choice.device == "cpu", **device_choice.trainer_precision(),
        # Said either way: left unset (None), transformers turns the bars off whenever its logger
        # is quieter than WARNING (transformers.logging.set_verbosity_error(), a common notebook
        # line), and swaps in PrinterCallback, which prints every log dict.
        disable_tqdm=not progress,
    )
    # Activation (gradient) checkpointing trades a third more compute for memory that a small
    # model on CPU does not need; TRL turns it on by default. The field was renamed in transformers 5.
    fields_ = config_cls.__dataclass_fields__
    kw["activation_checkpointing" if "activation_checkpointing" in fields_ else "gradient_checkpointing"] = False
    return kw


def _oom_hint(err: BaseException) -> str | None:
    text = str(err).lower()
    if "out of memory" in text or isinstance(err, MemoryError):
        return ("out of memory: lower micro_batch_size (each step stays the same, in more passes), "
                "then batch_size or max_length, or use a smaller LoRA rank")
    return None


def show_progress(trainer, progress: bool = True) -> None:
    """What the trainer puts on the screen while it trains: with ``progress``, one bar of its
    steps with the last loss in its postfix (:class:`ftkit.training.callbacks.LossBar`); without, nothing.
    A ``disable_tqdm=True`` in the trainer's arguments (``settings.trl``) turns the bar off too.

    Either way the trainer's log dicts are not printed: transformers' ``ProgressCallback.on_log``
    writes each one under its bar (``PrinterCallback`` prints them when the bar is off, and a
    notebook's ``NotebookProgressCallback`` adds a table row), a second copy of what the run's
    ``log`` and ``end`` events carry, which a caller's own line per step (``ftkit run``) would
    have to compete with.

    >>> show_progress(trainer, progress=False)   # doctest: +SKIP
    """
    import sys

    from transformers import PrinterCallback, ProgressCallback

    from ftkit.training.callbacks import LossBar

    printing = [ProgressCallback, PrinterCallback]  # LossBar too: it is a ProgressCallback
    notebook = sys.modules.get("transformers.utils.notebook")  # loaded only where a notebook runs this
    if notebook is not None:
        printing.append(notebook.NotebookProgressCallback)
    for cls in printing:
        while trainer.pop_callback(cls) is not None:
            pass
    if progress and not trainer.args.disable_tqdm:
        trainer.add_callback(LossBar())


def _event_callback(trainer):
    """The trainer's :class:`ftkit.training.callbacks.EventCallback` (None: the trainer has none)."""
    from ftkit.training.callbacks import EventCallback

    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, EventCallback)), None)


def train_and_record(run: Run, trainer, tokenizer, bus, stop, *, resumed: bool = False,
                     preflight: str | None = None, before=None, progress: bool = True) -> Run:
    """Run a TRL trainer inside ``run``: record its events and final status, save its adapter.

    A stop from the flag, or asked from another process (``run.request_stop()``), ends after the
    current step with a checkpoint there (EventCallback asks for it), so a resume starts exactly at
    that step; after a KeyboardInterrupt the adapter is still saved and a resume starts at the last
    periodic checkpoint. Any other exception marks the run failed with the message (and what to
    reduce, for out-of-memory) and is raised again.
    ``before()``, when given, runs first inside the same record: a check that may fail the run.
    ``progress``: the trainer's bar, or nothing on the screen (see :func:`show_progress`).

    The ``end`` event and the final status carry ``step``, ``max_steps`` (planned) and
    ``ended_by``: ``"time budget"`` (status completed), ``"stop requested"`` or ``"interrupted"``
    (status stopped), None when the run ended by itself; :func:`ftkit.runs.outcome` says it in words.
    """
    from ftkit.training.events import EVENTS

    show_progress(trainer, progress)
    if getattr(trainer.args, "use_cpu", False):  # a neighbour that starts or ends mid-run changes the free cores
        from ftkit.models import threads

        trainer.add_callback(threads.training_callback())
    feed = _event_callback(trainer)  # the EventCallback: it knows whether the time budget ended the run
    run.set_status("running")  # this process, for `interrupted` if it dies
    checkpoint = None
    if resumed:
        run.clear_stop_request()  # the request that ended the stretch before must not end this one
        checkpoint = run.last_checkpoint()
        run.record("resume", {"step": run.resume_step()})  # later steps of the cut-off stretch are logged again
    recorders = [(name, bus.on(name, lambda payload, name=name: run.record(name, payload)))
                 for name in EVENTS]
    recorders += [(name, bus.on(name, lambda payload: run.heartbeat(payload["step"])))
                  for name in ("log", "checkpoint")]
    if preflight:
        run.record("preflight", {"text": preflight})
    model = trainer.model
    model.train()
    try:
        if before is not None:
            before()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        status = "stopped" if stop else "completed"
        ended_by = STOP_REQUESTED if stop else (feed.ended_by if feed is not None else None)
    except KeyboardInterrupt:
        status, ended_by = "stopped", KEYBOARD_INTERRUPT
    except Exception as err:
        hint = _oom_hint(err)
        message = f"{type(err).__name__}: {err}"
        bus.emit("error", {"message": message, "hint": hint})
        run.set_status("failed", error=message, hint=hint, step=trainer.state.global_step)
        raise
    finally:
        model.eval()
        for name, fn in recorders:
            bus.off(name, fn)
    if getattr(trainer, "is_fsdp_enabled", False):
        # PEFT's FSDP recipe: gather the full (not sharded) state dict, so the adapter saved is
        # the whole adapter, loadable without FSDP.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(run.adapter_dir))  # every process calls it: FSDP gathers the shards
    if is_main_process():
        tokenizer.save_pretrained(run.adapter_dir)
    step, planned = trainer.state.global_step, trainer.state.max_steps
    # The trainer's closing summary, which its bar no longer prints (None where it never got there).
    summary = {"train_loss": None, "train_runtime": None, **(feed.summary if feed is not None else {})}
    end = {"step": step, "max_steps": planned, "status": status, "ended_by": ended_by, **summary}
    run.record("end", end)
    bus.emit("end", dict(end))  # a copy: a subscriber may change its payload
    best = trainer.state.best_model_checkpoint  # set by early stopping (load_best_model_at_end)
    extra = {"best_checkpoint": best, "best_metric": trainer.state.best_metric} if best else {}
    if status == "stopped" and run.stop_requested:  # who asked, for the panels to say
        extra["stop_request"] = run.stop_request
    run.set_status(status, step=step, max_steps=planned, ended_by=ended_by, **extra)
    trainer.accelerator.wait_for_everyone()  # every process then reads the final status
    # Without the autocast wrapper mixed precision put on its forward: run.model answers as a
    # loaded run would.
    run.model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return run
