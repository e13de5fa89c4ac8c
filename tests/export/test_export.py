"""Exports that are checked: adapter, merged and GGUF exports re-scored in a fresh process, the GGUF
file read back by transformers, and the Ollama Modelfile's template rendered against the chat template."""

import copy
import json
import os
import re

import pytest
import torch
from tiny_models import (
    CHATML,
    make_gemma_tokenizer,
    make_tokenizer,
    save_tiny_family,
    save_tiny_model,
)

from ftkit.export import ExportError
from ftkit.export.check import check_export
from ftkit.export.gguf import GGUF_FILE, QUANTIZED_TYPES, export_gguf, gguf_files, quantized_file
from ftkit.export.llamacpp import INSTALL_GGUF, llamacpp_available
from ftkit.export.llamacpp_check import check_in_llamacpp
from ftkit.export.quantize import quantize_gguf
from ftkit.export.go_template import render_go_template
from ftkit.export.merged import export_run
from ftkit.export.modelfile import MODELFILE, modelfile_template, read_modelfile
from ftkit.generation.generate import generate
from ftkit.models.loading import load_model
from ftkit.models.tuned import load_run_model, run_template
from ftkit.prompts import PromptTemplate
from ftkit.report import render_report
from ftkit.training.sft import SFTSettings, train_sft

ROWS = [{"prompt": p, "completion": c} for p, c in [
    ("Where is my order?", "order_status"), ("I was charged twice", "billing"),
    ("Reset my password", "account"), ("Change the delivery address", "address")]] * 2
HELD_OUT = [{"prompt": "My order is late", "completion": "order_status"},
            {"prompt": "Refund the double charge", "completion": "billing"},
            {"prompt": "I cannot log in", "completion": "account"}]
METRICS = ["exact_match", "rouge_l"]

# SmolLM2-135M-Instruct's chat template, as its GGUF file carries it: a default system turn.
SMOLLM = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
          "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# Llama 3's shape: the BOS token written by the template, headers around each role, no default system.
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
CONVERSATIONS = [
    [("system", "You sort tickets."), ("user", "Where is my order?"), ("assistant", "order_status")],
    [("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye")],
    [("system", "Be brief."), ("user", "line one\nline two {{ not an action }}")],
]


def _messages(conversation):
    return [{"role": r, "content": c} for r, c in conversation]


def _widened(model):
    """Weights drawn wide enough that prompts get different greedy answers (at the default
    scale the tiny model answers every prompt the same)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0)
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of LoRA SFT on a tiny llama with wide weights, and the base it loads from."""
    folder = save_tiny_model(tmp_path_factory.mktemp("wide-base"))
    model, tok = load_model(folder, device="cpu", dtype="float32", verbose=False)
    _widened(model).save_pretrained(folder)
    model, tok = load_model(folder, device="cpu", dtype="float32", verbose=False)
    template = PromptTemplate(name="route", instruction="Route: {prompt}", system="You route tickets.")
    return train_sft(model, tok, ROWS, template=template, runs_root=tmp_path_factory.mktemp("runs"), config=SFTSettings(
        max_steps=4, batch_size=4, logging_steps=1, save_steps=100, learning_rate=5e-2))


# --------------------------------------------------------------------------------------------
# The fresh-process round trip


@pytest.mark.parametrize("merged", [False, True], ids=["adapter", "merged"])
def test_an_export_is_rescored_in_a_fresh_process_and_recorded_with_the_run(trained, tmp_path, merged):
    folder = export_run(trained, tmp_path / "out", merged=merged, check_rows=HELD_OUT, metrics=METRICS)
    kind = "merged" if merged else "adapter"
    assert (folder / ("config.json" if merged else "adapter_config.json")).is_file()
    [record] = [c for c in trained.export_checks if c["kind"] == kind]
    assert record["passed"] and record["rows"] == 3 and record["answers_equal"] == 3 and record["differ"] == []
    assert record["in_memory"] == record["exported"] and record["scores"]["in_memory"] == record["scores"]["exported"]
    assert set(record["scores"]["exported"]) == set(METRICS) and record["metric"] == "exact_match"
    assert record["message"].startswith(f"{kind} export (float32) checked in a fresh process: exact_match")
    assert record["seconds"] > 0 and record["folder"] == str(folder.resolve())
    # The answers really come from the other process: it read the rows and template from the spec.
    model, tok = load_run_model(trained, device="cpu", dtype="float32", merged=merged)
    answers = [g.text for g in generate(model, tok, [run_template(trained).messages(r) for r in HELD_OUT],
                                        max_new_tokens=32, progress=False)]
    assert len(set(answers)) > 1  # the wide weights give the rows different answers: a real comparison


