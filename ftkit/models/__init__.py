"""Models: the device and precision, loading (with the GGUF conversion cache) and the family table; the CPU threads torch uses."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"DeviceChoice": "loading", "EMBEDDED_NAME": "loading", "FAMILIES": "loading", "Family": "loading", "ModelInfo": "loading", "ModelLoadError": "loading", "cache_dir": "loading", "choose_device": "loading", "cpu_has_native_bf16": "loading", "describe_device": "loading", "family_notes": "loading", "load_model": "loading", "load_tokenizer": "loading", "lora_targets": "loading", "model_info": "loading", "prepare_tokenizer": "loading", "quiet_library_noise": "loading"})
__all__ = ['DeviceChoice', 'EMBEDDED_NAME', 'FAMILIES', 'Family', 'ModelInfo', 'ModelLoadError', 'cache_dir', 'choose_device', 'cpu_has_native_bf16', 'describe_device', 'family_notes', 'load_model', 'load_tokenizer', 'lora_targets', 'model_info', 'prepare_tokenizer', 'quiet_library_noise']
