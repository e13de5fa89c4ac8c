import copy

import pytest
import torch

from ftkit import check_data, load_data
from ftkit.generation.generate import generate
from ftkit.models.loading import quiet_library_noise
from ftkit.runs import new_run
from ftkit.widgets import chat_panel as module
from ftkit.widgets.chat_panel import ChatPanel

from widget_helpers import find_button, html_values, text

N = 10  # new tokens per answer: enough for several streamed chunks, little time


def saved_run(root, model, tok, name: str, zero: bool = False, seed: int = 1):
    """A finished run folder holding a real LoRA adapter for ``model``, as training saves one:
    PEFT's default init (B = 0: the adapter changes nothing) when ``zero``, else random A and B
    (an adapter that changes the answers, without the time a training run takes)."""
    from peft import LoraConfig, get_peft_model

    run = new_run(name, {"kind": "sft", "base_model": "tiny"}, root=root)
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=zero)
    with quiet_library_noise():  # PEFT asks transformers for a deprecated attribute
        get_peft_model(copy.deepcopy(model), config).save_pretrained(run.adapter_dir)
    tok.save_pretrained(run.adapter_dir)
    run.set_status("completed")
    return run


@pytest.fixture(scope="module")
def tuned(talkative, tmp_path_factory):
    model, tok = talkative
    return saved_run(tmp_path_factory.mktemp("runs"), model, tok, "tuned")


def oracle(model, run):
    """The run's model built independently of the panel: a full copy of the base with its adapter."""
    from peft import PeftModel

    with quiet_library_noise():
        return PeftModel.from_pretrained(copy.deepcopy(model), run.adapter_dir).eval()


def greedy(model, tok, messages, **kw) -> str:
    return generate(model, tok, [messages], max_new_tokens=N, progress=False, **kw)[0].text


def test_each_column_answers_as_its_model_does_greedily_with_its_own_history(talkative, tuned):
    model, tok = talkative
    panel = ChatPanel(model, tok, runs=[tuned], system="Be brief.", max_new_tokens=N)
    assert "ftkit-chat-panel" in panel._dom_classes and panel.columns == ["base", tuned.id]
    first = panel.send("Where is my order?")
    sys_msg = [{"role": "system", "content": "Be brief."}]
    asked = sys_msg + [{"role": "user", "content": "Where is my order?"}]
    tuned_model = oracle(model, tuned)
    assert first == {"base": greedy(model, tok, asked), tuned.id: greedy(tuned_model, tok, asked)}
    assert first["base"] == greedy(tuned_model, tok, asked, adapter=False)  # adapters off: the base model
    assert first["base"] != first[tuned.id] and all(first.values())

    second = panel.send("My card was charged twice.")
    for column, m in (("base", model), (tuned.id, tuned_model)):  # each column continues from its own answer
        history = asked + [{"role": "assistant", "content": first[column]},
                           {"role": "user", "content": "My card was charged twice."}]
        assert panel.conversation(column) == history + [{"role": "assistant", "content": second[column]}]
        assert second[column] == greedy(m, tok, history)
    assert panel.answers("base") == [first["base"], second["base"]] and panel.turns == 2
    shown = panel.answer_widget(1, tuned.id).value
    assert second[tuned.id].split()[0] in text(panel) and "▌" not in shown and "ftkit-pre" in shown


def test_the_caller_model_is_left_unchanged_and_shares_its_weights(talkative, tuned, monkeypatch):
    model, tok = talkative
    flags = [p.requires_grad for p in model.parameters()]
    before = greedy(model, tok, [{"role": "user", "content": "Hi"}])
    monkeypatch.setenv("FTKIT_RUNS", str(tuned.path.parent))
    panel = ChatPanel(model, tok, runs=[tuned.id], max_new_tokens=N)  # a run id is found in the runs folder
    assert panel.columns == ["base", tuned.id] and panel.effects[tuned.id] > 1e-3
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert greedy(model, tok, [{"role": "user", "content": "Hi"}]) == before
    shared = panel.chat_model.get_base_model().model.embed_tokens.weight
    assert shared is model.model.embed_tokens.weight  # one copy of the weights for every column


def test_answers_stream_into_the_column_widget_in_several_chunks(talkative, tuned):
    model, tok = talkative
    panel = ChatPanel(model, tok, runs=[tuned], max_new_tokens=N)
    panel.throttle_s = 0  # draw every chunk: the test counts them without depending on the clock
    shown = {column: [] for column in panel.columns}

    def watch(change):  # the turn's widgets exist when `turns` moves; watch each answer widget
        for column in panel.columns:
            panel.answer_widget(change["new"] - 1, column).observe(
                lambda c, column=column: shown[column].append(c["new"]), names="value")

    panel.observe(watch, names="turns")
    statuses = []
    panel.observe(lambda c: statuses.append(c["new"]), names="status")
    replies = panel.send("Where is my order?")
    for column, values in shown.items():
        streaming = [v for v in values if "▌" in v]
        assert len(streaming) > 1, values  # more than one chunk reached the widget before the end
        assert values[-1] == module._html.pre(replies[column])  # the final text, without the cursor
        lengths = [len(v) for v in streaming]
        assert lengths == sorted(lengths)  # the answer grows
    assert statuses == ["answering: base", f"answering: {tuned.id}", "idle"]


