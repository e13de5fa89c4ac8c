"""GGUF exports answered by llama.cpp itself (xllamacpp: llama.cpp's server, prebuilt): the same answers
as the run's model for float files, what quantization costs for quantized ones, and a broken chat
template, end-of-turn token or pre-tokenizer named as the cause."""

import os
import warnings

import gguf
import pytest
from test_export import HELD_OUT, METRICS, ROWS, trained  # noqa: F401  (the module's run fixture)

from ftkit.export import ExportError
from ftkit.export.gguf import GGUF_FILE, export_gguf
from ftkit.export.llamacpp import INSTALL_GGUF, llamacpp_available
from ftkit.export.llamacpp_check import check_in_llamacpp, gguf_type_of
from ftkit.export.merged import export_run

needs_llamacpp = pytest.mark.skipif(not llamacpp_available() and not os.environ.get("CI"),
                                    reason=f"llama.cpp is not installed ({INSTALL_GGUF}); CI installs it")

CHECK_ROWS = HELD_OUT + ROWS[:4]


def _rewrite(source, target, *, fields=None, drop=()):
    """A copy of a GGUF file with some metadata changed: what a broken exporter would write."""
    reader = gguf.GGUFReader(str(source))
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(str(target), arch)
    fields = fields or {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in drop:
            continue
        value = fields.pop(name, field.contents())
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, kind, sub_type=sub)
    for name, (value, kind) in fields.items():
        writer.add_key_value(name, value, kind)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@needs_llamacpp
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_gguf_export_answers_in_llamacpp_exactly_as_the_run_s_model(trained, tmp_path, dtype):  # noqa: F811
    folder = export_gguf(trained, tmp_path / "gguf", dtype=dtype)
    [check] = check_in_llamacpp(trained, folder / GGUF_FILE, CHECK_ROWS, METRICS)
    assert check.engine == "llama.cpp" and check.gguf_type == {"float32": "f32", "float16": "f16"}[dtype]
    assert check.answers_equal == check.rows == len(CHECK_ROWS), check.message
    assert check.passed and check.cause == "" and check.exported == check.in_memory
    assert check.intervals["difference"] == [0.0, 0.0, 0.0]
    low, high = check.intervals["exported"]
    assert low <= check.exported <= high
    # Recorded with the run beside the transformers check, one per weight type.
    recorded = [c for c in trained.export_checks
                if c.get("engine") == "llama.cpp" and c["gguf_type"] == check.gguf_type]
    assert len(recorded) == 1 and recorded[0]["passed"]


@needs_llamacpp
def test_a_wrong_chat_template_in_the_file_is_named_with_the_first_differing_token(trained, tmp_path):  # noqa: F811
    folder = export_gguf(trained, tmp_path / "gguf")
    wrong = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
             "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>user\n' }}{% endif %}")
    broken = _rewrite(folder / GGUF_FILE, tmp_path / "broken.gguf", fields={"tokenizer.chat_template": wrong})
    [check] = check_in_llamacpp(trained, broken, CHECK_ROWS, METRICS, record=False)
    assert not check.passed
    assert check.cause.startswith("chat template: llama.cpp renders the prompt differently"), check.cause
    assert "'user\\n' where the run has 'assistant\\n'" in check.cause and "first differing token" in check.cause


