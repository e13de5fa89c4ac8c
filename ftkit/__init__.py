"""ftkit: is prompt engineering enough, or should you fine-tune? Measure it on your own data.

The core is plain functions and dataclasses, usable from a script, a test or a notebook cell:

    from ftkit import load_model, load_data, split
    model, tokenizer = load_model()              # the embedded SmolLM2-135M-Instruct
    data = load_data("tickets.csv")              # the detected column mapping is printed
    parts = split(data, test_size=0.2, stratify_by="label")

Interactive panels live in ``ftkit.widgets``; the core never imports ipywidgets or IPython.
"""

from ftkit import _source_tree  # noqa: F401  (maps ftkit.widgets to widgets/ in a checkout; see there)

__version__ = "0.1.0"

# Loaded on first use (PEP 562): `import ftkit` stays light, and torch, datasets and pandas load
# when a model or a dataset does. `ftkit run` reads its config before any of them.
from ftkit._lazy import exports  # noqa: E402

__getattr__, __dir__ = exports(__name__, {
    "DataError": "data.canonical", "DataReport": "data.canonical", "check_data": "tasks",
    "load_data": "data.canonical", "split": "data.canonical", "ModelLoadError": "models.device",
    "choose_device": "models.device", "describe_device": "models.device", "load_model": "models.loading",
}, modules={"examples": "data.examples"})  # `from ftkit import examples`: the built-in datasets, as before

__all__ = [
    "DataError",
    "examples",
    "DataReport",
    "ModelLoadError",
    "check_data",
    "choose_device",
    "describe_device",
    "load_data",
    "load_model",
    "split",
]