def test_a_merged_export_that_answers_differently_in_a_fresh_process_is_an_error(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = export_run(trained, tmp_path / "merged", merged=True)
    weights = load_file(folder / "model.safetensors")
    torch.manual_seed(1)
    weights = {k: (torch.randn_like(v) if v.dim() == 2 else v) for k, v in weights.items()}  # a broken copy
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError, match=r"the merged export in .* does not answer like the run's model: "
                                          r"exact_match [\d.]+ exported vs [\d.]+ in memory on 3 rows; greedy "
                                          r"answers equal on [012] of 3 \(row \d: in memory '.*', exported '.*'\)"):
        check_export(trained, folder, HELD_OUT, METRICS)
    record = [c for c in trained.export_checks if c["kind"] == "merged"][-1]
    assert not record["passed"] and record["differ"] and record["answers_equal"] < 3  # kept for the report


def test_a_merged_export_that_does_not_answer_like_the_adapter_is_refused(trained, tmp_path, monkeypatch):
    from peft import LoraModel

    merge = LoraModel.merge_and_unload

    def broken_merge(self, *args, **kwargs):  # a merge that gets one matrix wrong
        merged = merge(self, *args, **kwargs)
        with torch.no_grad():
            merged.model.layers[0].mlp.down_proj.weight.mul_(3.0)
        return merged

    monkeypatch.setattr(LoraModel, "merge_and_unload", broken_merge)
    with pytest.raises(ExportError, match=r"the merged weights do not answer like the adapter: .*logits differ by "
                                          r"up to [\d.e+-]+ \(allowed 0.001 in torch.float32\); nothing was written"):
        export_run(trained, tmp_path / "merged", merged=True, rows=ROWS[:4])
    assert not (tmp_path / "merged").exists()


