"""A fake OpenAI-compatible server for the tests (stdlib ``http.server`` in a thread): the endpoint's
tests in tests/generation/test_endpoint.py and the panels' in tests/widgets/ use it. The API key is a
unique fake string, looked for in every exception, log line, printed line and written file."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "sk-ftkit-test-7f3a9c1e-unique-key-not-real"
KEY_ENV = "FTKIT_TEST_ENDPOINT_KEY"


class FakeOpenAI:
    """An OpenAI-compatible server on 127.0.0.1 that records what it was sent.

    ``script(n, body) -> (status, payload, headers, delay_s)`` decides each chat request's answer
    (n counts them from 0); the default answers "echo: <last user message>" with usage counted in
    words. ``models`` is what ``GET /v1/models`` lists; ``prefix`` is where the API lives.
    """

    def __init__(self, script=None, models=("fake-model",), prefix="/v1", key=KEY):
        self.script, self.models, self.prefix, self.key = script, list(models), prefix, key
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == f"{fake.prefix}/models":
                    return self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in fake.models]})
                return self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if self.path != f"{fake.prefix}/chat/completions":
                    return self._send(404, {"detail": "Not Found"})
                with fake._lock:
                    n = len(fake.requests)
                    fake.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.key and self.headers.get("Authorization") != f"Bearer {fake.key}":
                        # Like some servers, quote the key that was refused.
                        return self._send(401, {"error": {"message": f"Incorrect API key provided: "
                                                          f"{self.headers.get('Authorization')}",
                                                          "type": "invalid_request_error", "code": "invalid_api_key"}})
                    if body.get("model") not in fake.models:
                        return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not "
                                                          "exist", "code": "model_not_found"}})
                    status, payload, headers, delay = (fake.script or echo)(n, body)
                    time.sleep(delay)
                    try:
                        self._send(status, payload, headers)
                    except (BrokenPipeError, ConnectionResetError):  # the client gave up (a time-out)
                        pass
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def echo(n, body, delay=0.0):
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    text = f"echo: {user}"
    prompt = sum(len(m["content"].split()) for m in body["messages"])
    return 200, completion(text, prompt, len(text.split())), {}, delay


def completion(text, prompt_tokens, completion_tokens, finish="stop"):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}
