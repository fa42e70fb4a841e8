"""A fake OpenAI-compatible chat API, standard library only, for tests and offline demos.

    with serve() as base_url:  # "http://127.0.0.1:PORT/v1"
        client = openai.AsyncOpenAI(base_url=base_url, api_key="test")

It answers POST /v1/chat/completions, plain (one JSON completion) or with
``stream=True`` (Server-Sent Events: one ``chat.completion.chunk`` per word,
then ``data: [DONE]``), in the format the openai SDK parses. The reply is
deterministic: see :func:`reply_for`. Each request gets its own thread, so
parallel calls overlap as they would against a real endpoint.

Run it on its own with: python tests/fake_openai.py  (prints the base URL; Ctrl-C stops it)
"""

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

REPLY = "Fake reply, streamed word by word."
TAG_LENGTH = 40  # most characters of the prompt echoed back in the reply's tag

_completion_ids = count(1)


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The reply to a conversation: the last user message's first line as a tag, then REPLY.

    For example "Translate into French:\\n\\n..." gets
    "[Translate into French:] Fake reply, streamed word by word."
    """
    user_texts = [m.get("content") for m in messages if m.get("role") == "user"]
    last = user_texts[-1] if user_texts and isinstance(user_texts[-1], str) else ""
    first_line = last.strip().split("\n", 1)[0].strip()
    return f"[{first_line[:TAG_LENGTH]}] {REPLY}"


def words_of(text: str) -> list[str]:
    """The pieces a reply streams in: each word with the spaces after it."""
    return re.findall(r"\S+\s*", text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked streaming, as the real API answers
    timeout = 10  # seconds a connection may sit idle before its thread gives up
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        # One request per connection: no idle keep-alive thread outlives the server.
        self.close_connection = True
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, _error(f"no route for POST {self.path}", "not_found"))
            return
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            self._send_json(401, _error("missing API key", "invalid_api_key"))
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length))
            messages = request["messages"]
            model = request["model"]
        except (ValueError, KeyError, TypeError) as error:
            self._send_json(400, _error(f"bad request: {error!r}", "invalid_request_error"))
            return
        reply = reply_for(messages)
        completion_id = f"chatcmpl-fake-{next(_completion_ids)}"
        created = int(time.time())
        usage = {
            "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in messages),
            "completion_tokens": len(words_of(reply)),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if request.get("stream"):
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            self._stream(completion_id, created, model, reply, usage if include_usage else None)
        else:
            message = {"role": "assistant", "content": reply, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            completion = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [choice],
                "usage": usage,
            }
            self._send_json(200, completion)

    def _stream(
        self, completion_id: str, created: int, model: str, reply: str, usage: dict | None
    ) -> None:
        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [choice],
            }

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": word}, None) for word in words_of(reply)]
        events.append(chunk({}, "stop"))
        if usage is not None:  # stream_options={"include_usage": True}: one more chunk
            events.append({**chunk({}, None), "choices": [], "usage": usage})

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for event in events:
                self._write_chunk(f"data: {json.dumps(event)}\n\n")
                time.sleep(self.server.word_delay)  # a model produces tokens over time
            self._write_chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")  # the end of the chunked body
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading (cancelled): nothing left to do

    def _write_chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


class _Server(ThreadingHTTPServer):
    word_delay = 0.0


@contextlib.contextmanager
def serve(word_delay: float = 0.01) -> Iterator[str]:
    """Run the fake API on a free port of 127.0.0.1; yield its base URL.

    ``word_delay`` is the pause in seconds after each streamed chunk. On exit
    the server stops, waits for the requests it is answering and closes its socket.
    """
    server = _Server(("127.0.0.1", 0), _Handler)
    server.word_delay = word_delay
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}/v1"
    finally:
        server.shutdown()  # stops serve_forever and waits for it
        thread.join()
        server.server_close()  # closes the socket and joins the request threads


if __name__ == "__main__":
    with serve() as base_url:
        print(f"fake OpenAI API at {base_url}  (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