def test_an_export_check_says_what_it_cannot_do(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no export"):
        check_export(trained, tmp_path, HELD_OUT)
    folder = export_run(trained, tmp_path / "adapter")
    with pytest.raises(ValueError, match="scores by metric name"):
        check_export(trained, folder, HELD_OUT, [lambda p, r, row: 1.0])
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        check_export(trained, folder, HELD_OUT, ["nope"])
    (folder / "adapter_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ExportError, match=r"the adapter export in .* did not load and answer in a fresh process"):
        check_export(trained, folder, HELD_OUT)


# --------------------------------------------------------------------------------------------
# GGUF


def _tiny_llama(folder):
    """A tiny llama with what the GGUF writer must carry across: grouped-query attention, a head
    size that is not hidden/heads, untied output matrix, its own rope base and norm epsilon."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=12, max_position_embeddings=1024, tie_word_embeddings=False,
        rope_theta=50000.0, rms_norm_eps=1e-5, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    _widened(LlamaForCausalLM(config)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return load_model(folder, device="cpu", dtype="float32", verbose=False)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_gguf_export_reloads_in_transformers_with_the_same_answers(tmp_path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = _tiny_llama(tmp_path / "model")
    folder = export_gguf(model, tmp_path / "gguf", tokenizer=tok, dtype=dtype)
    assert sorted(p.name for p in folder.iterdir()) == [MODELFILE, GGUF_FILE]  # no temporary file left
    again = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    tok2 = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings",
                "vocab_size", "eos_token_id", "bos_token_id", "max_position_embeddings"):
        assert getattr(again.config, key) == getattr(model.config, key), key
    assert again.config.rms_norm_eps == pytest.approx(1e-5, rel=1e-6)  # GGUF keeps it as a float32
    assert again.config.rope_parameters["rope_theta"] == 50000.0
    assert tok2.chat_template == tok.chat_template and tok2.eos_token == tok.eos_token == "<|im_end|>"

    reference = model
    if dtype == "float16":  # the file holds the matrices rounded to float16, the norms in float32
        reference = copy.deepcopy(model)
        with torch.no_grad():
            for p in reference.parameters():
                p.copy_(p.half().float() if p.dim() == 2 else p)
    ids = torch.tensor([tok("Where is my order? It was due last week.")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, reference(ids).logits, atol=1e-4)
    conversations = [[{"role": "user", "content": r["prompt"]}] for r in ROWS[:4] + HELD_OUT]
    ours = [g.text for g in generate(reference, tok, conversations, max_new_tokens=8, progress=False)]
    theirs = [g.text for g in generate(again, tok2, conversations, max_new_tokens=8, progress=False)]
    assert ours == theirs and len(set(ours)) > 1


def test_a_gguf_export_of_a_run_writes_a_modelfile_and_passes_the_fresh_process_check(trained, tmp_path):
    folder = export_run(trained, tmp_path / "gguf", gguf=True, check_rows=HELD_OUT, metrics=METRICS)
    [record] = [c for c in trained.export_checks if c["kind"] == "gguf" and c.get("engine") == "transformers"]
    assert record["passed"] and record["answers_equal"] == 3 and record["dtype"] == "float32"
    if llamacpp_available():  # and llama.cpp itself answered the file, recorded beside it
        [cpp] = [c for c in trained.export_checks if c.get("engine") == "llama.cpp"]
        assert cpp["passed"] and cpp["gguf_type"] == "f32" and cpp["answers_equal"] == 3
    modelfile = read_modelfile(folder / MODELFILE)
    assert modelfile["from"] == f"./{GGUF_FILE}" and modelfile["system"] == "You route tickets."
    assert modelfile["parameters"] == {"stop": ["<|im_end|>"], "temperature": ["0"]}
    assert "# It was trained on user turns written as: Route: {prompt}" in (folder / MODELFILE).read_text()
    # What Ollama sends for a conversation without a system turn: the run's system prompt first, as trained.
    asked = run_template(trained).messages(HELD_OUT[0])
    tok = make_tokenizer()
    assert render_go_template(modelfile["template"], asked) == tok.apply_chat_template(
        asked, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_a_gguf_export_names_the_architectures_it_does_not_write(tmp_path, family):
    model, tok = load_model(save_tiny_family(tmp_path / family, family, make_tokenizer()), device="cpu",
                            dtype="float32", verbose=False)
    with pytest.raises(ExportError, match=rf"GGUF export supports the llama architecture \(model_type: llama, "
                                          rf"mistral\); this model is '{family}'.*convert_hf_to_gguf"):
        export_gguf(model, tmp_path / "gguf", tokenizer=tok)
    assert not (tmp_path / "gguf").exists()


def test_a_mistral_model_exports_as_llama_for_gguf(tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = load_model(save_tiny_family(tmp_path / "m", "mistral", make_tokenizer()), device="cpu",
                            dtype="float32", verbose=False)
    _widened(model)
    folder = export_gguf(model, tmp_path / "gguf", tokenizer=tok)
    again = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    ids = torch.tensor([tok("Please change the delivery address")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-4)


def test_a_gguf_export_refuses_a_sentencepiece_tokenizer_and_an_adapter_model(tmp_path, trained):
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    model, tok = _tiny_llama(tmp_path / "model")
    spm = Tokenizer(models.BPE(vocab={"<unk>": 0, "<0x0A>": 1, "\u2581a": 2}, merges=[], byte_fallback=True))
    spm.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    spm_tok = PreTrainedTokenizerFast(tokenizer_object=spm, unk_token="<unk>", eos_token="<unk>")
    spm_tok.chat_template = CHATML
    with pytest.raises(ExportError, match=r"byte-level BPE tokenizers .*\(sentencepiece: Llama 2, Mistral v0\.1\)"):
        export_gguf(model, tmp_path / "gguf", tokenizer=spm_tok)
    with pytest.raises(ValueError, match="carries a PEFT adapter; export the Run"):
        export_gguf(trained.model, tmp_path / "gguf", tokenizer=tok)
    with pytest.raises(ValueError, match="dtype 'q4_0' is not written"):
        export_gguf(model, tmp_path / "gguf", tokenizer=tok, dtype="q4_0")
    assert not (tmp_path / "gguf").exists()


# --------------------------------------------------------------------------------------------
# The Modelfile TEMPLATE against the Jinja chat template


@pytest.mark.parametrize("chat_template", [CHATML, SMOLLM, LLAMA3], ids=["chatml", "smollm", "llama3"])
def test_gguf_modelfile_template_renders_what_the_chat_template_renders(chat_template):
    tok = make_tokenizer(chat_template)
    if chat_template is LLAMA3:
        tok.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    go = modelfile_template(tok)
    for conversation in CONVERSATIONS:
        messages = _messages(conversation)
        opening = messages[-1]["role"] != "assistant"
        expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=opening)
        assert render_go_template(go, messages) == expected
    if chat_template is SMOLLM:  # the default system turn, only when the conversation has none
        assert render_go_template(go, _messages(CONVERSATIONS[1])).startswith("<|im_start|>system\nYou are a helpful")
        assert "SmolLM" not in render_go_template(go, _messages(CONVERSATIONS[0]))


def test_gguf_export_refuses_a_modelfile_template_that_renders_differently(tmp_path):
    model, tok = _tiny_llama(tmp_path / "model")
    with pytest.raises(ExportError, match="cannot derive an Ollama TEMPLATE from this chat template .*System role "
                                          "not supported.*ollama_template="):
        modelfile_template(make_gemma_tokenizer())
    wrong = "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"  # no opening turn
    with pytest.raises(ExportError, match=r"renders 2 messages differently from the chat template, from character "
                                          r"\d+: '' against '<\|im_start\|>assistant\\n'"):
        export_gguf(model, tmp_path / "gguf", tokenizer=tok, ollama_template=wrong)
    assert not (tmp_path / "gguf").exists()
    # One written by hand, with trim markers and variables: checked the same way, and kept.
    right = ('{{- range $i, $m := .Messages }}<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n{{ end -}}\n'
             '{{ if ne (index .Messages (len (slice .Messages 1))).Role "assistant" }}<|im_start|>assistant\n{{ end }}')
    folder = export_gguf(model, tmp_path / "gguf", tokenizer=tok, ollama_template=right)
    assert read_modelfile(folder / MODELFILE)["template"] == right


def test_gguf_go_template_renderer_follows_go_semantics():
    messages = _messages([("system", "S"), ("user", "U"), ("assistant", "A")])
    # Trim markers eat the whitespace next to them, newlines included.
    assert render_go_template("a  \n{{- .System -}}  \n b", [], system="x") == "axb"
    # and/or stop at the deciding argument: index on an empty list is never evaluated.
    assert render_go_template('{{ if and .Messages (eq (index .Messages 0).Role "system") }}yes{{ else }}no{{ end }}',
                              []) == "no"
    assert render_go_template('{{ if or (not .Messages) (eq (index .Messages 0).Role "x") }}1{{ end }}', []) == "1"
    # range with index and element, a variable set inside, slice and len for "is this the last one".
    go = ('{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}{{ $i }}:{{ $m.Role }}'
          '{{ if $last }}!{{ else if eq .Role "system" }}+{{ else }},{{ end }}{{ end }}')
    assert render_go_template(go, messages) == "0:system+1:user,2:assistant!"
    assert render_go_template('{{ range .Messages }}x{{ else }}empty{{ end }}', []) == "empty"
    assert render_go_template('{{ "{{" }}{{ .System }}}}', [], system="s") == "{{s}}"
    # := declares in its block (the outer $x is untouched), = assigns where $x lives.
    assert render_go_template("{{ $x := 1 }}{{ if true }}{{ $x := 3 }}{{ end }}{{ $x }}", []) == "1"
    assert render_go_template("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", []) == "2"
    assert render_go_template("a\n{{-\t.System\n-}}\nb", [], system="x") == "axb"
    assert render_go_template("{{ eq .System \"a\" \"b\" }}", [], system="b") == "true"  # eq with several
    assert render_go_template("{{ .Messages | len }}", messages) == "3"
    for bad, why in [("{{ with .System }}x{{ end }}", "with"), ("{{ if .System }}x", "end"),
                     ("{{ printf \"%s\" .System }}", "printf"), ("{{ .System", "unclosed")]:
        with pytest.raises(ValueError, match=why):
            render_go_template(bad, [])


# --------------------------------------------------------------------------------------------
# The report


def test_the_report_shows_the_exported_score_next_to_the_in_memory_one(tmp_path):
    from ftkit.runs import new_run

    run = new_run("exported", {"kind": "sft"}, root=tmp_path)
    run.set_status("completed")
    base = {"folder": "/x", "dtype": "float32", "metric": "exact_match", "rows": 16, "scores": {}, "seconds": 9.0}
    run.record_export_check({**base, "kind": "gguf", "in_memory": 0.8125, "exported": 0.8125, "answers_equal": 16,
                             "differ": [], "passed": True})
    run.record_export_check({**base, "kind": "merged", "in_memory": 0.8125, "exported": 0.75, "answers_equal": 15,
                             "differ": [{"row": 3, "input": "q", "in_memory": "billing", "exported": "<b>bill"}],
                             "passed": False})
    run.record_export_check({**base, "kind": "gguf", "in_memory": 0.8125, "exported": 0.8125, "answers_equal": 16,
                             "differ": [], "passed": True, "dtype": "float16"})  # replaces the earlier gguf check
    assert [c["kind"] for c in run.export_checks] == ["merged", "gguf"]
    assert json.loads((run.path / "export-check.json").read_text())["checks"][1]["dtype"] == "float16"
    page = render_report(runs=[run])
    assert re.findall(r"<h2>(.*?)</h2>", page) == ["Training cost", "Export check"]
    section = page.split("<h2>Export check</h2>")[1]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", section)
    fresh = "transformers, fresh process"
    assert cells[:11] == [run.id, "merged", fresh, "float32", "16", "exact_match", "0.812", "0.75", "-0.062",
                          "15 of 16 (94%)",
                          "differs: row 3: &#x27;billing&#x27; in memory, &#x27;&lt;b&gt;bill&#x27; exported"]
    assert cells[11:22] == [run.id, "gguf", fresh, "float16", "16", "exact_match", "0.812", "0.812", "+0.000",
                            "16 of 16 (100%)", "matches"]
    assert section.count('<td class="bad">') == 1 and section.count('<td class="ok">') == 1
    unchecked = new_run("plain", {"kind": "sft"}, root=tmp_path)
    assert unchecked.export_checks == [] and "Export check" not in render_report(runs=[unchecked])


# --------------------------------------------------------------------------------------------
# The embedded model


@pytest.mark.integration
def test_a_gguf_export_of_the_embedded_model_answers_like_its_merged_weights(tmp_path):
    from ftkit.data import examples
    from ftkit.prompts import CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM

    rows = examples.load("support_routing", verbose=False).to_list()
    labels = sorted({r["completion"] for r in rows})
    model, tok = load_model("smollm2-135m-instruct", device="cpu", dtype="float32", verbose=False)
    template = PromptTemplate(name="route", instruction=CLASSIFY_INSTRUCTION, system=CLASSIFY_SYSTEM, labels=labels)
    run = train_sft(model, tok, rows[:8], template=template, runs_root=tmp_path / "runs", config=SFTSettings(
        max_steps=1, batch_size=4, logging_steps=1, save_steps=100, learning_rate=1e-3))
    folder = export_gguf(run, tmp_path / "gguf")  # read back in this process: same tensors, same token ids
    modelfile = read_modelfile(folder / MODELFILE)
    for conversation in CONVERSATIONS:  # the real template, with its default system turn
        messages = _messages(conversation)
        assert render_go_template(modelfile["template"], messages) == tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=messages[-1]["role"] != "assistant")
    # A fresh process loads model.gguf with from_pretrained(gguf_file=...) and answers greedily.
    check = check_export(run, folder, rows[100:104], max_new_tokens=12)
    assert check.passed and check.answers_equal == 4 and check.exported == check.in_memory
    assert run.export_checks[-1]["kind"] == "gguf"
    if not llamacpp_available() and not os.environ.get("CI"):
        pytest.skip(f"llama.cpp is not installed ({INSTALL_GGUF}); CI installs it")
    # llama.cpp itself, through the file's own chat template, on rows with order numbers in them
    # (its split of digits must be the run's): the same answers from the float32 file; quantized
    # copies within a stated tolerance: Q8_0 at least half the answers identical and the score within
    # 0.25; Q4_K_M only without a template, tokenizer or end-of-turn cause (measured: 16 of 16
    # identical for float16, 13 of 16 for Q8_0, 2 of 16 for Q4_K_M after one training step).
    for gguf_type in QUANTIZED_TYPES:
        quantize_gguf(folder / GGUF_FILE, folder / quantized_file(gguf_type), gguf_type)
    parity = rows[100:110]
    assert any(ch.isdigit() for r in parity for ch in r["prompt"])
    f32, q8, q4 = check_in_llamacpp(run, gguf_files(folder), parity, max_new_tokens=12)
    assert (f32.gguf_type, q8.gguf_type, q4.gguf_type) == ("f32", "q8_0", "q4_k_m")
    assert f32.passed and f32.answers_equal == len(parity) and f32.exported == f32.in_memory, f32.message
    assert q8.passed and q8.answers_equal >= len(parity) / 2 and abs(q8.exported - q8.in_memory) <= 0.25, q8.message
    assert q4.passed and (q4.cause == "" or q4.cause.startswith("weights:")), q4.message
