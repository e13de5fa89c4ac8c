from types import SimpleNamespace

import pytest

from ftkit.prompts import CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM, PromptTemplate
from ftkit.widgets import PromptLab
from ftkit.widgets import prompt_lab as module

from widget_helpers import LABELS, ROWS, find_button, text

TRAIN, TEST = ROWS[:6], ROWS[6:]


def test_the_prompt_is_built_from_the_controls_and_rendered_exactly(talkative):
    model, tok = talkative
    lab = PromptLab(model, tok, train=TRAIN, eval=TEST)
    assert "ftkit-prompt-lab" in lab._dom_classes and lab.labels == LABELS
    t = lab.template
    assert (t.instruction, t.system, t.shots, t.labels) == (CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM, [], LABELS)
    assert lab.rendered() == t.render(TEST[0], tok)
    assert lab.token_count() == len(tok(lab.rendered(), add_special_tokens=False)["input_ids"])
    assert lab.rendered() in text(lab) and f"{lab.token_count()} prompt tokens" in text(lab)

    zero_shot_tokens = lab.token_count()
    lab.set_system("")
    lab.set_instruction("Route: {prompt}")
    lab.set_shots(2, strategy="first")
    t = lab.template
    assert t.system is None and t.instruction == "Route: {prompt}" and t.shots == TRAIN[:2]
    assert lab.rendered() == t.render(TEST[0], tok) and "Route: Where is my order?" in lab.rendered()
    assert lab.token_count() == len(tok(lab.rendered(), add_special_tokens=False)["input_ids"])
    assert lab.token_count() != zero_shot_tokens and f"{lab.token_count()} prompt tokens" in text(lab)

    saved = lab.save_variant("2-shot")
    assert isinstance(saved, PromptTemplate) and saved.name == "2-shot" and lab.variants == {"2-shot": saved}


def test_a_bad_instruction_shows_its_error_and_the_lab_recovers(talkative):
    model, tok = talkative
    lab = PromptLab(model, tok, train=TRAIN, eval=TEST)
    lab.set_instruction("no placeholder here")
    assert "has no placeholder; put {prompt} where the row's text goes" in text(lab)
    lab.set_instruction("{prompt}?")
    assert "has no placeholder" not in text(lab) and "I cannot log in?" in lab.rendered()
    find_button(lab, css="ftkit-save-variant").click()  # no name typed: an error, not an exception
    assert "give the variant a name" in text(lab)


def test_try_one_and_run_eval_show_outputs_and_the_metric(talkative, monkeypatch):
    model, tok = talkative
    received = []

    def spy(variants, rows, metrics, **kw):
        received.append((variants, rows, metrics, kw))
        return module.evaluate.__wrapped__(variants, rows, metrics, **kw)

    spy.__wrapped__ = module.evaluate
    monkeypatch.setattr(module, "evaluate", spy)
    lab = PromptLab(model, tok, train=TRAIN, eval=TEST, limit=1, max_new_tokens=4)
    out = lab.try_one(1)
    assert out.text and out.new_tokens == 4 and out.text in text(lab) and "I cannot log in" not in out.text

    result = lab.run_eval()
    [(variants, rows, metrics, kw)] = received
    assert rows == TEST[:1] and list(metrics) == ["exact_match"] and kw["labels"] == LABELS  # the task's metrics
    assert lab.task.name == "classification"  # labelled rows
    assert variants[0].template == lab.template and variants[0].max_new_tokens == 4
    assert len(result.table) == 1  # limit=1
    shown = text(lab)
    assert "zero-shot + system on 1 rows: exact_match 0.000" in shown
    assert result.table.iloc[0]["zero-shot + system: output"] in shown


def test_rows_are_needed_for_an_evaluation(talkative):
    model, tok = talkative
    lab = PromptLab(model, tok, train=TRAIN)
    with pytest.raises(ValueError, match="no evaluation rows"):
        lab.run_eval()


def test_the_lab_starts_from_the_tasks_prompt_and_metrics(tiny):
    from ftkit import tasks

    model, tok = tiny
    rows = [{"prompt": f"Where is order {i}?", "completion": f"in zone {i}", "context": f"Order {i} is in zone {i}."}
            for i in range(6)]
    lab = PromptLab(model, tok, train=rows[:4], eval=rows[4:], task="qa")
    qa = tasks.get("qa")  # the rows carry a passage: the prompt reads it, closed book is a variant
    assert lab.template.instruction == qa.passage_instruction and lab.labels == []
    assert "Order 4 is in zone 4." in lab.rendered()
    assert list(lab.metrics) == ["token_f1", "squad_exact_match"] and lab._max_new.value == qa.max_new_tokens
    assert "Where is order 4?" in lab.rendered()


