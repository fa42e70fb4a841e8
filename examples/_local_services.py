"""Local stand-ins for the services examples call: a website and an OpenAI-compatible chat API.

    with Website(pages) as site, ChatAPI(max_in_flight=16) as api:
        httpx.AsyncClient(base_url=site.url)             # GET / and the pages
        openai.AsyncOpenAI(base_url=api.url, api_key="local")

Each service is a small HTTP/1.1 server (keep-alive, chunked streaming) on a
free port of 127.0.0.1, run by an event loop in a thread of its own, so a
program talks to it over real sockets with its real clients. Both answer
after a delay, as a remote service does, and count what they see. Standard
library only.

`ChatAPI` answers POST /v1/chat/completions, plain (one JSON completion) or
with ``stream=True`` (Server-Sent Events: one ``chat.completion.chunk`` per
word, then ``data: [DONE]``), in the format the openai SDK parses. With
``max_in_flight=N`` it keeps a quota as the real API does: a call arriving
while N are being answered gets 429 with ``Retry-After``; with
``tokens_per_minute=N`` it keeps a token quota as providers do (a bucket of N
tokens, refilled continuously over ``quota_period`` seconds, default 60): a
call whose tokens, prompt and reply, are more than the bucket holds gets 429.
The tests use it
through tests/fake_openai.py; examples/showcase.py uses both services.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from itertools import count
from typing import Any, TypeVar

__all__ = [
    "REPLY",
    "ChatAPI",
    "HTTPService",
    "Page",
    "Request",
    "Response",
    "Website",
    "reply_for",
    "words_of",
]

T = TypeVar("T")

# -- HTTP on a thread of its own -------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: AsyncIterator[bytes] | None = None  # a streamed body, sent chunked


class HTTPService:
    """An HTTP/1.1 server on a free port of 127.0.0.1, in a thread with its own
    event loop. Subclasses write `answer`; ``None`` from it drops the connection
    without an answer. Use it as a context manager, or `start` and `close`."""

    name = "service"
    prefix = ""  # added to the base URL

    def __init__(self) -> None:
        self.url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def answer(self, request: Request) -> Response | None:
        raise NotImplementedError

    def __enter__(self) -> HTTPService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> str:
        """Start serving; return the base URL."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(ready, failure),), name=self.name, daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.url

    def close(self) -> None:
        """Stop serving: drop open connections, close the socket, end the thread."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
            self._loop = None

    def call(self, function: Callable[[], T]) -> T:
        """Call ``function`` on the service's loop, from another thread; return its result."""

        async def call() -> T:
            return function()

        if self._loop is None:
            raise RuntimeError(f"{self.name} is not running")
        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
        except BaseException as error:  # reported to start(), in the caller's thread
            failure.append(error)
            ready.set()
            return
        host, port = server.sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}{self.prefix}"
        ready.set()
        await self._stop.wait()
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while (request := await _read_request(reader)) is not None:
                response = await self.answer(request)
                if response is None:
                    break
                keep_alive = request.headers.get("connection", "").lower() != "close"
                keep_alive = keep_alive and response.chunks is None
                await _write_response(writer, response, keep_alive)
                if not keep_alive:
                    break
        except (
            ConnectionError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # the client went away, or sent something that is not HTTP
        except asyncio.CancelledError:
            pass  # the service is closing: this connection ends here
        finally:
            self._connections.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection; ``None`` once the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _version = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


async def _write_response(
    writer: asyncio.StreamWriter, response: Response, keep_alive: bool
) -> None:
    lines = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in response.headers.items()]
    if response.chunks is None:
        lines.append(f"Content-Length: {len(response.body)}")
    else:
        lines.append("Transfer-Encoding: chunked")
    if not keep_alive:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
    await writer.drain()
    if response.chunks is not None:
        async for chunk in response.chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")  # the end of the chunked body
        await writer.drain()


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


# -- a website ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    title: str
    text: str  # paragraphs, separated by blank lines
    links: tuple[str, ...] = ()
    delay: float = 0.0  # seconds the server takes to answer


