"""Random programs of parallel branches, nested forks and batch flows under
random merge rules end as a reference model of the documented merge semantics
says: run plainly, durably, and resumed after injected failures, where no
finished node runs again (the programs and the model: ``_branch_programs``)."""

import pytest

from _branch_programs import check_seed

# Together these take about 25 s (a twentieth of a second a seed).
pytestmark = pytest.mark.slow

# Seeds whose programs found a bug: a resumed run of a fork nested in a branch
# took, for a key its join merged back to the value at the fork (a "sum" of +2
# and -2, a function rule returning it), one inner branch's value instead.
# 20044 and 20056 found it, 1080 (in one run of a few) and the others in
# sweeps for more; 2433 and 3402 found it with an earlier version of the
# generator, and draw other programs now.
FOUND_BUGS = [589, 1080, 2133, 2433, 2467, 3402, 20044, 20056, 23142, 23292, 23748]
FOUND_BUGS_WITH_BATCH_FLOWS = [2203, 40309, 40646, 40812, 41772, 42499, 42715, 42762]

SPREAD = [*range(0, 100), *range(10_000, 10_100), *range(30_000, 30_100)]
SPREAD_WITH_BATCH_FLOWS = list(range(50_000, 50_150))


def check(request, seed, tmp_path, *, batches=False):
    """Fail with the problems of ``seed``'s program, and how to reproduce them."""
    problems = check_seed(seed, tmp_path, batches=batches)
    if problems:
        script = f"tests/_branch_programs.py {'--batches ' if batches else ''}{seed}"
        pytest.fail(
            "\n".join(
                [
                    *problems,
                    f"Reproduce: PYTHONPATH=src python {script}",
                    f"       or: PYTHONPATH=src python -m pytest '{request.node.nodeid}'",
                ]
            ),
            pytrace=False,
        )


@pytest.mark.parametrize("seed", FOUND_BUGS + SPREAD)
def test_programs_end_as_the_model_says(request, seed, tmp_path):
    check(request, seed, tmp_path)


@pytest.mark.parametrize("seed", FOUND_BUGS_WITH_BATCH_FLOWS + SPREAD_WITH_BATCH_FLOWS)
def test_programs_with_batch_flows_end_as_the_model_says(request, seed, tmp_path):
    check(request, seed, tmp_path, batches=True)