def test_the_lab_takes_conversations_turn_by_turn(talkative):
    model, tok = talkative
    chat = [{"messages": [{"role": "user", "content": "Hi, it's Ann"}, {"role": "assistant", "content": "Hi Ann!"},
                          {"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "Gone."}]}]
    lab = PromptLab(model, tok, train=chat, eval=chat)
    assert lab.task.name == "chat"
    lab.set_system("Be brief.")
    rendered = lab.rendered(1)  # the second turn: the true first turn comes before it
    assert rendered.index("Be brief.") < rendered.index("Hi, it's Ann") < rendered.index("Hi Ann!") \
        < rendered.index("Where is my order?")
    lab._max_new.value = 2
    result = lab.run_eval()
    assert list(result.table["reference"]) == ["Hi Ann!", "Gone."]
    assert "assistant: Hi Ann!" in lab._outputs.value  # the earlier turns are shown with the answer


def test_the_lab_prompts_a_hosted_endpoint_and_shows_what_it_sends(monkeypatch):
    from fake_openai import KEY, KEY_ENV, FakeOpenAI

    from ftkit.generation.endpoint import Endpoint

    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeOpenAI() as fake:
        hosted = Endpoint(fake.base_url, "fake-model", api_key_env=KEY_ENV, price_per_million_input=1.0)
        lab = PromptLab(hosted, None, train=TRAIN, eval=TEST, limit=2, max_new_tokens=4)
        assert lab.token_count() is None and "system: " + CLASSIFY_SYSTEM in lab.rendered()
        assert "the messages sent to fake-model" in text(lab)
        out = lab.try_one(0)
        # a label is one line: the echoed prompt ends at its first (the task's answer end)
        echoed = f"echo: {lab.template.messages(TEST[0])[-1]['content']}"
        assert out.text == echoed.splitlines()[0] != echoed and out.prompt_tokens > 0
        result = lab.run_eval()
    assert fake.requests[0]["body"]["messages"] == lab.template.messages(TEST[0])
    assert fake.requests[0]["body"]["max_tokens"] == 4
    assert list(result.summary.index) == ["zero-shot + system"] and len(result.table) == 2
    assert "USD" in text(lab) and result.outputs("zero-shot + system")[0] in text(lab)


def test_the_lab_retrieves_shots_per_row_and_measures_them(talkative):
    model, tok = talkative
    lab = PromptLab(model, tok, train=TRAIN, eval=TEST, max_new_tokens=2)
    assert "retrieved" in lab._strategy.options
    lab.set_shots(1, strategy="retrieved")
    t = lab.template
    assert t.name == "retrieved 1-shot" and t.shots == [] and t.retriever.pool == TRAIN
    # "I cannot log in" shares "i" with "I was charged twice" only; "Ship it to my new flat" shares "my"
    # with "Where is my order?" and "Reset my password": the shorter row scores higher.
    assert [t.retriever(row) for row in TEST] == [[TRAIN[1]], [TRAIN[2]]]
    assert "I was charged twice" in lab.rendered(0) and "Reset my password" in lab.rendered(1)
    assert "Reset my password" not in lab.rendered(0)
    assert lab.token_count(0) == t.token_count(TEST[0], tok) and f"{lab.token_count()} prompt tokens" in text(lab)
    result = lab.run_eval()
    assert list(result.summary.index) == ["retrieved 1-shot"] and "retrieval_s" in result.summary.columns
    assert "ms to retrieve the shots" in text(lab)
    saved = lab.save_variant("nearest")
    assert saved.retriever is t.retriever and saved.messages(TEST[1]) == t.messages(TEST[1])


def test_with_no_evaluation_rows_a_training_row_never_retrieves_itself(talkative):
    model, tok = talkative
    lab = PromptLab(model, tok, train=TRAIN)
    lab.set_shots(1, strategy="retrieved")
    assert lab.template.retriever.nearest(TRAIN[0]) != [0] and "Where is my order?" in lab.rendered(0)
    assert lab.rendered(0).count("Where is my order?") == 1  # the question, not a shot as well


def test_the_lab_ends_answers_where_the_task_does(talkative, monkeypatch):
    """Trying one row and evaluating both stop where the task's answers end (a code block's end here)."""
    model, tok = talkative
    asked, evaluated = [], []
    monkeypatch.setattr(module, "generate", lambda *a, **kw: asked.append(kw) or [SimpleNamespace(
        text="def f(): pass", prompt_tokens=3, new_tokens=4, latency_s=0.1)])
    monkeypatch.setattr(module, "evaluate", lambda variants, *a, **kw: evaluated.extend(variants) or 1 / 0)
    rows = [{"prompt": f"Write f{i}().", "completion": f"def f{i}():\n    return {i}",
             "tests": [f"assert f{i}() == {i}"]} for i in range(3)]
    lab = PromptLab(model, tok, train=rows[:2], eval=rows[2:], task="code")
    lab.try_one(0)
    with pytest.raises(ZeroDivisionError):
        lab.run_eval()
    assert asked[0]["answer_end"] == "code block" and evaluated[0].answer_end == "code block"
