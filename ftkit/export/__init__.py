"""Exports that are checked: merged weights re-scored in a fresh process, GGUF for llama.cpp, the Ollama Modelfile."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"ExportCheck": "check", "check_export": "check", "export_gguf": "gguf"})
__all__ = ['ExportCheck', 'check_export', 'export_gguf']
