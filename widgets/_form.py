"""A form generated from a settings dataclass: one control per field, its help text as tooltip,
a number's control bounded by the range its field declares (the range a config file is checked
against, :func:`ftkit.training.settings.range_problem`).

>>> from ftkit.training.sft import SFTSettings
>>> form = Form(SFTSettings(batch_size=4))
>>> form.set(max_steps=5)
>>> form.value().max_steps, form.value().batch_size
(5, 4)
>>> form.set(batch_size=0)
Traceback (most recent call last):
  ...
ValueError: batch_size: 0 is below its minimum 1; allowed: >= 1
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing

import ipywidgets as w

from ftkit.training.settings import range_problem, settings_fields

_LAYOUT = {"width": "22em"}
_STYLE = {"description_width": "11em"}


# The widest bounds a browser's number holds exactly (ints) or at all (floats, JSON has no inf).
_NO_BOUND = {int: 2**53 - 1, float: sys.float_info.max}


def _bounds(f: dataclasses.Field, kind) -> tuple:
    """The widget's inclusive (min, max) for field ``f``: its declared range, widened to the values
    it also allows (max_steps -1). An exclusive bound is the widget's bound too (a learning rate
    of 0 can be typed), and :meth:`Form.value` refuses it with the field's range."""
    m = f.metadata
    low = min([m.get("min", m.get("above", -_NO_BOUND[kind])), *m.get("also", ())])
    high = max([m.get("max", m.get("below", _NO_BOUND[kind])), *m.get("also", ())])
    return low, high


def _control(f: dataclasses.Field, kind, value) -> w.Widget:
    common = dict(description=f.name, tooltip=f.metadata.get("help", ""), style=_STYLE, layout=_LAYOUT)
    if kind is bool:
        return w.Checkbox(value=value, indent=False, **common)
    if kind in (int, float):
        low, high = _bounds(f, kind)
        # Bounded: what is typed outside the range snaps to the nearest bound in the browser.
        bounded = w.BoundedIntText if kind is int else w.BoundedFloatText
        return bounded(value=value, min=low, max=high, **common)
    if kind is dict:
        return w.Textarea(value=json.dumps(value), placeholder='{"warmup_ratio": 0.1}', **common)
    return w.Text(value="" if value is None else str(value), **common)


class Form(w.VBox):
    """Controls for the fields of ``settings`` (a dataclass instance); nested dataclasses (LoRA)
    get their own folded section. ``value()`` builds a new instance from what the controls hold;
    ``set()`` and ``value()`` refuse a number outside its field's range with a ValueError."""

    def __init__(self, settings):
        self._cls = type(settings)
        self._controls: dict[str, w.Widget] = {}
        self._fields: dict[str, dataclasses.Field] = {}
        self._nested: dict[str, Form] = {}
        hints = typing.get_type_hints(self._cls)
        flat, folded = [], []
        for f in settings_fields(self._cls):
            value = getattr(settings, f.name)
            if dataclasses.is_dataclass(value):
                self._nested[f.name] = Form(value)
                section = w.Accordion(children=[self._nested[f.name]], titles=(f.name,))
                folded.append(section)
                continue
            self._controls[f.name] = _control(f, hints[f.name], value)
            self._fields[f.name] = f
            flat.append(self._controls[f.name])
        super().__init__(children=[w.GridBox(flat, layout={"grid_template_columns": "repeat(2, 24em)"}),
                                   *folded])

    def set(self, **values) -> None:
        """Set controls by field name; a nested section takes a dict or a dataclass instance."""
        for name, value in values.items():
            if name in self._nested:
                nested = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
                self._nested[name].set(**nested)
            elif name in self._controls:
                control = self._controls[name]
                self._check(name, value)  # a bounded control would clamp it without a word
                control.value = json.dumps(value) if isinstance(control, w.Textarea) else value
            else:
                known = ", ".join([*self._controls, *self._nested])
                raise ValueError(f"no setting {name!r}; settings are: {known}")

    def value(self):
        """A new settings instance from the controls; raises ValueError for unreadable JSON."""
        kwargs = {name: form.value() for name, form in self._nested.items()}
        for name, control in self._controls.items():
            if isinstance(control, w.Textarea):
                try:
                    kwargs[name] = json.loads(control.value or "{}")
                except json.JSONDecodeError as err:
                    raise ValueError(f"{name} must be a JSON object, e.g. {control.placeholder}: {err}") from None
            else:
                kwargs[name] = self._check(name, control.value)
        return self._cls(**kwargs)

    def _check(self, name: str, value):
        """``value`` when it lies in field ``name``'s range; else a ValueError that says the range."""
        problem = range_problem(self._fields[name], value)
        if problem:
            raise ValueError(f"{name}: {problem}")
        return value
