"""Exports of a run, each checked: the adapter or merged weights (:mod:`~ftkit.export.merged`, the
merge checked against the adapter in :mod:`~ftkit.export.parity`), GGUF for llama.cpp
(:mod:`~ftkit.export.gguf`) with its Ollama Modelfile (:mod:`~ftkit.export.modelfile`, whose
template is rendered by :mod:`~ftkit.export.go_template`), and the re-score of a written export
in a fresh process (:mod:`~ftkit.export.check`, which writes nothing).

>>> export_run(run, "router-gguf", gguf=True, check_rows=test[:16])   # doctest: +SKIP
"""

import os

from ftkit._lazy import exports


class ExportError(RuntimeError):
    """An export does not behave like the run's model: a merge that does not answer like the adapter
    or a GGUF file that does not read back the same (nothing was written then), or an exported
    folder that answers differently in a fresh process. The message says what differs."""


def usual_mode(path) -> None:
    """Give a file written through ``tempfile.mkstemp`` (mode 0600: only its owner reads it) the mode
    a plain ``open(..., "w")`` gives under this process's umask, so that Ollama's service user, or
    whoever the file is copied to, can read the export."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


__getattr__, __dir__ = exports(__name__, {"ExportCheck": "check", "check_export": "check", "export_gguf": "gguf",
                                          "export_run": "merged", "merged_and_checked": "parity",
                                          "modelfile_template": "modelfile", "read_modelfile": "modelfile",
                                          "render_go_template": "go_template"})
__all__ = ['ExportCheck', 'ExportError', 'check_export', 'export_gguf', 'export_run', 'merged_and_checked',
           'modelfile_template', 'read_modelfile', 'render_go_template']
