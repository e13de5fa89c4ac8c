"""Interactive JupyterLab panels over ftkit, imported as ``ftkit.widgets``.

The panels are thin views: each builds its controls, calls one ftkit function on a click and
subscribes to ftkit's events. The core (``ftkit``) never imports this package or ipywidgets.
Every button's action is also a method, so a cell (or a test) can drive a panel without a browser,
and panels hand results to each other as plain objects:

>>> data = DataPanel(tokenizer=tokenizer, source="support_routing")           # doctest: +SKIP
>>> splits = data.use_this_data(test_size=0.2, seed=0, stratify=True)          # doctest: +SKIP
>>> lab = PromptLab(model, tokenizer, train=splits["train"], eval=splits["test"])  # doctest: +SKIP
>>> train = TrainPanel(model, tokenizer, train=splits["train"], template=lab.template)  # doctest: +SKIP
>>> compare = ComparePanel(base, tokenizer, dataset=splits["test"], templates=lab.variants,
...                        runs=[train.wait()])                                 # doctest: +SKIP
>>> chat = ChatPanel(base, tokenizer, runs=[train.wait()])                     # doctest: +SKIP
"""

from ftkit.widgets.chat_panel import ChatPanel
from ftkit.widgets.compare_panel import ComparePanel
from ftkit.widgets.data_panel import DataPanel
from ftkit.widgets.prompt_lab import PromptLab
from ftkit.widgets.train_panel import TrainPanel

__all__ = ["ChatPanel", "ComparePanel", "DataPanel", "PromptLab", "TrainPanel"]