def test_reset_clears_the_conversation_and_keeps_the_settings(talkative, tuned):
    model, tok = talkative
    panel = ChatPanel(model, tok, runs=[tuned], system="Be brief.", max_new_tokens=N)
    panel.set(max_new_tokens=4)
    panel.send("Hi")
    panel.rate(0, "base", up=True)
    assert len(panel._columns_box.children[0].children) == 4  # the header and a turn's three widgets
    find_button(panel, css="ftkit-chat-reset").click()
    assert panel.turns == 0 and panel.user_messages == [] and panel.answers("base") == []
    assert panel.conversation(tuned.id) == [{"role": "system", "content": "Be brief."}]
    assert [len(box.children) for box in panel._columns_box.children] == [1, 1]  # headers only
    assert panel.pairs() == [] and panel._ratings == {}
    assert panel.settings["max_new_tokens"] == 4 and panel.system == "Be brief."
    with pytest.raises(IndexError):
        panel.answer_widget(0, "base")


def test_ratings_make_preference_pairs_that_save_and_load(talkative, tuned, tmp_path):
    model, tok = talkative
    panel = ChatPanel(model, tok, runs=[tuned], max_new_tokens=N)
    with pytest.raises(IndexError, match="turn 0 has no answer"):
        panel.rate(0, "base", True)
    a = panel.send("Where is my order?")
    b = panel.send("My card was charged twice.")
    with pytest.raises(ValueError, match="no column 'nope'"):
        panel.rate(0, "nope", True)
    panel.rate(0, tuned.id, up=True)
    _, down = panel._thumbs[(0, "base")]
    down.click()  # the thumbs under the answer do what rate() does
    assert panel._ratings[(0, "base")] is False and down.button_style == "danger"
    panel.rate(1, "base", up=False)  # only a thumbs down at turn 1: no reference here, so no pair
    pairs = panel.pairs()
    asked = [{"role": "user", "content": "Where is my order?"}]
    assert pairs == [{"prompt": "Where is my order?", "chosen": a[tuned.id], "rejected": a["base"],
                      "history": asked}]
    assert panel.pairs(conversational=True) == [{
        "prompt": asked, "chosen": [{"role": "assistant", "content": a[tuned.id]}],
        "rejected": [{"role": "assistant", "content": a["base"]}]}]
    panel.rate(1, tuned.id, up=True)  # the second turn: the chosen answer's own history is the context
    second = panel.pairs()[1]
    assert second["history"] == asked + [{"role": "assistant", "content": a[tuned.id]},
                                              {"role": "user", "content": "My card was charged twice."}]
    assert (second["chosen"], second["rejected"]) == (b[tuned.id], b["base"])
    from ftkit.training.dpo import to_trl_pairs
    from ftkit.prompts import zero_shot

    assert to_trl_pairs([second], zero_shot())[0]["prompt"] == second["history"]  # DPO sees the turns before it

    path = panel.save_pairs(tmp_path / "pairs.jsonl")
    assert check_data(path).shape == "preference"
    assert load_data(path, verbose=False).to_list() == panel.pairs()
    assert "2 preference pairs written" in text(panel)


def test_no_pairs_is_an_error_in_the_panel_and_an_empty_message_is_refused(talkative, tmp_path):
    model, tok = talkative
    panel = ChatPanel(model, tok, max_new_tokens=N)
    assert panel.columns == ["base"] and panel.chat_model is model  # no runs: the model as it is
    with pytest.raises(ValueError, match="no preference pairs yet"):
        panel.save_pairs(tmp_path / "p.jsonl")
    find_button(panel, css="ftkit-save-pairs").click()
    assert "no preference pairs yet" in text(panel)
    find_button(panel, css="ftkit-chat-send").click()  # the box is empty
    assert "type a message first" in text(panel) and panel.turns == 0
    panel._input.value = "Hi"
    find_button(panel, css="ftkit-chat-send").click()
    assert panel.turns == 1 and panel._input.value == "" and panel.answers("base")


