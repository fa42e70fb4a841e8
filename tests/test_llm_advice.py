"""The advice braidflow gives about LLM calls (budgets, prices, usage, weights), followed."""

import asyncio

import openai
import pytest

from braidflow import (
    BatchNode,
    Budget,
    BudgetExceeded,
    InvalidParameterError,
    Limiter,
    MemoryStore,
    Suspended,
)
from braidflow.llm import Prices, usage_from_openai
from fake_openai import ChatAPI


class Calls(BatchNode):
    def prep(self, shared):
        return [1, 2, 3]

    def exec(self, item):
        self.report_usage(input_tokens=100, cost=1.0)
        return item

    def post(self, shared, prep_res, exec_res):
        shared["done"] = exec_res


def test_advice_for_a_budget_that_is_not_a_budget_works():
    with pytest.raises(InvalidParameterError, match=r"e\.g\. Budget\(tokens=100_000\)"):
        Calls().run({}, budget=100)
    shared = {}
    Calls().run(shared, budget=Budget(tokens=100_000))  # as advised
    assert shared["done"] == [1, 2, 3]


def test_advice_for_a_suspending_budget_without_a_store_works_both_ways():
    budget = Budget(tokens=100, on_exceed="suspend")
    with pytest.raises(InvalidParameterError, match="pass store= too, or on_exceed='raise'"):
        Calls().run({}, budget=budget)
    store = MemoryStore()
    with pytest.raises(Suspended):  # store= too
        Calls().run({}, store=store, run_id="r", budget=budget)
    assert store.get("r").status == "waiting"
    with pytest.raises(BudgetExceeded):  # or on_exceed='raise'
        Calls().run({}, budget=Budget(tokens=100, on_exceed="raise"))


def test_advice_for_a_budget_with_no_limit_works():
    with pytest.raises(InvalidParameterError, match="give tokens=, cost= or both"):
        Budget()
    with pytest.raises(BudgetExceeded):
        Calls().run({}, budget=Budget(tokens=100, cost=1.5))


def test_advice_of_a_run_suspended_by_its_budget_works():
    store = MemoryStore()
    with pytest.raises(Suspended, match=r"budget=Budget\(\.\.\.\)") as caught:
        Calls().run({}, store=store, run_id="r", budget=Budget(cost=2.0, on_exceed="suspend"))
    said = str(caught.value)
    assert said.count("resume it with") == 1  # said once, and it works as said:
    assert said.endswith("resume it with flow.resume('r', store=..., budget=Budget(...))")
    shared = Calls().resume("r", store=store, budget=Budget(cost=10.0))
    assert shared["done"] == [1, 2, 3]


def test_advice_for_a_model_with_no_price_works():
    prices = Prices({"gpt-4o": (2.5, 10.0)})
    with pytest.raises(InvalidParameterError, match=r"add it, e\.g\. Prices\(\{'o3'"):
        prices.cost("o3", 1000, 1000)
    priced = Prices({"gpt-4o": (2.5, 10.0), "o3": (2.0, 8.0)})  # added
    assert priced.cost("o3", 1_000_000, 0) == 2.0


def test_advice_for_prices_that_are_not_a_dict_works():
    with pytest.raises(InvalidParameterError, match="give a dict of model name"):
        Prices([("m", 1.0, 2.0)])  # type: ignore[arg-type]
    assert Prices({"m": (1.0, 2.0)}).of("m") == (1.0, 2.0)


def test_advice_for_a_weight_larger_than_the_limiter_works():
    with pytest.raises(InvalidParameterError, match="raise the limiter's bound or split the call"):
        Limiter(rate=100, per=60).weighted(500)
    Limiter(rate=1000, per=60).weighted(500)  # the bound raised
    Limiter(rate=100, per=60).weighted(100)  # or the call split in five


def test_advice_for_an_async_stream_given_whole_works():
    async def main():
        with ChatAPI() as api:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="local")
            stream = await client.chat.completions.create(
                model="local",
                messages=[{"role": "user", "content": "one two"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            with pytest.raises(InvalidParameterError, match=r"\[chunk async for chunk in"):
                usage_from_openai(stream)
            usage = usage_from_openai([chunk async for chunk in stream])  # as it says
            await client.close()
        assert usage.input_tokens == 2

    asyncio.run(main())


def test_advice_for_a_stream_without_its_usage_works():
    async def main():
        with ChatAPI() as api:
            client = openai.AsyncOpenAI(base_url=api.url, api_key="local")
            messages = [{"role": "user", "content": "one two"}]
            bare = await client.chat.completions.create(
                model="local", messages=messages, stream=True
            )
            chunks = [chunk async for chunk in bare]
            with pytest.raises(InvalidParameterError, match="include_usage"):
                usage_from_openai(chunks)
            told = await client.chat.completions.create(
                model="local",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in told]
            await client.close()
        assert usage_from_openai(chunks).input_tokens == 2  # the chunks
        assert usage_from_openai(chunks[-1]).input_tokens == 2  # or the last one

    asyncio.run(main())
