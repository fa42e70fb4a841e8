"""Spend less on LLM calls: keep a token quota with a weighted limiter, stop at a budget.

Summarizes texts of very different lengths through the openai SDK against a
local OpenAI-compatible server (examples/_local_services.py) that enforces a
token quota with HTTP 429, as providers do. Four runs of the same batch:

1. limited by calls only (the provider's requests-per-minute): bursts of
   long texts go over the token quota and get 429s, retried with backoff;
2. limited by tokens too, ``tpm.weighted(estimate)``: each call takes its
   estimate (prompt plus ``max_tokens``), corrected to the usage it reports;
   no 429, and the run keeps close to the quota;
3. the same again, with the result cache the second run filled
   (``cache=Cache(...)``): every text is served from it, no call is made;
4. the same, with no cache, under ``budget=Budget(cost=...)``: it stops
   before the call that would go over, with what it spent.

    python examples/llm_spend.py [--items 500] [--svg docs/images/llm_tokens.svg]

The quota's "minute" is ``--period`` seconds (2 by default), so the example
takes seconds, not minutes. ``--svg`` draws tokens per period against the
quota over time, for both limited runs.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

import openai

from braidflow import (
    AsyncParallelBatchNode,
    Budget,
    BudgetExceeded,
    Cache,
    Limiter,
    MemoryStore,
    Retry,
)
from braidflow.llm import Prices, usage_from_openai

sys.path.insert(0, str(Path(__file__).parent))
from _local_services import ChatAPI

MODEL = "local-mini"
MAX_TOKENS = 16  # the replies are short: the estimate adds this to the prompt
PRICES = Prices({MODEL: (0.15, 0.60)})  # per million tokens in and out: yours, not built in
INSTRUCTION = "Summarize in one line:"


def texts(count: int, seed: int = 7) -> list[str]:
    """``count`` texts of 10 to 300 words, in a fixed random order."""
    rng = random.Random(seed)
    return [
        " ".join(f"w{index}x{word}" for word in range(rng.randint(10, 300)))
        for index in range(count)
    ]


def estimate(text: str) -> int:
    """Tokens a call on ``text`` may use at most: the prompt, and max_tokens."""
    return len(INSTRUCTION.split()) + len(text.split()) + MAX_TOKENS


class Summarize(AsyncParallelBatchNode):
    """One chat completion per text; its usage reported once, from exec."""

    def __init__(self, client: openai.AsyncOpenAI, **options: Any) -> None:
        super().__init__(**options)
        self.client = client

    async def prep_async(self, shared: dict[str, Any]) -> list[str]:
        return shared["texts"]

    async def exec_async(self, text: str) -> str:
        response = await self.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"{INSTRUCTION}\n\n{text}"}],
            max_tokens=MAX_TOKENS,
        )
        self.report_usage(usage_from_openai(response, prices=PRICES))
        return response.choices[0].message.content or ""

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["summaries"] = exec_res


def limits_for(how: str, quota: int, period: float, requests: int) -> list[Any]:
    """The node's limits: the provider's request quota, and its token quota if ``how`` says so."""
    rpm = Limiter(rate=requests, per=period, name="requests")
    if how == "calls":
        return [rpm]
    tpm = Limiter(rate=quota, per=period, name="tokens")
    return [rpm, tpm.weighted(estimate)]


def run_batch(
    api: ChatAPI,
    items: list[str],
    limits: list[Any],
    budget: Budget | None = None,
    cache: Cache | None = None,
) -> dict[str, Any]:
    """Run the batch once; return what it took: seconds, 429s, usage, the server's log."""
    api.reset_counts()
    client = openai.AsyncOpenAI(base_url=api.url, api_key="local", max_retries=0)
    # A 429 is retried with backoff, as a careful client does: the run still
    # ends, later; the server counts the 429s.
    retry = Retry(
        attempts=30, delay=0.05, max_delay=1.0, jitter=0.5, retry_on=openai.RateLimitError
    )
    node = Summarize(client, limits=limits, max_concurrency=64, retry=retry, cache=cache)
    shared: dict[str, Any] = {"texts": items}
    started = time.monotonic()
    stopped = None
    try:
        asyncio.run(_run(node, shared, budget, client))
    except BudgetExceeded as error:
        stopped = error
    return {
        "seconds": time.monotonic() - started,
        "rejected": api.rejected,
        "answered": api.answered,
        "admitted": [(at - started, tokens) for at, tokens in api.admitted],
        "stopped": stopped,
        "done": len(shared.get("summaries", [])),
    }


async def _run(node: Summarize, shared: dict[str, Any], budget: Any, client: Any) -> None:
    try:
        await node.run_async(shared, budget=budget)
    finally:
        await client.close()


