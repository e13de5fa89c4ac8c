"""A form generated from a settings dataclass: one control per field, its help text as tooltip.

>>> from ftkit.sft import SFTSettings
>>> form = Form(SFTSettings(batch_size=4))
>>> form.set(max_steps=5)
>>> form.value().max_steps, form.value().batch_size
(5, 4)
"""

from __future__ import annotations

import dataclasses
import json
import typing

import ipywidgets as w

from ftkit.training import settings_fields

_LAYOUT = {"width": "22em"}
_STYLE = {"description_width": "11em"}


def _control(name: str, kind, value, help_text: str) -> w.Widget:
    common = dict(description=name, tooltip=help_text, style=_STYLE, layout=_LAYOUT)
    if kind is bool:
        return w.Checkbox(value=value, indent=False, **common)
    if kind is int:
        return w.IntText(value=value, **common)
    if kind is float:
        return w.FloatText(value=value, **common)
    if kind is dict:
        return w.Textarea(value=json.dumps(value), placeholder='{"warmup_ratio": 0.1}', **common)
    return w.Text(value="" if value is None else str(value), **common)


class Form(w.VBox):
    """Controls for the fields of ``settings`` (a dataclass instance); nested dataclasses (LoRA)
    get their own folded section. ``value()`` builds a new instance from what the controls hold."""

    def __init__(self, settings):
        self._cls = type(settings)
        self._controls: dict[str, w.Widget] = {}
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
            self._controls[f.name] = _control(f.name, hints[f.name], value, f.metadata.get("help", ""))
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
                kwargs[name] = control.value
        return self._cls(**kwargs)
