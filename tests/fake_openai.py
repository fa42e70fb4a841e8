"""A fake OpenAI-compatible chat API, standard library only, for tests and offline demos.

    with serve() as base_url:  # "http://127.0.0.1:PORT/v1"
        client = openai.AsyncOpenAI(base_url=base_url, api_key="test")

It answers POST /v1/chat/completions, plain (one JSON completion) or with
``stream=True`` (Server-Sent Events: one ``chat.completion.chunk`` per word,
then ``data: [DONE]``), in the format the openai SDK parses. The reply is
deterministic: see :func:`reply_for`. Parallel calls overlap as they would
against a real endpoint.

The server itself is `ChatAPI` of examples/_local_services.py, which the
showcase uses too (with delays and a quota); this module loads it from there.

Run it on its own with: python tests/fake_openai.py  (prints the base URL; Ctrl-C stops it)
"""

import contextlib
import importlib.util
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

_PATH = Path(__file__).resolve().parent.parent / "examples" / "_local_services.py"


def _load_services():
    module = sys.modules.get("_local_services")
    if module is None:
        spec = importlib.util.spec_from_file_location("_local_services", _PATH)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["_local_services"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return module


local_services = _load_services()  # examples/_local_services.py, as a module
ChatAPI = local_services.ChatAPI
REPLY = local_services.REPLY
TAG_LENGTH = local_services.TAG_LENGTH
reply_for = local_services.reply_for
words_of = local_services.words_of


@contextlib.contextmanager
def serve(word_delay: float = 0.01) -> Iterator[str]:
    """Run the fake API on a free port of 127.0.0.1; yield its base URL.

    ``word_delay`` is the pause in seconds after each streamed chunk. On exit
    the server stops, drops the connections still open and closes its socket.
    """
    with ChatAPI(word_delay=word_delay) as api:
        yield api.url


if __name__ == "__main__":
    with serve() as base_url:
        print(f"fake OpenAI API at {base_url}  (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
