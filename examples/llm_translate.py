"""Translate a document into four languages at once, streaming every token as it arrives.

It shows:

- an `AsyncParallelBatchNode` with one item per language: the four calls to the
  model run at the same time (`max_concurrency=4`), through one shared `Limiter`;
- `self.emit(...)` inside `exec_async`, sending each token of the model's
  streamed answer to whoever watches the run;
- `flow.stream(shared)` in the main program, printing each language's text a
  line at a time while all four stream in, then a summary: the wall time of the
  run against the time the same calls would take one after another.

It uses the official `openai` SDK (`AsyncOpenAI`) with any OpenAI-compatible
endpoint: OPENAI_API_KEY, OPENAI_BASE_URL (optional) and OPENAI_MODEL
(default gpt-4o-mini) choose it.

Run it with: OPENAI_API_KEY=sk-... python examples/llm_translate.py  (needs openai)
Offline, against the fake API the tests use: run `python tests/fake_openai.py`,
then OPENAI_API_KEY=test OPENAI_BASE_URL=<the URL it prints> python examples/llm_translate.py
"""

import asyncio
import os
import sys
import time
import unicodedata
from contextlib import aclosing
from dataclasses import dataclass

import openai

from braidflow import AsyncFlow, AsyncParallelBatchNode, Limiter

DOCUMENT = """\
The town library opens at nine, but the first readers are waiting on the steps by \
half past eight. Most of them come for the newspapers; a few come for the warmth, \
and one old man comes every day to read the same book of maps.

Last spring the library lent out more seeds than books. Gardeners borrow a packet \
of beans or tomatoes, grow them over the summer, and bring back a packet of their \
own seeds in the autumn, so the collection grows a little every year.

The librarian says the building is never really quiet. There is always a page \
turning, a child asking a question, or a printer that needs help. She would not \
have it any other way."""

LANGUAGES = ["French", "German", "Spanish", "Japanese"]
DEFAULT_MODEL = "gpt-4o-mini"
LINE_WIDTH = 72  # terminal columns for a line of streamed text, after the language prefix

HOW_TO_SET_KEY = """\
This example calls an OpenAI-compatible chat API, and OPENAI_API_KEY is not set.
Set it to your key and run the example again, e.g.
  OPENAI_API_KEY=sk-... python examples/llm_translate.py
For another endpoint than api.openai.com, set OPENAI_BASE_URL too (for example
http://localhost:11434/v1 for Ollama, whose key can be any text) and choose the
model with OPENAI_MODEL (default gpt-4o-mini)."""


@dataclass
class Translation:
    language: str
    text: str
    seconds: float  # how long the call took, from request to last token


class Translate(AsyncParallelBatchNode):
    """Translate shared["document"] into each of shared["languages"], one call per language."""

    def __init__(self, client: openai.AsyncOpenAI, model: str, **options) -> None:
        super().__init__(**options)
        self.client = client
        self.model = model

    async def prep_async(self, shared):
        return [(language, shared["document"]) for language in shared["languages"]]

    async def exec_async(self, item):
        language, document = item
        started = time.perf_counter()
        stream = await self.client.chat.completions.create(
            model=self.model,
            messages=[
                {
                    "role": "system",
                    "content": "You are a translator. Reply with the translation only, "
                    "keeping the paragraph breaks.",
                },
                {"role": "user", "content": f"Translate into {language}:\n\n{document}"},
            ],
            stream=True,
        )
        pieces = []
        async with stream:  # closes the HTTP response even if this call is cancelled
            async for chunk in stream:
                token = chunk.choices[0].delta.content if chunk.choices else None
                if token:
                    self.emit({"language": language, "token": token})
                    pieces.append(token)
        return Translation(language, "".join(pieces), time.perf_counter() - started)

    async def post_async(self, shared, prep_result, exec_result):
        shared["translations"] = {result.language: result.text for result in exec_result}
        shared["call_seconds"] = {result.language: result.seconds for result in exec_result}


