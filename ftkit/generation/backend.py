"""What answers a prompt: the one protocol a local model and a hosted endpoint both implement.

A generation backend takes chat conversations and returns one :class:`Generation` per
conversation (the text, the tokens it cost, its share of the wall time). Two implement it:
:class:`ftkit.generation.generate.LocalModel` (a transformers model and its tokenizer, batched on
this machine) and :class:`ftkit.generation.endpoint.Endpoint` (any OpenAI-compatible server).
Evaluation, timing and the panels ask the protocol, never which of the two they hold:

>>> from ftkit.generation.endpoint import Endpoint
>>> isinstance(Endpoint(model="gpt-4o-mini"), Backend)
True
>>> Endpoint(model="gpt-4o-mini").hosted, Endpoint(model="gpt-4o-mini").warmup_rows
(True, 1)

This module imports nothing heavy: a hosted endpoint needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Backend", "Generation"]


@dataclass
class Generation:
    """One output: the text, the tokens it cost, and its share of the batch's wall time."""

    text: str
    prompt_tokens: int
    new_tokens: int
    latency_s: float


@runtime_checkable
class Backend(Protocol):
    """Anything that answers conversations as :func:`ftkit.generation.generate.generate` does.

    ``hosted``: answered by a server (its token counts come from another tokenizer, it has no
    adapters to switch, it may cost money). ``warmup_rows``: rows a fair timing answers untimed
    first (a local model pays for allocations on its first call; a hosted request costs money).
    """

    hosted: bool
    warmup_rows: int

    @property
    def name(self) -> str:
        """What a table calls this backend: the model's name or path."""
        ...

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 32, batch_size: int | None = None,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                 stop_strings: list[str] | None = None, adapter=None, progress: bool = True,
                 **options) -> list[Generation]:
        """One answer per conversation, in order. Options a backend has no use for are ignored
        (``prefix_cache`` on a server); one it cannot honour (an adapter on a server) raises."""
        ...

    def prompt_tokens(self, conversations: list[list[dict]]) -> list[int] | None:
        """The prompt tokens each conversation costs before it is sent, or None when only the
        server can count them (after answering)."""
        ...

    def cost_usd(self, prompt_tokens: int, new_tokens: int) -> float | None:
        """What one request with these token counts costs, or None when no price is known."""
        ...
