"""braidflow run/resume --budget-tokens/--budget-cost: a durable run waits at its budget."""

import json

import pytest

from test_cli import cli, status

FLOWS = """
import braidflow as bf


class Calls(bf.BatchNode):
    def prep(self, shared):
        return list(range(6))

    def exec(self, item):
        self.report_usage(input_tokens=100, output_tokens=0, cost=0.5)
        return item

    def post(self, shared, prep_res, exec_res):
        shared["done"] = len(exec_res)


calls = bf.Flow(start=Calls(), name="calls")
"""


@pytest.fixture
def work(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    return tmp_path


@pytest.mark.slow
def test_a_durable_run_waits_at_its_budget_and_resumes_with_a_higher_one(work):
    done = cli(
        work, "run", "flows.py:calls", "--store", "runs.db", "--run-id", "b", "--budget-tokens",
        "200",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "reached its budget at calls/Calls" in done.stderr
    assert "200 tokens spent, budget 200" in done.stderr
    assert "braidflow resume b --store runs.db --budget-tokens N" in done.stderr
    assert status(work, "b") == "waiting"
    listed = cli(work, "runs", "--store", "runs.db")
    header, row = listed.stdout.splitlines()
    assert "TOKENS" in header
    assert row.split()[:2] == ["b", "waiting"]
    assert " 200 " in row
    shown = cli(work, "show", "b", "--store", "runs.db")
    assert "used 200 tokens (200 in, 0 out) in 2 calls, cost 1" in shown.stdout
    assert "waiting at Calls for a higher budget: node 'Calls' item 2" in shown.stdout
    resumed = cli(work, "resume", "b", "--store", "runs.db", "--budget-cost", "10")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"done": 6}
    assert status(work, "b") == "completed"


@pytest.mark.slow
def test_a_plain_run_stops_at_its_budget_and_a_bad_budget_is_refused(work):
    done = cli(work, "run", "flows.py:calls", "--budget-cost", "1")
    assert done.returncode == 1
    assert "the run failed: BudgetExceeded" in done.stderr
    bad = cli(work, "run", "flows.py:calls", "--budget-tokens", "-5", check_stderr_one_line=True)
    assert "tokens=-5 must be an int >= 0" in bad.stderr
