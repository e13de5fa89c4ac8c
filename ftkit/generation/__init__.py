"""Answers from a model: batched generation with timings and token counts, an OpenAI-compatible endpoint, streaming chat, fair latency timing."""

from ftkit._lazy import exports

__getattr__, __dir__ = exports(__name__, {"Endpoint": "endpoint", "EndpointError": "endpoint", "Generation": "generate", "Timing": "timing", "generate": "generate", "stream_reply": "chat", "time_variants": "timing"})
__all__ = ['Endpoint', 'EndpointError', 'Generation', 'Timing', 'generate', 'stream_reply', 'time_variants']
