"""User data shown in a panel's HTML is text: a row holding markup never becomes markup."""

from ftkit.prompts import zero_shot
from ftkit.widgets import ComparePanel, DataPanel, PromptLab, TrainPanel

from widget_helpers import ROWS, XSS, assert_escaped, html_values

HOSTILE = [{"prompt": XSS[0], "completion": XSS[1], "label": XSS[1]},
           {"prompt": XSS[1], "completion": XSS[0], "label": XSS[0]}] + ROWS[:2]


def test_data_panel_escapes_rows_and_errors(tiny_tokenizer):
    panel = DataPanel(tokenizer=tiny_tokenizer, source=[{"text": t, "label": l} for t, l in (XSS, XSS[::-1])])
    assert panel.report.ok
    assert_escaped(panel)  # the preview shows the rows
    panel.set_mapping({"prompt": XSS[0], "completion": "label"})  # the error names the column
    assert_escaped(panel)


def test_prompt_lab_escapes_the_rendered_prompt_outputs_and_tables(talkative):
    model, tok = talkative
    lab = PromptLab(model, tok, train=ROWS[2:], eval=HOSTILE, max_new_tokens=2)
    lab.set_shots(2, strategy="first")
    lab.try_one(0)
    lab.run_eval()
    assert_escaped(lab)
    lab.set_instruction(XSS[0])  # an instruction without a placeholder: the error quotes it
    assert_escaped(lab)


def test_train_panel_escapes_the_preflight_example_and_errors(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    panel = TrainPanel(model, tok, train=HOSTILE, runs_root=tmp_path)
    panel.preflight()
    assert_escaped(panel)

    from trl import SFTTrainer

    def broken(self, *args, **kwargs):
        raise RuntimeError(XSS[1])

    monkeypatch.setattr(SFTTrainer, "training_step", broken)
    panel.set(max_steps=1, batch_size=4, save_steps=100)
    panel._preflight_html.value = ""
    panel.start()
    panel.wait(timeout=120)
    assert panel.status == "failed"
    assert_escaped(panel)


def test_compare_panel_escapes_inputs_references_outputs_and_names(talkative):
    model, tok = talkative
    name = "<b onmouseover=alert(1)>bold</b>"
    panel = ComparePanel(model, tok, dataset=HOSTILE, templates={name: zero_shot()}, max_new_tokens=2)
    panel.run()
    assert_escaped(panel)
    assert not any(name in v for v in html_values(panel))  # the variant name in the table header