class Website(HTTPService):
    """Serves ``pages`` (path -> `Page`) as HTML, each after its delay; any
    other path is a 404. Counts requests and the distinct paths asked for."""

    name = "website"

    def __init__(self, pages: Mapping[str, Page]) -> None:
        super().__init__()
        self.pages = dict(pages)
        self.requests = 0
        self.visited: set[str] = set()
        self._changed = threading.Condition()

    def reset_counts(self) -> None:
        with self._changed:
            self.requests = 0
            self.visited = set()

    def wait_for_visits(self, paths: int, timeout: float) -> bool:
        """Wait until ``paths`` distinct paths were asked for; False after ``timeout`` s."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.visited) >= paths, timeout)

    async def answer(self, request: Request) -> Response:
        with self._changed:
            self.requests += 1
            self.visited.add(request.path)
            self._changed.notify_all()
        page = self.pages.get(request.path)
        if request.method != "GET":
            return Response(405, b"GET only", {"Allow": "GET"})
        if page is None:
            return Response(404, b"<html><body><h1>Not found</h1></body></html>")
        await asyncio.sleep(page.delay)
        return Response(200, html_of(page).encode(), {"Content-Type": "text/html; charset=utf-8"})


def html_of(page: Page) -> str:
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in page.text.split("\n\n"))
    links = "".join(f'<li><a href="{link}">{link}</a></li>' for link in page.links)
    return (
        f"<!DOCTYPE html><html><head><title>{html.escape(page.title)}</title></head>"
        f"<body><h1>{html.escape(page.title)}</h1>{paragraphs}<ul>{links}</ul></body></html>"
    )


# -- an OpenAI-compatible chat API ---------------------------------------------------------

REPLY = "Fake reply, streamed word by word."
TAG_LENGTH = 40  # most characters of the prompt echoed back in the reply's tag

Messages = list[dict[str, Any]]
_completion_ids = count(1)


def reply_for(messages: Messages) -> str:
    """The default reply: the last user message's first line as a tag, then REPLY.

    For example "Translate into French:\\n\\n..." gets
    "[Translate into French:] Fake reply, streamed word by word."
    """
    first_line = last_user_text(messages).strip().split("\n", 1)[0].strip()
    return f"[{first_line[:TAG_LENGTH]}] {REPLY}"


def last_user_text(messages: Messages) -> str:
    texts = [m.get("content") for m in messages if m.get("role") == "user"]
    return texts[-1] if texts and isinstance(texts[-1], str) else ""


def words_of(text: str) -> list[str]:
    """The pieces a reply streams in: each word with the spaces after it."""
    return re.findall(r"\S+\s*", text)


class ChatAPI(HTTPService):
    """POST /v1/chat/completions, answered by ``reply(messages)`` after
    ``delay(messages)`` seconds (or a fixed ``delay``); a stream pauses
    ``word_delay`` s after each chunk. With ``max_in_flight``, a call that
    arrives while that many are being answered gets 429 and ``Retry-After``.
    With ``tokens_per_minute``, a call whose tokens (prompt plus reply, in
    words) are more than its token bucket holds gets 429; ``admitted`` lists
    (time, tokens) of each call let through, for plotting.

    Counts: ``calls`` (well-formed calls), ``answered``, ``rejected`` (429),
    ``in_flight`` and ``peak_in_flight``. `hold_after` makes it answer a
    number of calls more and then hold the others, unanswered, until `let_go`.
    """

    name = "chat-api"
    prefix = "/v1"

    def __init__(
        self,
        *,
        reply: Callable[[Messages], str] = reply_for,
        delay: float | Callable[[Messages], float] = 0.0,
        word_delay: float = 0.0,
        max_in_flight: int | None = None,
        tokens_per_minute: int | None = None,
        quota_period: float = 60.0,
    ) -> None:
        super().__init__()
        self.tokens_per_minute = tokens_per_minute
        self.quota_period = quota_period
        self.reply = reply
        self.delay = delay
        self.word_delay = word_delay
        self.max_in_flight = max_in_flight
        self._held: asyncio.Event | None = None
        self._hold_at: int | None = None
        self.reset_counts()

    def reset_counts(self) -> None:
        self.calls = self.answered = self.rejected = self.held = 0
        self.in_flight = self.peak_in_flight = 0
        self.admitted: list[tuple[float, int]] = []
        self._bucket = float(self.tokens_per_minute or 0)  # a full token bucket
        self._filled_at = time.monotonic()

    def hold_after(self, calls: int) -> None:
        """Answer ``calls`` more calls, then hold every later one until `let_go`."""

        def hold() -> None:
            self._hold_at = self.answered + self.in_flight + calls

        self.call(hold)

    def let_go(self) -> None:
        """Stop holding: the calls held are dropped unanswered (their caller is gone)."""

        def let_go() -> None:
            self._hold_at = None
            if self._held is not None:
                self._held.set()
                self._held = None

        self.call(let_go)

    async def answer(self, request: Request) -> Response | None:
        if request.method != "POST" or request.path.rstrip("/") != "/v1/chat/completions":
            return json_response(404, _error(f"no route for {request.method} {request.path}"))
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return json_response(401, _error("missing API key", "invalid_api_key"))
        try:
            call = json.loads(request.body)
            messages, model = call["messages"], call["model"]
        except (ValueError, KeyError, TypeError) as error:
            return json_response(400, _error(f"bad request: {error!r}"))
        self.calls += 1
        if self._hold_at is not None and self.answered + self.in_flight >= self._hold_at:
            await self._hold()
            return None  # no answer: the connection is dropped
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight:
            self.rejected += 1
            message = f"Rate limit reached: at most {self.max_in_flight} requests in flight."
            headers = {"Retry-After": "1", "retry-after-ms": "100"}
            return json_response(429, _error(message, "rate_limit_exceeded", "requests"), headers)
        reply = self.reply(messages)
        if self.tokens_per_minute is not None:
            tokens = _usage(messages, reply)["total_tokens"]
            if not self._take_tokens(tokens):
                self.rejected += 1
                message = f"Rate limit reached: {self.tokens_per_minute} tokens per minute."
                headers = {"Retry-After": "1", "retry-after-ms": "100"}
                return json_response(429, _error(message, "rate_limit_exceeded", "tokens"), headers)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            delay = self.delay(messages) if callable(self.delay) else self.delay
            await asyncio.sleep(delay)
        except BaseException:
            self.in_flight -= 1
            raise
        if call.get("stream"):
            usage = (call.get("stream_options") or {}).get("include_usage")
            return Response(200, headers=_SSE, chunks=self._stream(model, messages, reply, usage))
        # The slot is free before the answer leaves: whoever reads it may call again.
        self.in_flight -= 1
        self.answered += 1
        return json_response(200, _completion(model, messages, reply))

    def _take_tokens(self, tokens: int) -> bool:
        """Take ``tokens`` from the bucket if it holds them (it refills at
        tokens_per_minute per quota_period, up to tokens_per_minute)."""
        quota = float(self.tokens_per_minute or 0)
        now = time.monotonic()
        self._bucket = min(
            quota, self._bucket + (now - self._filled_at) * quota / self.quota_period
        )
        self._filled_at = now
        if tokens > self._bucket:
            return False
        self._bucket -= tokens
        self.admitted.append((now, tokens))
        return True

    async def _hold(self) -> None:
        self.held += 1
        if self._held is None:
            self._held = asyncio.Event()
        await self._held.wait()

    async def _stream(
        self, model: str, messages: Messages, reply: str, include_usage: bool
    ) -> AsyncIterator[bytes]:
        try:
            for event in _chunks(model, messages, reply, include_usage):
                yield f"data: {json.dumps(event)}\n\n".encode()
                await asyncio.sleep(self.word_delay)  # a model produces tokens over time
            yield b"data: [DONE]\n\n"
        finally:
            self.in_flight -= 1
        self.answered += 1


_SSE = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def _error(message: str, code: str = "invalid_request_error", kind: str = "") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind or "invalid_request_error", "code": code}}


def _usage(messages: Messages, reply: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion = len(words_of(reply))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(model: str, messages: Messages, reply: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": reply, "refusal": None}
    return {
        "id": f"chatcmpl-local-{next(_completion_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(messages, reply),
    }


def _chunks(
    model: str, messages: Messages, reply: str, include_usage: bool
) -> list[dict[str, Any]]:
    """A streamed reply: the role, one chunk per word, the finish (and the usage, if asked)."""
    completion_id, created = f"chatcmpl-local-{next(_completion_ids)}", int(time.time())

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
    if include_usage:  # stream_options={"include_usage": True}: one more chunk
        events.append({**chunk({}, None), "choices": [], "usage": _usage(messages, reply)})
    return events
