"""A hosted model as a generation backend: any OpenAI-compatible chat endpoint.

OpenAI's GPT models, vLLM, Ollama, llama.cpp's server, ``transformers serve`` and ``ftkit serve``
all answer ``POST {base_url}/chat/completions``. An :class:`Endpoint` asks one through the official
``openai`` client and returns the same :class:`~ftkit.generation.backend.Generation` objects a local model
does (text, prompt and answer tokens from the server's ``usage``, latency): it is a
:class:`~ftkit.generation.backend.Backend`, as a local model is. Greedy unless asked otherwise, it
is one more variant for :func:`ftkit.evaluation.evaluate.evaluate`, PromptLab and
``ftkit run``:

>>> gpt = Endpoint(model="gpt-4o-mini", price_per_million_input=0.15, price_per_million_output=0.60)
>>> gpt.api_key_env  # the key stays in the environment: only the variable's name is kept
'OPENAI_API_KEY'
>>> gpt.cost_usd(prompt_tokens=1000, new_tokens=100)  # USD for one request
0.00021
>>> outs = gpt.generate([[{"role": "user", "content": "Hi"}]])        # doctest: +SKIP
>>> evaluate([Variant(gpt, None, zero_shot(), name="gpt-4o-mini")], test)  # doctest: +SKIP

The API key is read from the environment variable ``api_key_env`` when requests are sent, and is
never stored on the object, written to a run record, report or log, or shown in an error (a
server's own error text is scrubbed of it). Errors a user meets (no key, wrong URL, unknown model,
rate limits, time-outs) are :class:`EndpointError` with what to do. (The module is over 400 lines
because those errors are most of it: each is worded from the server's answer, next to the request
that got it.)
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from urllib.parse import urlparse

from ftkit.generation.backend import Generation

__all__ = ["Endpoint", "EndpointError", "OPENAI_URL"]

OPENAI_URL = "https://api.openai.com/v1"
# Sent to a server that checks no key (a local one): the client needs some string, and it must
# never be the OPENAI_API_KEY the openai client would otherwise pick up from the environment.
NO_KEY = "no-key"
# OpenAI accepts at most this many stop sequences; the rest are cut from the text here.
MAX_STOP = 4
# Guards what endpoints learn while their requests run in threads. One for all: an instance
# holding a lock could not be copied or pickled (configs are deep-copied).
_LOCK = threading.Lock()


class EndpointError(RuntimeError):
    """A request to an endpoint failed; the message says what to do. It never holds the key."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Endpoint:
    """An OpenAI-compatible chat endpoint, asked like a local model.

    ``generate`` sends up to ``max_concurrency`` requests at once. The openai client retries
    rate limits (429), server errors (5xx), time-outs and dropped connections ``max_retries``
    times, waiting as the server's ``Retry-After`` says or 0.5 s, 1 s, 2 s, ... (at most 8 s).
    With prices per million tokens, :meth:`cost_usd` (and the evaluation summary's
    ``usd_per_request``) puts money beside the token counts.
    """

    base_url: str = field(default=OPENAI_URL, metadata={
        "help": "The server's OpenAI-compatible base URL, usually ending in /v1: https://api.openai.com/v1, "
                "http://localhost:11434/v1 (Ollama), http://localhost:8000/v1 (vLLM, ftkit serve)"})
    model: str = field(default="", metadata={
        "help": "The model name the server knows, e.g. gpt-4o-mini, llama3.2 (Ollama), or the name "
                "`ftkit serve` prints"})
    api_key_env: str | None = field(default="OPENAI_API_KEY", metadata={
        "help": "Environment variable holding the API key (the key itself is never written anywhere); "
                "null: the server needs no key. A local server gets no key when the variable is unset"})
    # Providers limit requests and tokens per minute; 4 in flight stays under a new account's limits.
    max_concurrency: int = field(default=4, metadata={"help": "Requests in flight at once"})
    timeout_s: float = field(default=60.0, metadata={
        "help": "Seconds one request may take before it is retried (a CPU server is slow on long answers)"})
    max_retries: int = field(default=4, metadata={
        "help": "Retries of a rate-limited (429), failed (5xx), timed-out or dropped request, with backoff"})
    price_per_million_input: float | None = field(default=None, metadata={
        "help": "USD per million prompt tokens, for the cost columns; null: tokens only"})
    price_per_million_output: float | None = field(default=None, metadata={
        "help": "USD per million generated tokens, for the cost columns; null: tokens only"})

    # The Backend protocol's constants (class attributes, not fields): answered by a server, which
    # counts the tokens and may charge for them, so a fair timing warms it up on one row only.
    hosted = True
    warmup_rows = 1

    def __post_init__(self):
        # Not dataclass fields: asdict() (run records, configs, reports) never sees them.
        self._adapted: dict = {}  # request parameters this server refused, and what replaced them
        self._warned: set[str] = set()

    @classmethod
    def from_env(cls, prefix: str = "FTKIT_ENDPOINT", **settings) -> Endpoint | None:
        """The endpoint the environment describes, or None when it names none.

        ``{prefix}_URL`` (default: OpenAI's), ``{prefix}_MODEL``, ``{prefix}_KEY_ENV`` (the name
        of the variable that holds the key; default ``OPENAI_API_KEY``), ``{prefix}_PRICE_IN`` and
        ``{prefix}_PRICE_OUT`` (USD per million tokens). ``settings`` fill in what is not set.

        >>> Endpoint.from_env(prefix="NO_SUCH_PREFIX") is None
        True
        """
        env = {k: os.environ.get(f"{prefix}_{k}", "").strip()
               for k in ("URL", "MODEL", "KEY_ENV", "PRICE_IN", "PRICE_OUT")}
        if not env["URL"] and not env["MODEL"]:
            return None
        if not env["MODEL"]:
            raise ValueError(f"{prefix}_URL is set but {prefix}_MODEL is not: set it to the model name the server "
                             "knows (e.g. gpt-4o-mini, llama3.2)")
        values = dict(settings, model=env["MODEL"])
        if env["URL"]:
            values["base_url"] = env["URL"]
        if env["KEY_ENV"]:
            values["api_key_env"] = None if env["KEY_ENV"].lower() in ("none", "null") else env["KEY_ENV"]
        for name, key in (("price_per_million_input", "PRICE_IN"), ("price_per_million_output", "PRICE_OUT")):
            if env[key]:
                try:
                    values[name] = float(env[key])
                except ValueError:
                    raise ValueError(f"{prefix}_{key}={env[key]!r} is not a number (USD per million tokens)") from None
        return cls(**values)

    # --- settings ---------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What makes these settings unusable, each with what to do (empty: none).

        >>> Endpoint(base_url="localhost:8000").problems()[0]
        "base_url 'localhost:8000' is not an http(s) URL; write it like http://localhost:8000/v1"
        """
        out = []
        url = urlparse(self.base_url or "")
        if url.scheme not in ("http", "https") or not url.hostname:
            out.append(f"base_url {self.base_url!r} is not an http(s) URL; write it like http://localhost:8000/v1")
        if not (self.model or "").strip():
            out.append("model is empty; name the model the server knows, e.g. gpt-4o-mini, or the name "
                       "`ftkit serve` printed")
        if self.max_concurrency < 1:
            out.append(f"max_concurrency must be at least 1, got {self.max_concurrency}")
        if self.max_retries < 0:
            out.append(f"max_retries must be 0 or more, got {self.max_retries}")
        if self.timeout_s <= 0:
            out.append(f"timeout_s must be positive, got {self.timeout_s}")
        for name in ("price_per_million_input", "price_per_million_output"):
            if (getattr(self, name) or 0) < 0:
                out.append(f"{name} cannot be negative")
        return out

    @property
    def local(self) -> bool:
        """True for a server on this machine (localhost), which usually checks no key."""
        host = (urlparse(self.base_url or "").hostname or "").lower()
        return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.endswith(".localhost")

    @property
    def priced(self) -> bool:
        """True when a price is set, so the cost table can show money."""
        return self.price_per_million_input is not None or self.price_per_million_output is not None

    def cost_usd(self, prompt_tokens: int, new_tokens: int) -> float | None:
        """What a request with these token counts costs at the given prices (None: no prices).

        >>> Endpoint(model="m", price_per_million_input=0.15, price_per_million_output=0.6).cost_usd(1000, 100)
        0.00021
        """
        if not self.priced:
            return None
        return round((prompt_tokens * (self.price_per_million_input or 0.0)
                      + new_tokens * (self.price_per_million_output or 0.0)) / 1e6, 12)

    def check_key(self) -> None:
        """Raise :class:`EndpointError` now if the key the server will need is not set: a run
        fails before a model loads, not after the training."""
        self._key()

    def _key(self) -> str:
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            return key
        if self.local:
            return NO_KEY
        raise EndpointError(
            f"no API key for {self.base_url}: the environment variable {self.api_key_env} is not set. Set it "
            f"where Python starts (export {self.api_key_env}=... before `jupyter lab` or `ftkit run`), or in a "
            f"notebook without writing it down: os.environ[{self.api_key_env!r}] = getpass.getpass(). "
            "For a server that needs no key, pass api_key_env=None")

    def _client(self):
        try:
            import openai
        except ImportError:
            raise ImportError("a hosted endpoint is asked through the openai client, which is not installed: "
                              "pip install 'ftkit[serve]'") from None
        problems = self.problems()
        if problems:
            raise ValueError("endpoint settings: " + "; ".join(problems))
        return openai.OpenAI(base_url=self.base_url, api_key=self._key(), timeout=self.timeout_s,
                             max_retries=self.max_retries)

    # --- generation (the Backend protocol) ----------------------------------------------------

    @property
    def name(self) -> str:
        """The model name the server knows."""
        return self.model

    def prompt_tokens(self, conversations: list[list[dict]]) -> None:
        """None: only the server counts a hosted model's tokens (in each answer's ``usage``)."""
        return None

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 32,
                 stop_strings: list[str] | None = None, batch_size: int | None = None, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, seed: int | None = None,
                 adapter=None, progress: bool = True, **_local_only) -> list[Generation]:
        """One answer per conversation, in order, as :func:`ftkit.generation.generate.generate` returns them.

        Greedy (``temperature=0``) unless ``do_sample``. ``batch_size`` caps the requests in flight
        below ``max_concurrency`` (1: one at a time). ``latency_s`` is what a request costs when
        served this way: its own wall time one at a time, else the whole run's wall time divided
        by the number of requests (throughput, as a local batch reports it). Keyword arguments
        that only mean something to a local model (``prefix_cache``) are ignored; an ``adapter``
        other than None is refused (a server has no adapters to switch).
        """
        if adapter is not None:
            raise ValueError(f"adapter={adapter!r} was asked for, but {self.model} is a hosted endpoint: it has "
                             "no adapters to switch; leave adapter=None")
        if not conversations:
            return []
        from tqdm.auto import tqdm

        client = self._client()
        sampling = dict(temperature=temperature, top_p=top_p, seed=seed) if do_sample else dict(temperature=0)
        stops = [s for s in (stop_strings or ()) if s]
        workers = max(1, min(self.max_concurrency, batch_size or self.max_concurrency, len(conversations)))
        results: list[Generation | None] = [None] * len(conversations)
        bar = tqdm(total=len(conversations), desc=f"asking {self.model}", unit="req", disable=not progress)
        t0 = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ftkit-endpoint")
        try:
            futures = {pool.submit(self._ask, client, m, max_new_tokens, stops, sampling): i
                       for i, m in enumerate(conversations)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after an error, send nothing more
            bar.close()
        if workers > 1:
            share = (time.perf_counter() - t0) / len(conversations)
            for g in results:
                g.latency_s = share
        return results

    def _params(self, max_new_tokens: int, stops: list[str], sampling: dict) -> dict:
        with _LOCK:
            adapted = dict(self._adapted)
        # OpenAI's own API deprecated max_tokens (its reasoning models refuse it); most other
        # servers (Ollama, llama.cpp, older vLLM) know only max_tokens.
        limit = adapted.get("limit") or ("max_completion_tokens" if "api.openai.com" in self.base_url else "max_tokens")
        params = {limit: max_new_tokens, **sampling}
        if stops:
            params["stop"] = stops[:MAX_STOP]
        for name in adapted.get("drop", ()):
            params.pop(name, None)
        return {k: v for k, v in params.items() if v is not None}

    def _ask(self, client, messages: list[dict], max_new_tokens: int, stops: list[str], sampling: dict) -> Generation:
        import openai

        for _attempt in range(3):  # at most two parameters the server refuses, then the answer
            params = self._params(max_new_tokens, stops, sampling)
            t0 = time.perf_counter()
            try:
                response = client.chat.completions.create(model=self.model, messages=messages, **params)
                break
            except openai.BadRequestError as err:
                if not self._adapt(err, params):
                    raise self._explain(err, client) from None
            except openai.OpenAIError as err:
                raise self._explain(err, client) from None
        else:
            raise EndpointError(f"{self.base_url} kept refusing the request's parameters: {sorted(params)}")
        latency = time.perf_counter() - t0
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content if choice is not None and choice.message is not None else None) or ""
        for s in stops:  # a server may keep the stop string, or accept only the first four
            text = text.split(s, 1)[0]
        usage = response.usage
        if usage is None:
            self._warn_once("usage", f"{self.base_url} sent no token counts (usage); token and cost figures "
                                     f"for {self.model} read 0")
        if not text.strip() and choice is not None and choice.finish_reason == "length":
            self._warn_once("length", f"{self.model} used all {max_new_tokens} tokens without an answer (a "
                                      "reasoning model thinks first, in tokens you pay for); raise max_new_tokens")
        return Generation(text=text.strip(), prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                          new_tokens=int(getattr(usage, "completion_tokens", 0) or 0), latency_s=latency)

    def _adapt(self, err, params: dict) -> bool:
        """Change a parameter the server refused, once, and say so: True to ask again."""
        said = _server_message(err).lower()
        with _LOCK:
            if "max_tokens" in params and "max_completion_tokens" in said:
                self._adapted["limit"] = "max_completion_tokens"
                return True
            if "max_completion_tokens" in params and "max_completion_tokens" in said and "max_tokens" not in said:
                self._adapted["limit"] = "max_tokens"
                return True
            if "temperature" in params and "temperature" in said and "temperature" not in self._adapted.get("drop", ()):
                self._adapted["drop"] = (*self._adapted.get("drop", ()), "temperature", "top_p")
                adapted = True
            else:
                adapted = False
        if adapted:
            self._warn_once("temperature", f"{self.model} refused temperature=0: its answers are sampled at its "
                                           "default temperature, so they may change from run to run")
        return adapted

    def _warn_once(self, key: str, message: str) -> None:
        with _LOCK:
            if key in self._warned:
                return
            self._warned.add(key)
        warnings.warn(message, stacklevel=4)

    # --- errors -----------------------------------------------------------------------------

    def _served_models(self, client) -> list[str] | None:
        """The model names ``GET {base_url}/models`` lists; None when that fails too."""
        try:
            listed = client.with_options(max_retries=0, timeout=min(10.0, self.timeout_s)).models.list()
            return [m.id for m in listed.data]
        except Exception:  # noqa: BLE001 - only a hint for the message being built
            return None

    def _explain(self, err, client) -> EndpointError:
        """The openai client's exception as what happened and what to do, without the key."""
        import openai

        where, status = self.base_url, getattr(err, "status_code", None)
        said = _scrub(_server_message(err), self._key_or_none())
        said_part = f": {said}" if said else ""
        retried = f" (after {self.max_retries} retries)" if self.max_retries else ""
        if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
            whose = f"the API key in ${self.api_key_env}" if self.api_key_env and os.environ.get(self.api_key_env) \
                else "the request without an API key"
            fix = (f"Check that {self.api_key_env} holds a current key for this server" if self.api_key_env
                   else "Set api_key_env to the environment variable that holds this server's key")
            return EndpointError(f"{where} refused {whose} ({status}{said_part}). {fix}; the key is read when "
                                 "requests are sent", status)
        if isinstance(err, (openai.NotFoundError, openai.BadRequestError, openai.UnprocessableEntityError)):
            served = self._served_models(client)
            if served is not None and self.model not in served:
                listed = ", ".join(served[:20]) + (", ..." if len(served) > 20 else "") if served else "nothing"
                return EndpointError(f"model {self.model!r} not found at {where} ({status}{said_part}); it serves: "
                                     f"{listed}. Set model= to one of them", status)
            if isinstance(err, openai.NotFoundError):
                if served is None and "model" not in said.lower():
                    return EndpointError(
                        f"nothing answers at {where.rstrip('/')}/chat/completions (404{said_part}): is base_url "
                        "right? An OpenAI-compatible base URL usually ends in /v1, e.g. http://localhost:8000/v1 "
                        "(ftkit serve, vLLM) or http://localhost:11434/v1 (Ollama)", status)
                return EndpointError(f"model {self.model!r} not found at {where} (404{said_part}); check the name "
                                     "(and that your key may use it)", status)
            return EndpointError(f"{where} rejected the request ({status}{said_part})", status)
        if isinstance(err, openai.RateLimitError):
            return EndpointError(
                f"{where} is rate-limiting these requests (429{said_part}){retried}. Lower max_concurrency (now "
                f"{self.max_concurrency}), raise max_retries, or check the account's rate limits and quota", status)
        if isinstance(err, openai.InternalServerError) or (status or 0) >= 500:
            return EndpointError(
                f"{where} failed with {status}{said_part}{retried}. The server may be overloaded or still "
                f"loading the model: try again later, or lower max_concurrency (now {self.max_concurrency})", status)
        if isinstance(err, openai.APITimeoutError):
            return EndpointError(
                f"no answer from {where} within timeout_s={self.timeout_s:g} s{retried}. Raise timeout_s, or "
                "lower max_new_tokens or max_concurrency (a server on a CPU is slow on long answers)")
        if isinstance(err, openai.APIConnectionError):
            return EndpointError(
                f"cannot connect to {where}{retried}: is the server running, and is the URL right? `ftkit serve "
                "MODEL` prints its URL; Ollama listens on http://localhost:11434/v1, vLLM on http://localhost:8000/v1")
        return EndpointError(f"{where}: {type(err).__name__}{said_part}", status)

    def _key_or_none(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


def _server_message(err) -> str:
    """The server's own words from an openai exception: the body's message, else the exception's."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            text = inner.get("message") or inner.get("detail") or body.get("detail")
        else:
            text = inner
        if text:
            return " ".join(str(text).split())[:300]
    return " ".join(str(getattr(err, "message", "") or "").split())[:300]


def _scrub(text: str, key: str | None) -> str:
    """``text`` without the key (some servers quote the key they refused)."""
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text