def build_flow(client: openai.AsyncOpenAI, model: str) -> AsyncFlow:
    # One limiter for every call to the model: any other node given it shares the same
    # budget, so the endpoint never sees more than 4 calls at once or 60 starts a minute.
    llm = Limiter(max_concurrent=4, rate=60, per=60.0, name="llm")
    translate = Translate(
        client,
        model,
        name="translate",
        max_concurrency=4,
        limits=[llm],
        timeout=120,  # a stalled stream fails the run instead of hanging it
        # No retries (the default): a retried call would stream its tokens a second
        # time. The SDK already retries a failed connection before any token arrives.
    )
    return AsyncFlow(start=translate, name="translate_document")


def columns(char: str) -> int:
    """Terminal columns a character takes: two for wide (CJK) characters."""
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


class LinePrinter:
    """Prints the streams of several languages as whole lines, each prefixed by its
    language, so that text arriving in four streams at once stays readable."""

    def __init__(self, languages: list[str]) -> None:
        self.prefix_width = max(len(language) for language in languages)
        self.pending = dict.fromkeys(languages, "")  # text not printed yet
        self.tokens = dict.fromkeys(languages, 0)

    def add(self, language: str, token: str) -> None:
        self.tokens[language] += 1  # one streamed chunk: a token, on most endpoints
        *lines, rest = (self.pending[language] + token).split("\n")
        for line in lines:
            self._print(language, line)
        while (fits := self._fitting(rest)) < len(rest):
            cut = rest.rfind(" ", 0, fits + 1)
            cut = cut if cut > 0 else fits  # no space to break at (Japanese): cut anywhere
            self._print(language, rest[:cut])
            rest = rest[cut:].lstrip(" ")
        self.pending[language] = rest

    def finish(self, language: str) -> None:
        self._print(language, self.pending[language])
        self.pending[language] = ""
        print(f"{language:<{self.prefix_width}} = done, {self.tokens[language]} tokens", flush=True)

    def _fitting(self, text: str) -> int:
        """How many characters at the start of text fit in LINE_WIDTH columns."""
        used = 0
        for index, char in enumerate(text):
            used += columns(char)
            if used > LINE_WIDTH:
                return index
        return len(text)

    def _print(self, language: str, line: str) -> None:
        if line.strip():  # paragraph breaks would only add empty prefixed lines
            print(f"{language:<{self.prefix_width}} | {line.rstrip()}", flush=True)


async def main() -> int:
    if not os.environ.get("OPENAI_API_KEY"):
        print(HOW_TO_SET_KEY)
        return 0
    model = os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
    shared = {"document": DOCUMENT, "languages": LANGUAGES}
    printer = LinePrinter(LANGUAGES)

    # The client reads OPENAI_API_KEY and OPENAI_BASE_URL from the environment.
    async with openai.AsyncOpenAI() as client:
        paragraphs = len(DOCUMENT.split("\n\n"))
        print(f"Translating {paragraphs} paragraphs into {', '.join(LANGUAGES)}")
        print(f"with {model} at {client.base_url}\n", flush=True)
        flow = build_flow(client, model)
        started = time.perf_counter()
        try:
            async with aclosing(flow.stream(shared)) as events:
                async for event in events:
                    if event.kind == "emit":
                        printer.add(event.data["language"], event.data["token"])
                    elif event.kind == "item_end" and event.error is None:
                        printer.finish(shared["languages"][event.item])
        except openai.OpenAIError as error:
            print(f"\nThe run failed: {error}", file=sys.stderr)
            return 1
        wall_seconds = time.perf_counter() - started

    translated = list(shared["translations"])
    one_after_another = sum(shared["call_seconds"].values())
    print(f"\nTranslated into {len(translated)} languages: {', '.join(translated)}")
    print(f"  tokens streamed:        {sum(printer.tokens.values()):,}")
    print(f"  wall time:              {wall_seconds:.2f} s")
    print(f"  one call after another: {one_after_another:.2f} s (the sum of the calls' times)")
    print(f"  running the calls in parallel made it {one_after_another / wall_seconds:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
