"""The settings form: its number controls are bounded by the range each field declares, the same
range a config file is checked against, and a number outside it is refused with the field named."""

import dataclasses

import ipywidgets as w
import pytest

from ftkit.training.dpo import DPOSettings
from ftkit.training.sft import SFTSettings
from ftkit.widgets._form import Form

RANGE_KEYS = ("min", "max", "above", "below")  # how a field declares its range (ftkit.training.settings)


def number_controls(form: Form):
    """``(control, field)`` for every int/float setting, LoRA's included."""
    fields = {f.name: f for f in dataclasses.fields(form._cls)}
    for name, control in form._controls.items():
        f = fields[name]
        if isinstance(control, (w.IntText, w.FloatText, w.BoundedIntText, w.BoundedFloatText)):
            yield control, f
    for nested in form._nested.values():
        yield from number_controls(nested)


@pytest.mark.parametrize("cls", [SFTSettings, DPOSettings])
def test_every_number_control_is_bounded_by_its_fields_declared_range(cls):
    seen = set()
    for control, f in number_controls(Form(cls())):
        m = f.metadata
        assert isinstance(control, (w.BoundedIntText, w.BoundedFloatText)), f.name
        assert set(m) & set(RANGE_KEYS), f"{f.name} declares no range"
        low = min([m.get("min", m.get("above")), *m.get("also", ())]) if {"min", "above"} & set(m) else None
        high = m.get("max", m.get("below"))
        if low is not None:
            assert control.min == low, f.name
        if high is not None:
            assert control.max == high, f.name
        seen.add(f.name)
    numeric = {f.name for f in dataclasses.fields(cls) if f.type in ("int", "float")}
    assert numeric <= seen and {"r", "alpha", "dropout"} <= seen


def test_a_number_outside_its_range_is_refused_by_name_not_clamped():
    form = Form(SFTSettings())
    with pytest.raises(ValueError, match=r"batch_size: -3 is below its minimum 1; allowed: >= 1"):
        form.set(batch_size=-3)
    assert form.value().batch_size == SFTSettings().batch_size  # the control kept its value
    with pytest.raises(ValueError, match=r"r: 0 is below its minimum 1"):
        form.set(lora={"r": 0})
    # The exclusive bounds a bounded control lets through (it holds [0, 1]) are refused on reading.
    form._controls["learning_rate"].value = 0.0
    with pytest.raises(ValueError, match=r"learning_rate: 0.0 is not above 0; allowed: > 0 and <= 1"):
        form.value()
    form.set(learning_rate=1e-4, max_steps=-1, lora={"dropout": 0.5})  # values in range, -1 a sentinel
    s = form.value()
    assert (s.learning_rate, s.max_steps, s.lora.dropout) == (1e-4, -1, 0.5)
    form._controls["max_steps"].value = 0  # between the sentinel and the minimum: the control allows it
    with pytest.raises(ValueError, match=r"max_steps: 0 is below its minimum 1; allowed: >= 1, or -1"):
        form.value()