def test_an_adapter_that_changes_nothing_is_warned_about_and_a_changed_one_is_not(talkative, tuned, tmp_path):
    model, tok = talkative
    untrained = saved_run(tmp_path, model, tok, "untrained", zero=True)
    panel = ChatPanel(model, tok, runs=[untrained, tuned], max_new_tokens=N)
    assert panel.effects[untrained.id] == 0.0 and panel.effects[tuned.id] > 1e-3
    [warning] = panel.warnings
    assert untrained.id in warning and "changes nothing" in warning and warning in text(panel)
    assert ChatPanel(model, tok, runs=[tuned], max_new_tokens=N).warnings == []
    replies = panel.send("Hi")
    assert replies[untrained.id] == replies["base"] != replies[tuned.id]  # what the warning says


def test_a_model_whose_adapters_cannot_be_turned_off_is_refused(talkative, tuned):
    from peft import LoraConfig, get_peft_model

    model, tok = talkative
    with quiet_library_noise():
        carrier = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj"])).get_base_model()
    with pytest.raises(ValueError, match="no column would show the base model"):
        ChatPanel(carrier, tok, runs=[tuned])


def test_a_base_column_that_differs_from_the_model_is_an_error(talkative, tuned, monkeypatch):
    model, tok = talkative
    real = module.next_token_logits

    def drifted(m, *args, **kwargs):  # as if the copy's base weights were not the caller's
        logits = real(m, *args, **kwargs)
        return logits + 1 if m is not model else logits

    monkeypatch.setattr(module, "next_token_logits", drifted)
    with pytest.raises(RuntimeError, match="base column would not be the base model"):
        ChatPanel(model, tok, runs=[tuned])


def test_an_edited_system_prompt_reaches_what_every_column_reads(talkative, tuned, monkeypatch):
    model, tok = talkative
    panel = ChatPanel(model, tok, runs=[tuned], max_new_tokens=3)
    received = []
    stream = module.stream_reply

    def spy(m, t, messages, **kw):
        received.append((kw["adapter"], messages))
        return stream(m, t, messages, **kw)

    monkeypatch.setattr(module, "stream_reply", spy)
    panel.send("Hi")
    assert all(messages[0]["role"] == "user" for _, messages in received)  # empty: the template's default
    panel._system.value = "You answer in German."  # typed into the panel's text area
    assert "You answer in German." in panel.rendered("base", "Danke")
    assert panel.rendered(tuned.id).startswith(
        tok.apply_chat_template([{"role": "system", "content": "You answer in German."}], tokenize=False))
    received.clear()
    panel.send("Thanks")
    assert [a for a, _ in received] == [False, tuned.id]
    for _, messages in received:
        assert messages[0] == {"role": "system", "content": "You answer in German."}
        assert messages[-1] == {"role": "user", "content": "Thanks"} and len(messages) == 4


def test_sampling_settings_reach_the_generation_and_a_failure_takes_the_message_back(talkative, tuned, monkeypatch):
    model, tok = talkative
    panel = ChatPanel(model, tok, runs=[tuned], max_new_tokens=N)
    assert panel._temperature.disabled and panel.settings["seed"] is None
    with pytest.raises(ValueError, match="no setting 'temp'"):
        panel.set(temp=1)
    panel.set(do_sample=True, temperature=1.3, top_p=0.8, seed=7, max_new_tokens=5)
    assert not panel._temperature.disabled
    received = []
    stream = module.stream_reply

    def spy(m, t, messages, **kw):
        received.append(kw)
        if kw["adapter"] == tuned.id:
            raise RuntimeError("out of memory (simulated)")
        return stream(m, t, messages, **kw)

    monkeypatch.setattr(module, "stream_reply", spy)
    panel._input.value = "Hi"
    find_button(panel, css="ftkit-chat-send").click()
    assert {k: received[0][k] for k in ("do_sample", "temperature", "top_p", "seed", "max_new_tokens")} == \
        dict(do_sample=True, temperature=1.3, top_p=0.8, seed=7, max_new_tokens=5)
    assert "simulated" in text(panel) and panel._input.value == "Hi"  # the message is kept to send again
    assert panel.turns == 0 and panel.user_messages == [] and panel.history == {"base": [], tuned.id: []}
    assert [len(box.children) for box in panel._columns_box.children] == [1, 1]
    assert panel.status == "idle" and not find_button(panel, css="ftkit-chat-send").disabled


def test_a_task_gives_the_system_prompt_and_the_stop_strings(talkative):
    from ftkit import tasks

    model, tok = talkative
    task = next(tasks.get(n) for n in tasks.names() if tasks.get(n).system)
    panel = ChatPanel(model, tok, task=task.name, max_new_tokens=N)
    assert panel.system == task.system and panel.stop_strings == list(task.stop_strings)
    assert ChatPanel(model, tok, system="Mine.", task=task.name).system == "Mine."


def test_user_text_is_escaped(talkative):
    model, tok = talkative
    panel = ChatPanel(model, tok, max_new_tokens=2)
    panel.send("<script>alert(1)</script>")
    values = html_values(panel)
    assert not any("<script>alert(1)</script>" in v for v in values)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in v for v in values)
