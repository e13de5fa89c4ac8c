"""Your data, read once at the edge: files, frames and datasets mapped to the canonical shapes, checked, split; the data report; the built-in examples."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"DataError": "canonical", "DataReport": "report", "LAYOUTS": "canonical", "SHAPES": "canonical", "as_rows": "canonical", "chat_turns": "canonical", "check_data": "canonical", "detect_mapping": "canonical", "find_overlap": "canonical", "group_column": "canonical", "label_set": "canonical", "load_data": "canonical", "path_problem": "sources", "render_example": "canonical", "shape_of": "canonical", "split": "canonical", "token_lengths": "canonical"})
__all__ = ['DataError', 'DataReport', 'LAYOUTS', 'SHAPES', 'as_rows', 'chat_turns', 'check_data', 'detect_mapping', 'find_overlap', 'group_column', 'label_set', 'load_data', 'path_problem', 'render_example', 'shape_of', 'split', 'token_lengths']
