"""Models: device and precision (``device``), loading with source resolution and tokenizer
preparation (``loading``), the GGUF conversion cache (``conversion``), the family table
(``families``), a tuned run's model and template (``tuned``); the CPU threads torch uses (``threads``). Names load on first use: importing this
package imports no torch.
"""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "cache_dir": "conversion",
    "converted_gguf": "conversion",
    "DeviceChoice": "device",
    "ModelInfo": "device",
    "ModelLoadError": "device",
    "choose_device": "device",
    "cpu_has_native_bf16": "device",
    "describe_device": "device",
    "model_info": "device",
    "FAMILIES": "families",
    "Family": "families",
    "family_notes": "families",
    "lora_targets": "families",
    "EMBEDDED_NAME": "loading",
    "load_model": "loading",
    "load_tokenizer": "loading",
    "prepare_tokenizer": "loading",
    "quiet_library_noise": "loading",
    "resolve_source": "loading",
    "shared_weights_copy": "loading",
    "load_run_model": "tuned",
    "run_template": "tuned",
})
__all__ = ["DeviceChoice", "EMBEDDED_NAME", "FAMILIES", "Family", "ModelInfo", "ModelLoadError", "cache_dir", "choose_device", "converted_gguf", "cpu_has_native_bf16", "describe_device", "family_notes", "load_model", "load_tokenizer", "lora_targets", "model_info", "prepare_tokenizer", "quiet_library_noise", "resolve_source", "load_run_model", "run_template", "shared_weights_copy"]
