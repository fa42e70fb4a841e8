"""examples/llm_translate.py works against an OpenAI-compatible API, here the fake one."""

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from fake_openai import REPLY, reply_for, serve, words_of

pytestmark = pytest.mark.slow  # the example in a process of its own

EXAMPLE = Path(__file__).parent.parent / "examples" / "llm_translate.py"
LANGUAGES = ["French", "German", "Spanish", "Japanese"]  # the example's languages


def run_example(**env_changes: str | None) -> subprocess.CompletedProcess[str]:
    """Run the example in its own process with the OPENAI_* variables changed (None: unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update({key: value for key, value in env_changes.items() if value is not None})
    env["PYTHONIOENCODING"] = "utf-8"
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=25,
        check=False,
    )


def test_example_translates_every_language_streaming_the_tokens():
    with serve() as base_url:
        completed = run_example(OPENAI_API_KEY="test", OPENAI_BASE_URL=base_url)
    assert completed.returncode == 0, completed.stderr
    output = completed.stdout
    total_tokens = 0
    for language in LANGUAGES:
        # The example prints the text only from the tokens it receives as emit events,
        # a line at a time, prefixed by the language: so this line is streamed tokens.
        translation = f"[Translate into {language}:] {REPLY}"
        tokens = len(words_of(translation))  # the fake streams one word per chunk
        total_tokens += tokens
        assert f"{language:<8} | {translation}\n" in output
        assert f"{language:<8} = done, {tokens} tokens\n" in output
    assert f"Translated into 4 languages: {', '.join(LANGUAGES)}" in output
    assert f"tokens streamed:        {total_tokens}\n" in output
    assert "one call after another:" in output


def test_example_without_a_key_says_how_to_set_it_and_exits_0():
    # A base URL where nothing listens: were the example to call out, it would fail.
    completed = run_example(OPENAI_BASE_URL="http://127.0.0.1:9/v1")
    assert completed.returncode == 0, completed.stderr
    assert "OPENAI_API_KEY is not set" in completed.stdout
    assert "OPENAI_API_KEY=sk-..." in completed.stdout
    assert "OPENAI_BASE_URL" in completed.stdout


async def test_fake_server_speaks_the_openai_format_to_the_sdk():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Translate into German:\n\nGood morning."},
    ]
    expected = reply_for(messages)
    assert expected == f"[Translate into German:] {REPLY}"
    with serve(word_delay=0) as base_url:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="test") as client:
            stream = await client.chat.completions.create(
                model="fake-model",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]

            completion = await client.chat.completions.create(model="fake-model", messages=messages)

    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.model == "fake-model" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert with_choices[0].choices[0].delta.role == "assistant"
    pieces = [chunk.choices[0].delta.content or "" for chunk in with_choices]
    assert "".join(pieces) == expected
    assert len([piece for piece in pieces if piece]) == len(words_of(expected))  # word by word
    assert [chunk.choices[0].finish_reason for chunk in with_choices][-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(words_of(expected))

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == "stop"
