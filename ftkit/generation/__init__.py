"""Answers from a model: one backend protocol (a local model, an OpenAI-compatible endpoint), batched generation with timings and token counts, streaming chat, fair latency timing."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"Backend": "backend", "Endpoint": "endpoint", "EndpointError": "endpoint", "Generation": "backend", "LocalModel": "generate", "Timing": "timing", "as_backend": "generate", "generate": "generate", "model_lock": "generate", "stream_reply": "chat", "time_variants": "timing"})
__all__ = ['Backend', 'Endpoint', 'EndpointError', 'Generation', 'LocalModel', 'Timing', 'as_backend', 'generate', 'model_lock', 'stream_reply', 'time_variants']
