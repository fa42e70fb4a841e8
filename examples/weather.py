"""The async weather fetcher: one AsyncNode run by an AsyncFlow.

The node reads a city from the shared store (prep_async), calls a weather
API (exec_async; simulated here with asyncio.sleep) and stores the report
(post_async). While the call waits, the event loop is free: the second part
runs the same flow for three cities at once and takes the time of one call.

Run it with: python examples/weather.py
"""

import asyncio
import time

from braidflow import AsyncFlow, AsyncNode

API_DELAY = 0.2  # seconds one simulated API call takes


class WeatherFetcher(AsyncNode):
    """Fetch the weather for the city named in shared["city_name"]."""

    async def prep_async(self, shared):
        return shared.get("city_name", "Unknown")

    async def exec_async(self, city):
        await asyncio.sleep(API_DELAY)  # stands in for the HTTP request
        return f"Sunny in {city}"

    async def post_async(self, shared, prep_result, exec_result):
        shared["weather_report"] = exec_result
        return "done"


async def report_for(flow: AsyncFlow, city: str) -> str:
    """Run the flow on a fresh shared store for one city and return its report."""
    shared = {"city_name": city}
    await flow.run_async(shared)
    return shared["weather_report"]


async def main() -> None:
    flow = AsyncFlow(start=WeatherFetcher())

    shared = {"city_name": "London"}
    action = await flow.run_async(shared)
    print(f"report: {shared['weather_report']} (last action: {action!r})")

    # One flow object can serve many runs at once: each run gets its own copies
    # of the nodes, and each shared store here belongs to one run.
    cities = ["Paris", "Tokyo", "Lima"]
    started = time.perf_counter()
    reports = await asyncio.gather(*(report_for(flow, city) for city in cities))
    elapsed = time.perf_counter() - started
    print(f"{len(cities)} cities at once in {elapsed:.2f} s (one call takes {API_DELAY} s):")
    for report in reports:
        print(f"  {report}")


if __name__ == "__main__":
    asyncio.run(main())
