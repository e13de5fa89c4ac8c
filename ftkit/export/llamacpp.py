"""llama.cpp itself, over a GGUF file ftkit wrote: the engine people run an export on.

ftkit's GGUF check through transformers reads the file with the same library that trained the
model; it cannot see what llama.cpp does differently (its own chat-template engine, its own
pre-tokenizer, its own end-of-generation tokens). :class:`LlamaCpp` runs llama.cpp's C++ server
in this process, from the ``xllamacpp`` package (``pip install 'ftkit[gguf]'``: llama.cpp's server
prebuilt for the CPU, so nothing compiles at install time). It answers greedily through the file's
own chat template, as ``llama-server`` does for ``/v1/chat/completions``, and exposes what a
diagnosis needs: the template's rendering, llama.cpp's tokens for a text, and answers to a prompt
given as token ids.

>>> with LlamaCpp("router-gguf/model.gguf") as cpp:          # doctest: +SKIP
...     cpp.chat([{"role": "user", "content": "Where is my order?"}], max_new_tokens=16)
'order_status'
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

__all__ = ["INSTALL_GGUF", "LlamaCpp", "llamacpp_available"]

INSTALL_GGUF = "pip install 'ftkit[gguf]'"


def llamacpp_available() -> bool:
    """Whether llama.cpp (the ``xllamacpp`` package) is installed here."""
    import importlib.util

    return importlib.util.find_spec("xllamacpp") is not None


class LlamaCpp:
    """llama.cpp's server over one GGUF file, in this process, answering greedily (temperature 0,
    top-k 1, no repetition penalty: what ftkit's evaluation does). Use it as a context manager or
    call :meth:`close`; ``threads`` defaults to ftkit's torch thread count."""

    def __init__(self, path, *, n_ctx: int = 4096, threads: int | None = None):
        try:
            import xllamacpp
        except ImportError:
            raise ImportError(f"checking a GGUF export in llama.cpp needs llama.cpp: {INSTALL_GGUF}") from None
        import torch

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no GGUF file at {self.path}")
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.verbosity = -1  # its progress lines would bury ftkit's
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads or torch.get_num_threads()
        params.warmup = False
        self._server = xllamacpp.Server(params)
        self.url = self._server.listening_address.rstrip("/")

    # -- answers --------------------------------------------------------------------------------

    def chat(self, messages: list[dict], max_new_tokens: int) -> str:
        """llama.cpp's greedy answer to ``messages``, through the file's own chat template, with the
        surrounding whitespace stripped as ftkit's generation strips it."""
        result = self._server.handle_chat_completions(
            {"messages": messages, "max_tokens": max_new_tokens, **_GREEDY})
        _raise_on_error(result)
        return (result["choices"][0]["message"]["content"] or "").strip()

    def complete_ids(self, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]:
        """llama.cpp's greedy continuation of the prompt given as token ``ids`` (no template, no
        tokenizer on the prompt side): the new token ids (the one that ended generation not
        included) and why it stopped (``"eos"``: an end-of-generation token; ``"limit"``)."""
        result = self._post("/completion", {"prompt": [int(i) for i in ids], "n_predict": max_new_tokens,
                                            "return_tokens": True, **_GREEDY})
        return list(result.get("tokens") or []), str(result.get("stop_type", ""))

    # -- what a diagnosis compares ---------------------------------------------------------------

    def render(self, messages: list[dict]) -> str:
        """The prompt text llama.cpp builds for ``messages`` with the file's chat template (the
        assistant's opening added, as for an answer)."""
        return self._post("/apply-template", {"messages": messages})["prompt"]

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's token ids for ``text``, special tokens written in it parsed as such, nothing added."""
        return self._post("/tokenize", {"content": text, "add_special": False, "parse_special": True})["tokens"]

    def piece(self, token: int) -> str:
        """The text of one token, as llama.cpp detokenizes it."""
        return self._post("/detokenize", {"tokens": [int(token)]})["content"]

    def metadata(self) -> dict:
        """llama.cpp's view of the model: ``/props`` (chat template, eos and bos tokens as text)."""
        with _LOCAL.open(self.url + "/props", timeout=60) as response:
            return json.loads(response.read())

    def _post(self, route: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + route, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with _LOCAL.open(request, timeout=120) as response:
            return json.loads(response.read())

    # -- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        server, self._server = getattr(self, "_server", None), None
        del server  # the server's destructor stops its threads and frees the model

    def __enter__(self) -> LlamaCpp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Greedy, as ftkit generates: llama.cpp's defaults would sample (temperature 0.8, top-k 40).
_GREEDY = {"temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "seed": 0,
           "cache_prompt": False}


def _raise_on_error(result: dict) -> None:
    if isinstance(result, dict) and "error" in result:
        error = result["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise RuntimeError(f"llama.cpp refused the request: {message}")


# The server listens on 127.0.0.1: no proxy from the environment may take its requests.
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))
