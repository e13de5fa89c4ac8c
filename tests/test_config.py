import json

from pathlib import Path

import pytest
import yaml

from ftkit.config import (ConfigError, DPOStage, PipelineConfig, SFTStage, config_from_dict, dump_config,
                          load_config)
from ftkit.training.dpo import DPOSettings
from ftkit.training.sft import SFTSettings
from ftkit.training.settings import LoraSettings


def write(tmp_path, values, name="pipeline.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps(values) if name.endswith(".json") else yaml.safe_dump(values))
    return path


def problems(values, tmp_path=None) -> str:
    with pytest.raises(ConfigError) as err:
        config_from_dict(values, base=tmp_path or ".")
    return str(err.value)


def test_yaml_maps_onto_the_dataclasses_the_notebooks_use(tmp_path, tiny_model_dir):
    (tmp_path / "tickets.csv").write_text("text,label\nhi,a\n")
    path = write(tmp_path, {
        "data": {"source": "tickets.csv", "mapping": {"prompt": "text", "completion": "label"}, "test_size": 10},
        "model": {"name": str(tiny_model_dir), "dtype": "float32"},
        "templates": [{"kind": "zero_shot"}, {"kind": "few_shot", "k": 3, "strategy": "random"}],
        "sft": {"learning_rate": 5e-4, "epochs": 1, "lora": {"r": 8, "alpha": 16}, "trl": {"warmup_ratio": 0.1},
                "template": "3-shot"},
        "dpo": {"source": "support_routing_preferences", "beta": 0.2},
        "metrics": ["exact_match", "chrf"],
    })
    config = load_config(path)
    assert isinstance(config.sft, SFTSettings) and isinstance(config.sft.lora, LoraSettings)
    assert isinstance(config.dpo, DPOSettings)
    assert (config.sft.learning_rate, config.sft.lora.r, config.sft.lora.alpha) == (5e-4, 8, 16)
    assert config.sft.trl == {"warmup_ratio": 0.1} and config.dpo.beta == 0.2
    assert config.data.source == str(tmp_path / "tickets.csv")  # relative to the config file
    assert config.data.test_size == 10 and isinstance(config.data.test_size, int)  # a row count
    assert config.templates[1].k == 3 and config.metrics[0] == "exact_match" and config.task is None


def test_json_is_read_too_and_sections_can_be_switched_off(tmp_path):
    config = load_config(write(tmp_path, {"sft": None, "templates": [{"kind": "with_system"}]}, "p.json"))
    assert config.sft is None and config.dpo is None and config.templates[0].kind == "with_system"


def test_unknown_key_names_its_path_the_allowed_keys_and_the_close_match():
    message = problems({"sft": {"learnign_rate": 1e-3, "lora": {"rnak": 4}}})
    assert "sft.learnign_rate: unknown key (did you mean 'learning_rate'?)" in message
    assert "allowed keys: name, epochs, max_steps, learning_rate" in message
    assert "sft.lora.rnak: unknown key" in message and "allowed keys: r, alpha, dropout" in message


def test_bad_choice_and_wrong_types_are_named():
    message = problems({"templates": [{"kind": "zero_shot"}, {"kind": "fewshot"}],
                        "model": {"dtype": "fp8"}, "sft": {"epochs": "two", "max_steps": True},
                        "metrics": ["exact_match", "acuracy"], "data": []})
    assert "templates[1].kind: 'fewshot' is not allowed (did you mean 'few_shot'?); choose one of: " \
           "zero_shot, with_system, few_shot" in message
    assert "model.dtype: 'fp8' is not allowed; choose one of: auto, float32, bfloat16, float16" in message
    assert "sft.epochs: expected a number, got str 'two'" in message
    assert "sft.max_steps: expected an integer, got bool True" in message
    assert "metrics[1]: 'acuracy' is not allowed" in message and "exact_match" in message
    assert "data: expected a mapping of source, mapping, test_size" in message


def test_missing_files_models_and_templates_are_reported_before_anything_loads(tmp_path):
    message = problems({"data": {"source": "nope.csv"}, "model": {"name": str(tmp_path / "no-model")},
                        "dpo": {"source": "support_routing_prefs"}, "sft": {"template": "zero-shot!"},
                        "task": "classification"}, tmp_path)
    assert f"data.source: no file '{tmp_path / 'nope.csv'}'" in message
    assert "did you mean 'support_routing_preferences'?" in message
    assert "model.name: no model folder at" in message
    assert "sft.template: no template named 'zero-shot!' (did you mean 'zero-shot'?)" in message


def test_dpo_needs_sft_and_template_names_must_differ():
    message = problems({"sft": None, "dpo": {}, "templates": [{"kind": "zero_shot"}, {"kind": "zero_shot"}]})
    assert "dpo: DPO continues the SFT adapter" in message
    assert "templates: names must differ; zero-shot appear(s) twice" in message


def test_a_dumped_config_loads_back_equal(tmp_path):
    config = PipelineConfig(sft=SFTStage(epochs=1, max_minutes=3), dpo=DPOStage(beta=0.3), task="qa")
    loaded = load_config(dump_config(config, tmp_path / "c.yaml"))
    assert loaded.data.source == "shop_qa"  # no data source: the task's built-in example
    loaded.data.source = ""
    # The same places, named against the config's folder now: relative paths read from there.
    assert Path(loaded.output.runs_root) == Path(config.output.runs_root).resolve()
    loaded.output = config.output
    assert loaded == config


def test_an_unknown_task_names_the_tasks(tmp_path):
    message = problems({"task": "poems"}, tmp_path)
    assert "task: 'poems' is not allowed; choose one of: classification, qa, translation" in message


def test_unreadable_files_say_why(tmp_path):
    (tmp_path / "bad.yaml").write_text("sft: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(ConfigError, match="a config is a .yaml, .yml or .json file"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="no config file at"):
        load_config(tmp_path / "missing.yaml")


def test_a_retrieved_shots_template_is_built_from_its_section_and_never_trained_on(tmp_path):
    from ftkit.config import TemplateConfig, template_name
    from ftkit.preparation import build_template, training_template
    from ftkit.prompts import CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM

    config = load_config(write(tmp_path, {"task": "classification", "sft": {},
                                          "templates": [{"kind": "retrieved_shots", "k": 2}, {"kind": "zero_shot"}]}))
    section = config.templates[0]
    assert (section.kind, section.k, template_name(section)) == ("retrieved_shots", 2, "retrieved 2-shot")
    train = [{"prompt": p, "completion": c, "label": c} for p, c in [
        ("where is my parcel", "shipping"), ("refund the kettle", "billing"), ("parcel lost again", "shipping")]]
    t = build_template(section, train, ["billing", "shipping"])
    assert (t.name, t.instruction, t.system, t.shots) == ("retrieved 2-shot", CLASSIFY_INSTRUCTION, CLASSIFY_SYSTEM, [])
    assert t.retriever.pool == train and t.retriever.k == 2
    asked = t.messages({"prompt": "my parcel"})
    assert [m["content"] for m in asked if m["role"] == "assistant"] == ["shipping", "shipping"]  # rows 2, then 0
    assert "Message: where is my parcel" in asked[-3]["content"]  # the nearest, shown last
    zero = build_template(config.templates[1], train, ["billing", "shipping"])
    # The first template without shots: the retrieved one shows shots too, though its list is empty.
    assert training_template(config, [t, zero]) is zero
    config.sft.template = "retrieved 2-shot"
    with pytest.raises(ConfigError, match="retrieves its examples per request"):
        training_template(config, [t, zero])
    assert TemplateConfig(kind="retrieved_shots").k == 8


def test_sft_cannot_be_told_to_train_on_a_retrieved_template():
    message = problems({"templates": [{"kind": "zero_shot"}, {"kind": "retrieved_shots", "k": 4}],
                        "sft": {"template": "retrieved 4-shot"}})
    assert "sft.template: 'retrieved 4-shot' retrieves its examples per request" in message
    message = problems({"task": "qa", "sft": {"template": "retrieved 4-shot"}})  # the task's own templates
    assert "sft.template: 'retrieved 4-shot' retrieves its examples per request" in message


def test_sft_answers_held_out_rows_about_8_times_a_run_unless_set_and_refuses_a_negative_interval():
    from ftkit.config import describe

    config = config_from_dict({})
    assert config.sft.sample_every is None and config.sft.sample_rows == 3  # null: the pipeline picks it
    assert config_from_dict({"sft": {"sample_every": 0}}).sft.sample_every == 0  # off
    with pytest.raises(ConfigError, match=r"sft.sample_every: -3 is below its minimum 0; allowed: >= 0"):
        config_from_dict({"sft": {"sample_every": -3}})
    with pytest.raises(ConfigError, match=r"sft.sample_rows: 40 is above its maximum 16"):
        config_from_dict({"sft": {"sample_rows": 40}})
    text = describe()
    assert "  sample_every: null  # Answer a few held-out rows greedily every N steps" in text
    assert text.index("eval_steps:") < text.index("sample_every:") < text.index("sample_rows:")
