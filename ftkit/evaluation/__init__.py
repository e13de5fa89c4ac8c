"""Scores: the metrics, the code sandbox, evaluating variants side by side, the verdict (prompting or fine-tuning?), a judge model for open-ended answers and the experiments behind it."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"Advice": "verdict", "EvalResult": "evaluate", "JudgeResult": "judge", "Template": "evaluate", "Variant": "evaluate", "advise": "verdict", "evaluate": "evaluate", "from_scratch": "experiments", "judge_variants": "judge", "learning_curve": "experiments", "task_change": "experiments"})
__all__ = ['Advice', 'EvalResult', 'JudgeResult', 'Template', 'Variant', 'advise', 'evaluate', 'from_scratch', 'judge_variants', 'learning_curve', 'task_change']
