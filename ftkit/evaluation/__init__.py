"""Scores: the metrics, the code sandbox, evaluating variants side by side, the verdict (prompting or fine-tuning?) and the experiments behind it."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"Advice": "verdict", "EvalResult": "evaluate", "Template": "evaluate", "Variant": "evaluate", "advise": "verdict", "evaluate": "evaluate", "from_scratch": "experiments", "learning_curve": "experiments", "task_change": "experiments"})
__all__ = ['Advice', 'EvalResult', 'Template', 'Variant', 'advise', 'evaluate', 'from_scratch', 'learning_curve', 'task_change']
