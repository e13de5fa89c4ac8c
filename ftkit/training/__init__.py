"""Training: the settings SFT and DPO share, each method, the events a run emits, plain-language readings of its curves, multi-GPU launch."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"DPOSettings": "dpo", "LoraSettings": "settings", "Preflight": "settings", "SFTSettings": "sft", "TrainingSettings": "settings", "completion_positions": "settings", "default": "settings", "device_defaults": "settings", "micro_batches": "settings", "range_problem": "settings", "range_text": "settings", "read_curves": "curves", "settings_fields": "settings", "show_progress": "settings", "train_and_record": "settings", "train_dpo": "dpo", "train_sft": "sft", "trainable_model": "settings", "training_cost": "curves", "trl_arguments": "settings"})
__all__ = ['DPOSettings', 'LoraSettings', 'Preflight', 'SFTSettings', 'TrainingSettings', 'completion_positions', 'default', 'device_defaults', 'micro_batches', 'range_problem', 'range_text', 'read_curves', 'settings_fields', 'show_progress', 'train_and_record', 'train_dpo', 'train_sft', 'trainable_model', 'training_cost', 'trl_arguments']
