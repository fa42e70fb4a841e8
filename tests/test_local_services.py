"""examples/_locallocal_services.py: the website and the chat API the showcase runs against
behave as the real services do, to the real clients (httpx, the openai SDK)."""

import asyncio

import httpx
import openai
import pytest

from fake_openai import local_services

ChatAPI, Page, Website = local_services.ChatAPI, local_services.Page, local_services.Website
MESSAGES = [{"role": "user", "content": "Say hello"}]


async def wait_until(condition) -> None:
    """Yield to the loop until ``condition()`` holds (the service runs in its own thread)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    pytest.fail("the condition never held")


async def test_the_website_serves_its_pages_and_counts_the_paths_asked_for():
    pages = {"/": Page("Index", "All of it.", ("/a.html",)), "/a.html": Page("A", "One.\n\nTwo.")}
    with Website(pages) as site:
        async with httpx.AsyncClient(base_url=site.url, trust_env=False) as client:
            index = await client.get("/")
            page = await client.get("/a.html")
            missing = await client.get("/b.html")
        assert index.status_code == 200
        assert '<a href="/a.html">' in index.text
        assert "<h1>A</h1><p>One.</p><p>Two.</p>" in page.text
        assert missing.status_code == 404
        assert (site.requests, site.visited) == (3, {"/", "/a.html", "/b.html"})
        assert site.wait_for_visits(3, timeout=0)


async def test_above_its_quota_the_chat_api_answers_429_with_retry_after():
    # The first call takes long; the second arrives while it is answered: over the quota.
    api = ChatAPI(max_in_flight=1, delay=lambda messages: 30.0 if messages[0]["content"] else 0)
    with api:
        async with openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0) as client:
            slow = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
            await wait_until(lambda: api.in_flight == 1)
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": ""}]
                )
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
    assert refused.value.status_code == 429
    assert refused.value.response.headers["retry-after"] == "1"
    assert "at most 1 requests in flight" in refused.value.message
    assert (api.calls, api.rejected, api.answered, api.peak_in_flight) == (2, 1, 0, 1)


async def test_held_calls_wait_unanswered_and_are_dropped_when_let_go():
    with ChatAPI() as api:
        api.hold_after(1)
        async with openai.AsyncOpenAI(base_url=api.url, api_key="k", max_retries=0) as client:
            first = await client.chat.completions.create(model="m", messages=MESSAGES)
            held = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
            await wait_until(lambda: api.held == 1)
            assert not held.done()
            api.let_go()
            with pytest.raises(openai.APIConnectionError):
                await held
    assert first.choices[0].message.content == local_services.reply_for(MESSAGES)
    assert (api.calls, api.answered, api.held, api.in_flight) == (2, 1, 1, 0)