@needs_llamacpp
def test_a_wrong_end_of_turn_token_is_named(trained, tmp_path):  # noqa: F811
    """An exporter that writes another token as the end of generation (an off-by-one id, another
    vocabulary's): llama.cpp stops where the run's model goes on. (A wrong id alone is not enough to
    break a ChatML model: llama.cpp treats any token named <|im_end|> as an end of turn as well.)"""
    import torch

    from ftkit.models.tuned import load_run_model, run_template

    model, tok = load_run_model(trained, device="cpu", dtype="float32", merged=True)
    prompt = tok.apply_chat_template(run_template(trained).messages(CHECK_ROWS[0]), tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        first = int(model.generate(torch.tensor([ids]), max_new_tokens=1, do_sample=False)[0, -1])
    folder = export_gguf(trained, tmp_path / "gguf")
    broken = _rewrite(folder / GGUF_FILE, tmp_path / "broken.gguf", fields={"tokenizer.ggml.eos_token_id": first})
    [check] = check_in_llamacpp(trained, broken, CHECK_ROWS, METRICS, record=False)
    assert not check.passed and check.answers_equal < check.rows, check.message
    piece = tok.decode([first])
    assert check.cause.startswith(f"end of turn: after the same 0 answer tokens llama.cpp stops at {piece!r} "
                                  f"({first}), which the file marks as an end of generation"), check.cause
    assert "Cause: end of turn" in check.message


@needs_llamacpp
def test_a_file_naming_another_split_is_named_as_the_pre_tokenizer(trained, tmp_path):  # noqa: F811
    """The run trained with GPT-2's split (its tokenizer merges "12"); a file naming SmolLM's
    split (every digit alone) makes llama.cpp tokenize the prompt differently wherever a number is."""
    folder = export_gguf(trained, tmp_path / "gguf")
    assert gguf.GGUFReader(str(folder / GGUF_FILE)).fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    broken = _rewrite(folder / GGUF_FILE, tmp_path / "broken.gguf", fields={"tokenizer.ggml.pre": "smollm"})
    rows = [{"prompt": "Please change the delivery address to 12 Elm Street.", "completion": "address"}, *HELD_OUT]
    [check] = check_in_llamacpp(trained, broken, rows, METRICS, record=False)
    assert not check.passed
    assert check.cause.startswith("pre-tokenizer: llama.cpp splits the same prompt into other tokens (its split: "
                                  "'smollm'), first at token #"), check.cause
    assert "' ' (" in check.cause and "' 12' (" in check.cause  # llama.cpp's lone space, then digits one by one


@needs_llamacpp
@pytest.mark.integration
def test_the_embedded_model_s_tokenizer_splits_digits_as_llamacpp_does(tmp_path):
    """The embedded model's tokenizer splits digits one by one, its own split (llama.cpp's
    ``smollm``), which transformers' GGUF reader leaves out: the same ids as llama.cpp's."""
    from ftkit.export.llamacpp import LlamaCpp
    from ftkit.models.loading import load_tokenizer, resolve_source

    _, location = resolve_source("smollm2-135m-instruct")
    tok = load_tokenizer()
    texts = ["Order 12345 costs $67.89", "In 2026, 3 of 10 rows", "x1y22z333"]
    with LlamaCpp(location, n_ctx=256) as cpp:  # the file as shipped: the same ids as ftkit's tokenizer
        assert [cpp.tokenize(t) for t in texts] == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert tok("12345", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(d) for d in "12345"]


@needs_llamacpp
def test_export_run_writes_quantized_copies_and_scores_each_in_llamacpp(trained, tmp_path):  # noqa: F811
    from ftkit.export.gguf import quantized_file
    from ftkit.report import export_table

    folder = export_run(trained, tmp_path / "gguf", gguf=True, quantized=("q8_0", "q4_k_m"), check_rows=CHECK_ROWS,
                        metrics=METRICS)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["Modelfile", GGUF_FILE, quantized_file("q8_0"), quantized_file("q4_k_m")])
    assert gguf_type_of(folder / quantized_file("q4_k_m")) == "q4_k_m"
    mask = os.umask(0)
    os.umask(mask)
    for name in (GGUF_FILE, quantized_file("q8_0"), quantized_file("q4_k_m")):  # readable as any file written here
        assert (folder / name).stat().st_mode & 0o777 == 0o666 & ~mask
    checks = {c["gguf_type"]: c for c in trained.export_checks
              if c.get("engine") == "llama.cpp" and c["folder"].startswith(str(folder.resolve()))}
    assert sorted(checks) == ["f32", "q4_k_m", "q8_0"]
    assert checks["f32"]["answers_equal"] == len(CHECK_ROWS) and checks["f32"]["passed"]
    for gguf_type in ("q8_0", "q4_k_m"):  # what quantization costs is shown with its interval, not judged
        check = checks[gguf_type]
        assert check["passed"] and check["required_identical"] == 0.0
        mean, low, high = check["intervals"]["difference"]
        assert low <= mean <= high and mean == pytest.approx(check["exported"] - check["in_memory"])
        assert check["cause"] == "" or check["cause"].startswith("weights:")
    table = export_table([trained])
    for text in ("llama.cpp", "q4_k_m", "q8_0", "identical", "difference"):
        assert text in table
    assert "Modelfile" not in table and "FROM ./model-q4_k_m.gguf" in (folder / "Modelfile").read_text()


def test_without_llamacpp_the_check_says_what_to_install(trained, tmp_path, monkeypatch):  # noqa: F811
    import ftkit.export.llamacpp as llamacpp

    monkeypatch.setattr(llamacpp, "llamacpp_available", lambda: False)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        export_run(trained, tmp_path / "gguf", gguf=True, check_rows=HELD_OUT, metrics=METRICS)
    assert any("checked with transformers only" in str(w.message) and INSTALL_GGUF in str(w.message) for w in said)
    assert any(c["kind"] == "gguf" and c.get("engine", "transformers") == "transformers" and c["passed"]
               for c in trained.export_checks)
    assert gguf_type_of(tmp_path / "gguf" / GGUF_FILE) == "f32"


def test_a_failed_llamacpp_check_is_an_export_error(trained, tmp_path, monkeypatch):  # noqa: F811
    import ftkit.export.llamacpp_check as llamacpp_check
    from ftkit.export.check import ExportCheck

    def fake(run, paths, rows, metrics):
        return [ExportCheck(kind="gguf", engine="llama.cpp", gguf_type="f32", folder=str(p), metric="exact_match",
                            rows=3, in_memory=1.0, exported=0.0, answers_equal=0, required_identical=0.95,
                            cause="end of turn: example") for p in paths]

    monkeypatch.setattr(llamacpp_check, "check_in_llamacpp", fake)
    monkeypatch.setattr("ftkit.export.llamacpp.llamacpp_available", lambda: True)
    with pytest.raises(ExportError, match="does not answer in llama.cpp like the run's model.*Cause: end of turn"):
        export_run(trained, tmp_path / "gguf", gguf=True, check_rows=HELD_OUT, metrics=METRICS)
