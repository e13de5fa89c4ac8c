"""Your data, read once at the edge: files, frames and datasets mapped to the canonical shapes
(``sources``, ``canonical``), checked (``report``, ``lengths``), split (``splits``); a run's record of
where its rows came from and which were held out, and that split made again (``provenance``); the built-in
examples and their house rules (``examples``); a small language guess (``languages``). Nothing here
knows tasks or prompts: those sit above, and pass a task in where a prompt is needed.
"""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "LAYOUTS": "canonical",
    "SHAPES": "canonical",
    "chat_turns": "canonical",
    "check_data": "canonical",
    "detect_mapping": "canonical",
    "label_set": "canonical",
    "load_data": "canonical",
    "shape_of": "canonical",
    "render_example": "lengths",
    "token_lengths": "lengths",
    "DataReport": "report",
    "find_overlap": "report",
    "DataError": "sources",
    "as_rows": "sources",
    "path_problem": "sources",
    "SourceChanged": "provenance",
    "data_record": "provenance",
    "held_out": "provenance",
    "reproduce": "provenance",
    "group_column": "splits",
    "split": "splits",
})
__all__ = ["DataError", "DataReport", "LAYOUTS", "SHAPES", "SourceChanged", "as_rows", "chat_turns", "check_data",
           "data_record", "detect_mapping", "find_overlap", "group_column", "held_out", "label_set", "load_data",
           "path_problem", "render_example", "reproduce", "shape_of", "split", "token_lengths"]
