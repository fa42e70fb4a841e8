"""``python -m braidflow.pocketflow program.py``: a PocketFlow program, unchanged, on braidflow."""

import os
import subprocess
import sys
import textwrap

import pytest

# PocketFlow's own style: `from pocketflow import ...`, run as a script, with
# arguments; it reports what it ran on.
PROGRAM = """
import sys
import warnings

from pocketflow import AsyncFlow, AsyncNode, Flow, Node


class Count(Node):
    def __init__(self, by):
        super().__init__()
        self.by = by

    def prep(self, shared):
        return shared["n"]

    def exec(self, n):
        return n + self.by

    def post(self, shared, prep_res, exec_res):
        shared["n"] = exec_res
        return "again" if exec_res < int(sys.argv[1]) else "done"


class Tell(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared["told"] = True


count = Count(by=int(sys.argv[2]))
count - "again" >> count
count - "done" >> Tell()
shared = {"n": 0}
with warnings.catch_warnings():
    warnings.simplefilter("error")
    AsyncFlow(start=count).run(shared)

import braidflow
import pocketflow

print(shared, pocketflow is braidflow, __name__, sys.argv, sys.path[0])
print(sorted(name for name in sys.modules if "pocketflow" in name))
"""

# A module-only program: `import pocketflow` and nothing from a submodule.
MODULE_ONLY = """
import pocketflow

class Hello(pocketflow.Node):
    def post(self, shared, prep_res, exec_res):
        shared["hello"] = "world"

shared = {}
pocketflow.Flow(start=Hello()).run(shared)
print(shared, type(Hello()).__mro__[1].__module__)
"""


def run(directory, *args):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "braidflow.pocketflow", *args],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def work(tmp_path):
    (tmp_path / "program.py").write_text(PROGRAM)
    (tmp_path / "module_only.py").write_text(MODULE_ONLY)
    # A pocketflow package next to the program, as PocketFlow's own tests have
    # it: the program must get braidflow anyway, and this is never imported.
    (tmp_path / "pocketflow").mkdir()
    (tmp_path / "pocketflow" / "__init__.py").write_text("raise ImportError('the real one')\n")
    return tmp_path


def test_a_pocketflow_program_runs_unchanged_on_braidflow(work):
    done = run(work, "program.py", "10", "3")
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == (
        f"{{'n': 12, 'told': True}} True __main__ ['program.py', '10', '3'] "
        f"{os.path.realpath(work)}"
    )
    assert second == "['pocketflow']"  # braidflow under that name; no other pocketflow
    assert done.stderr == ""


def test_a_program_elsewhere_gets_its_own_directory_first_on_the_path(work, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    done = run(elsewhere, str(work / "program.py"), "1", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].endswith(f"{os.path.realpath(work)}")


def test_a_program_that_imports_only_the_module_runs(work):
    done = run(work, "module_only.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'hello': 'world'} braidflow\n"


def test_a_module_runs_with_dash_m_as_python_m_would(work):
    (work / "test_counting.py").write_text(
        textwrap.dedent(
            """
            import unittest

            from pocketflow import Flow, Node

            class Add(Node):
                def post(self, shared, prep_res, exec_res):
                    shared["n"] += 1

            class CountTest(unittest.TestCase):
                def test_counts(self):
                    first = Add()
                    first >> Add()
                    shared = {"n": 0}
                    Flow(start=first).run(shared)
                    self.assertEqual(shared["n"], 2)

                def test_on_braidflow(self):
                    import pocketflow

                    self.assertTrue(hasattr(pocketflow, "Parallel"))
            """
        )
    )
    done = run(work, "-m", "unittest", "-v", "test_counting")
    assert done.returncode == 0, done.stderr
    assert "Ran 2 tests" in done.stderr
    assert "OK" in done.stderr


def test_exit_status_and_errors_are_the_programs(work):
    (work / "exits.py").write_text("import sys\nimport pocketflow\nsys.exit(3)\n")
    (work / "fails.py").write_text("from pocketflow import Node\nraise ValueError('boom')\n")
    assert run(work, "exits.py").returncode == 3
    failed = run(work, "fails.py")
    assert failed.returncode == 1
    assert failed.stderr.rstrip().endswith("ValueError: boom")


@pytest.mark.slow
def test_no_program_or_a_missing_one_is_a_usage_error(work):
    bare = run(work)
    assert bare.returncode == 2
    assert "usage: python -m braidflow.pocketflow program.py [args ...]" in bare.stderr
    missing = run(work, "nowhere.py")
    assert missing.returncode == 2
    assert "can't open file 'nowhere.py'" in missing.stderr
    helped = run(work, "--help")
    assert helped.returncode == 0
    assert "usage:" in helped.stdout


def test_install_makes_later_imports_give_braidflow():
    import braidflow
    import braidflow.pocketflow

    before = sys.modules.pop("pocketflow", None)
    try:
        braidflow.pocketflow.install()
        import pocketflow
        from pocketflow import Flow, Node

        assert pocketflow is braidflow
        assert (Flow, Node) == (braidflow.Flow, braidflow.Node)
    finally:  # the real one, for the tests that compare with it
        sys.modules.pop("pocketflow", None)
        if before is not None:
            sys.modules["pocketflow"] = before
