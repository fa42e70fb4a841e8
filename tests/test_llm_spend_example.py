"""examples/llm_spend.py: a token quota kept by a weighted limiter, broken by a calls-only one."""

import importlib.util
import sys
from pathlib import Path

import pytest

import fake_openai  # noqa: F401 - loads examples/_local_services.py as _local_services

pytestmark = pytest.mark.slow  # the example paces 500 calls to a quota: 30 s

EXAMPLE = Path(__file__).parent.parent / "examples" / "llm_spend.py"


def load_example():
    spec = importlib.util.spec_from_file_location("llm_spend", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["llm_spend"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_a_weighted_limiter_keeps_the_token_quota_and_a_calls_only_one_does_not(tmp_path, capsys):
    example = load_example()
    picture = tmp_path / "tokens.svg"
    # A 4-second "minute": the quota, not the machine's speed (2 cores shared
    # with other tests), is what paces the weighted run.
    runs = example.main(["--items", "500", "--period", "4", "--svg", str(picture)])
    calls_only, weighted = runs["calls only"], runs["weighted by tokens"]
    assert calls_only["done"] == weighted["done"] == 500
    assert calls_only["rejected"] > 0  # bursts of long texts went over the quota
    assert weighted["rejected"] == 0
    # Close to the quota: at most 1.25x the time its tokens take at the quota.
    assert weighted["seconds"] <= 1.25 * weighted["quota_seconds"]
    cached = runs["again, from the cache"]
    assert cached["done"] == 500
    assert cached["answered"] == 0  # every text from the cache: no call
    budgeted = runs["with a budget"]
    stopped = budgeted["stopped"]
    assert stopped is not None
    assert budgeted["done"] == 0
    assert stopped.spent.cost >= stopped.budget.cost
    assert budgeted["answered"] == stopped.spent.calls  # no call was made past the stop
    drawn = picture.read_text()
    assert drawn.startswith("<svg")
    assert "quota: 20,000 tokens per 4 s" in drawn
    out = capsys.readouterr().out
    assert "weighted by tokens  500 texts" in out
    assert ": 0 calls got 429" in out
