"""The async weather fetcher: one AsyncNode in an AsyncFlow.

The API call is simulated with asyncio.sleep; while it waits, the event loop
is free for other work.
"""

import asyncio

from braidflow import AsyncFlow, AsyncNode


class WeatherFetcher(AsyncNode):
    async def prep_async(self, shared):
        return shared.get("city_name", "Unknown")

    async def exec_async(self, city):
        await asyncio.sleep(0.2)  # stands in for the HTTP request
        return f"Sunny in {city}"

    async def post_async(self, shared, prep_res, exec_res):
        shared["weather_report"] = exec_res
        return "done"


async def main() -> None:
    flow = AsyncFlow(start=WeatherFetcher())
    shared = {"city_name": "London"}
    action = await flow.run_async(shared)
    print(f"report: {shared['weather_report']!r} (last action: {action!r})")


if __name__ == "__main__":
    asyncio.run(main())