def svg(runs: dict[str, dict[str, Any]], quota: int, period: float) -> str:
    """Tokens per period (a sliding window, sampled) against the quota, one line per run."""
    width, height, left, bottom, top = 660, 320, 64, 40, 30
    end = max(max((at for at, _ in run["admitted"]), default=0) for run in runs.values()) + period
    step = period / 10
    samples = [step * index for index in range(int(end / step) + 1)]
    lines = {
        name: [
            sum(tokens for at, tokens in run["admitted"] if sample - period < at <= sample)
            for sample in samples
        ]
        for name, run in runs.items()
    }
    most = max([quota * 1.3, *(max(line) for line in lines.values())])

    def x(seconds: float) -> float:
        return left + (width - left - 20) * seconds / end

    def y(tokens: float) -> float:
        return top + (height - top - bottom) * (1 - tokens / most)

    colours = {"calls only": "#d62728", "weighted by tokens": "#1f77b4"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{y(0)}" x2="{width - 20}" y2="{y(0)}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0)}" stroke="#444"/>',
        f'<line x1="{left}" y1="{y(quota):.1f}" x2="{width - 20}" y2="{y(quota):.1f}" '
        'stroke="#2ca02c" stroke-dasharray="6 4" stroke-width="2"/>',
        f'<text x="{width - 24}" y="{y(quota) - 6:.1f}" text-anchor="end" fill="#2ca02c">'
        f"quota: {quota:,} tokens per {period:g} s</text>",
        f'<text x="{left}" y="{height - 8}">seconds</text>',
        f'<text x="{left + 6}" y="{top + 4}">tokens the server let through in the '
        f"last {period:g} s</text>",
    ]
    tick = next(  # a round step that draws at most 8 ticks
        step * 10**power
        for power in range(9)
        for step in (1, 2, 5)
        if most / (step * 10**power) <= 8
    )
    for tokens in range(0, int(most) + 1, tick):
        parts.append(
            f'<text x="{left - 6}" y="{y(tokens) + 4:.1f}" text-anchor="end">{tokens:,}</text>'
        )
    for second in range(int(end) + 1):
        parts.append(
            f'<text x="{x(second):.1f}" y="{y(0) + 16:.1f}" text-anchor="middle">{second}</text>'
        )
    for index, (name, line) in enumerate(lines.items()):
        points = " ".join(f"{x(s):.1f},{y(t):.1f}" for s, t in zip(samples, line, strict=True))
        colour = colours.get(name, "#555")
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        run = runs[name]
        label = f"{name}: {run['rejected']} calls got 429, {run['seconds']:.1f} s"
        parts.append(
            f'<text x="{width - 24}" y="{top + 14 + 16 * index}" text-anchor="end" '
            f'fill="{colour}">{label}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--quota", type=int, default=20_000, help="tokens per period")
    parser.add_argument("--period", type=float, default=2.0, help="the quota's 'minute', s")
    parser.add_argument("--svg", type=Path, help="draw tokens per period against the quota")
    args = parser.parse_args(argv)
    items = texts(args.items)
    tokens = sum(estimate(text) - MAX_TOKENS for text in items)  # the prompts alone
    # The provider's request quota: generous, as it is for long prompts.
    requests = max(1, 4 * args.quota * len(items) // tokens)
    runs: dict[str, dict[str, Any]] = {}
    with ChatAPI(tokens_per_minute=args.quota, quota_period=args.period) as api:
        cache = Cache(store=MemoryStore())  # kept for this process's runs
        for name, how in (("calls only", "calls"), ("weighted by tokens", "weighted")):
            limits = limits_for(how, args.quota, args.period, requests)
            run = runs[name] = run_batch(
                api, items, limits, cache=cache if how == "weighted" else None
            )
            used = sum(tokens for _, tokens in run["admitted"])
            allowed = used / args.quota * args.period  # what the quota lets through in that time
            run["quota_seconds"] = allowed
            print(
                f"{name:<19} {run['done']} texts, {used:,} tokens in {run['seconds']:.2f} s "
                f"(the quota allows {allowed:.2f} s): {run['rejected']} calls got 429"
            )
        again = runs["again, from the cache"] = run_batch(
            api, items, limits_for("weighted", args.quota, args.period, requests), cache=cache
        )
        print(
            f"again, from the cache: {again['done']} texts in {again['seconds']:.2f} s, "
            f"{again['answered']} calls made"
        )
        cost = 0.4 * sum(tokens for _, tokens in runs["weighted by tokens"]["admitted"]) * 0.15e-6
        budget = Budget(cost=round(cost, 6))
        third = runs["with a budget"] = run_batch(
            api, items, limits_for("weighted", args.quota, args.period, requests), budget
        )
        stopped = third["stopped"]
        if stopped is not None:
            print(
                f"with {budget!r}: stopped before item {stopped.item_index}, after "
                f"{stopped.spent.calls} calls, {stopped.spent.tokens:,} tokens, cost "
                f"{stopped.spent.cost:.6f}"
            )
    if args.svg is not None:
        shown = {name: runs[name] for name in ("calls only", "weighted by tokens")}
        args.svg.write_text(svg(shown, args.quota, args.period), encoding="utf-8")
        print(f"drawn: {args.svg}")
    return runs


if __name__ == "__main__":
    main()
