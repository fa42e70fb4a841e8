"""Every error and warning that tells the user what to do is followed here, and works.

Each test makes the mistake, reads what braidflow says to do (the code in
backticks, or the words after "use", "pass", "write"...), does exactly that,
and checks the result. Advice that fails when followed is a bug, as much as
a wrong result is.

The catalogue: where each suggestion is said, and the test that follows it.

Wiring and classes
    _flow.Flow._reached_async ......... test_a_sync_flow_reaching_an_async_node_*
    engine._sync.node_step ............ test_private_sync_run_of_an_async_node_*
    _plan.Plan (async def on sync) .... test_async_def_on_a_sync_kind_names_its_async_variant
    _plan (an unused async phase) ..... tests/test_async.py::test_an_async_phase_of_a_sync_*
    _plan (a phase misspelled) ........ tests/test_async.py::test_a_phase_with_a_letter_wrong_*
    _node._checked_init ............... tests/test_node_init.py (every test there)
    _branches._heads (>> in fan-out) .. tests/test_wiring.py::test_a_branch_wired_inside_*,
                                        test_a_left_side_that_makes_a_new_node_*
    _flow._warn_if_wired_here ......... tests/test_wiring.py::test_wiring_a_chain_as_a_flows_*
    _wiring._ConditionalTransition .... test_an_action_never_completed_says_how_to_complete_it
    _wiring.Wirable.__sub__ ........... test_a_non_string_action_says_how_to_write_one
    _wiring.as_node, _branches._heads . test_a_class_given_for_a_node_says_to_make_one
    _run.warn_unreachable_successors .. test_a_lone_node_with_successors_says_use_flow
    _wiring.route ("Flow ends") ....... test_an_action_with_no_successor_says_which_node_*
    engine._walk (no start node) ...... test_a_flow_with_no_start_says_how_to_give_one
Options
    _flow.Flow.__init__ (isolate=, merge=, offload_sync=) ... test_flow_options_*
    _kinds.Node.__init__ (retry= and max_retries=) .......... test_retry_or_max_retries_*
    _options (max_retries, wait, max_concurrency, on_error,
              limits, offload, executor) .................... test_option_*
    _policy.Retry, _limits.Limiter (numbers, per= alone) .. test_retry_and_limiter_numbers_*
    _merge.check_rules .................................. test_a_bad_merge_rule_*
    _run.RunScope (store=, run_id=, shared, clock=, observers=) ... test_run_options_*
    _run.shared_argument (run() with no shared) ......... test_run_without_shared_*
    _node.BaseNode._resume_scope ........................ test_resume_without_a_store_*
Running
    _merge.merge (MergeConflict) ........................ test_a_merge_conflict_*
    _run.PendingRun (never awaited) ..................... test_a_run_never_awaited_*
    _limits (a sync wait on the loop's thread) .......... test_a_sync_run_that_must_wait_*
    _deadlock (LimiterDeadlock, both messages) .......... test_a_limiter_deadlock_*
    engine._items (async iterator, not iterable) ........ test_batch_items_*
    _flow.Flow._item_params (not a dict) ................ test_batch_items_*
    engine._attempts (NodeCancelledError, __cause__) .... test_a_node_cancelled_error_*
Durable runs
    durable._interrupt (no store) ....................... test_interrupt_without_a_store_*
    durable._session (Suspended, failed-run note,
                      input= to a run not waiting,
                      another graph, another flow) ...... test_durable_*
    durable._asking (Suspended on several questions,
                     input= for several, an unknown id,
                     input= with answers=, bad answers=) test_durable_questions_*
    durable._run (items changed, fingerprints, values
                  that cannot be saved) ................. test_durable_*
    durable._history (a store with no read(), a step
                      that is not there, a step whose state
                      an async or exit run did not store) tests/test_history.py::
        test_a_store_without_read_*, test_a_step_that_is_not_there_is_refused;
        tests/test_lax_steps.py::test_the_history_lists_every_step_*
    _stored (history and stored_state given no store) .. tests/test_history.py::
        test_history_and_state_need_no_flow
    durable._travel (rename=, migrate=, update=, another
                     graph at a fork) ................... tests/test_history.py::
        test_bad_resume_options_*, test_migrate_may_return_*, test_a_bad_update_*,
        test_a_renamed_node_resumes_with_rename_*
    durable._codec (keys, values, the reserved key, an enum
                    or other subclass of a JSON type; in the
                    shared run() is given, update=, migrate=) test_durable_values_*
    durable._run_codec (a pickle run with no mark, read
                        through a JSON store object; a mark
                        its data belies) ................. tests/test_history.py::
        test_an_unmarked_pickle_run_is_refused_*, test_a_mark_the_data_belies_*;
        tests/test_cli.py::test_an_unmarked_pickle_run_is_one_line_*
    durable._drain (a run another process runs: store=;
                    Drained: resume it) ................. tests/test_drain.py::
        test_a_run_in_another_process_drains_when_asked_*, test_a_drained_batch_*
    stores._base (run id used, run running elsewhere) ... test_store_*, and
        tests/test_store_failures.py::test_a_run_on_another_host_is_running_until_its_lease_*
    stores._sqlite_schema (directory, not a store) ...... test_sqlite_store_paths_*
    stores._sqlite_failures, stores.sqlite, stores._sqlite_folding (closed, full,
        read-only, a log that cannot be read) ........... test_a_closed_store_*, and
        tests/test_store_failures.py (full: "free some space", read-only: "make it
        writable", the run log: "move it away", each followed by a resume)
    stores._runlog ("a short write ...: the disk may be full") says what, not what to do
    durable._run_codec ("holds data that cannot be decoded ...: the store is damaged")
        says what, not what to do ....................... tests/test_history.py::
        test_data_that_cannot_be_decoded_is_a_store_error_naming_the_run
    stores._postgres_schema (a server that cannot be reached, a user who may not make
        tables) ......................................... tests/test_postgres_store.py::
        test_a_lost_connection_*, test_a_user_who_may_not_make_tables_*
    _shared_limits, stores._store_limiters (a limiter with no name, of a closed
        store) .......................................... tests/test_shared_limits.py::
        test_bad_options_and_misuse_say_what_to_do
    stores._sqlite_schema (read_only=True on an older file) ... tests/test_store_failures.py::
        test_a_read_only_store_refuses_a_file_it_would_have_to_change
Typed state
    _state (annotations that cannot be read, frozen types, a reducer or two
            rules in Annotated, shared of another kind, a conflict on a key
            of the type), _flow.Flow.__init__ (validate=),
    _state_table.check_nodes (failures collected in a key the type
            lacks, or in a frozen field) ... tests/test_typed_state_advice.py
    _state_table.check_nodes (a node typed against another state) ... tests/test_typed_state.py::
        test_a_node_typed_against_another_state_is_refused_when_the_run_starts
    _state_table._check_sub_flow (a sub-flow's state lacks keys) ... tests/test_typed_state.py::
        test_a_sub_flow_whose_state_lacks_keys_of_the_flow_around_is_refused_before_*
    _state.StateType.write_back (a store that does not fit the instance, a frozen
            field changed), and _run.RunScope._write_back (the same, as a note on
            how the run ended) ... tests/test_typed_state_advice.py::
        test_a_store_that_does_not_fit_the_instance_*, test_a_frozen_field_the_run_changed_*
    _state_views (a key read before it is set, a frozen field written, a
            required key deleted) ...
            tests/test_typed_state_advice.py::
        test_a_key_read_before_it_is_set_says_so_and_to_set_it_or_give_a_default_and_both_work,
        test_a_frozen_field_written_says_to_declare_it_without_frozen_and_that_works,
        test_a_required_key_deleted_says_to_set_a_value_or_declare_it_not_required_*
    _state.StateType.check_step (a value changed in place out of its type, in a
            durable run, by a step or a flow's own post) ... tests/test_typed_state_advice.py::
        test_a_value_changed_in_place_out_of_its_type_says_to_keep_its_type_*,
        test_a_flow_s_own_post_changing_a_value_in_place_out_of_its_type_says_to_keep_*
Result cache
    _cache (an input with no key, exec with no code),
    engine._cached (no store, a store with no cache,
                    a result JSON cannot hold),
    _options.check_cache(_options) ...................... tests/test_cache.py::test_advice_*
LLM calls
    _budget (budget= not a Budget, suspend with no store,
             no limit, a suspended run: resume it with budget=),
    llm._prices (no price for a model, not a dict),
    llm._openai (a stream without its usage),
    _weights (more than the limiter can give) ........... tests/test_llm_advice.py::test_advice_*
    _usage (a report with no cost under a cost budget) .. tests/test_budgets.py::
        test_usage_with_no_cost_under_a_cost_budget_is_refused_naming_the_node
    _usage (a report from a thread that does not see the run) ... tests/test_usage.py::
        test_a_report_from_a_thread_that_does_not_see_the_run_warns_and_its_context_counts
Tracing and extras
    tracing._files (no such directory) .................. test_a_trace_in_a_missing_directory_*
    tracing, executors (pip install 'braidflow[...]') ... test_the_extras_named_exist
    executors._ray (a node that cannot be pickled, a result that cannot be
                    sent back, a module the workers cannot import),
    _node (emit() of data that cannot be sent back),
    durable._keys (idempotency_key() in a worker) ...... tests/test_ray.py (needs Ray)
The command
    cli (every suggestion) .............................. tests/test_cli.py::
        test_every_resume_the_command_suggests_works, test_the_other_suggestions_*,
        test_a_run_started_from_python_resumes_as_suggested_*,
        test_the_remaining_suggestions_work_when_followed,
        test_a_value_json_cannot_keep_suggests_serializer_pickle_* (--serializer pickle)
    cli._running (a run its store stopped: the resume) ... tests/test_cli_store_failures.py
    cli._store.refuse_another_graph (--rename; another flow: leave TARGET out)
        ................................................. tests/test_cli.py::
        test_a_run_resumes_with_a_node_renamed_as_the_refusal_says
The dashboard
    ui._actions (an answer that is not JSON, a key removed in a fork, no TARGET:
                 the command to run, or --target) ... tests/test_ui.py::
        test_an_answer_that_is_not_json_*, test_a_fork_that_removes_a_key_*,
        test_with_no_target_known_*

Not followed, and why: "upgrade braidflow" and "resume the run with the
version that recorded it" (another version of braidflow would be needed);
"keep large data out of shared" and, from stores._sqlite_cache, "keep large
data out of exec's result" (each needs a value of a gigabyte); "check the
disk", "restore it from a copy", "try again when it is free" (a failing disk,
a damaged file, a lock held past SQLite's timeout); "free some on the
server", "check the PostgreSQL server and its log" (a database server out
of space, or failing in another way).
"""

import asyncio
import collections
import contextlib
import enum
import re
import threading
import warnings

import pytest

import braidflow
import braidflow.executors
import braidflow.testing
from braidflow import (
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    AsyncUsageError,
    BatchFlow,
    BatchItemsError,
    BatchNode,
    CheckpointError,
    Flow,
    InvalidParameterError,
    Limiter,
    LimiterDeadlock,
    MergeConflict,
    Node,
    NodeCancelledError,
    NodeDefinitionError,
    NotDurableError,
    Parallel,
    ParallelBatchNode,
    ResumeError,
    Retry,
    SQLiteStore,
    StoreError,
    Suspended,
    WiringError,
    WiringWarning,
    interrupt,
)


def code_in(text):
    """The pieces of code a message shows, in backticks, in order."""
    return re.findall(r"`([^`]+)`", str(text))


# -- nodes the tests use ----------------------------------------------------------------


class Double(AsyncBatchNode):
    """An async batch node: shared["numbers"] doubled into shared["doubled"]."""

    async def prep_async(self, shared):
        return shared["numbers"]

    async def exec_async(self, number):
        await asyncio.sleep(0)
        return number * 2

    async def post_async(self, shared, prep_res, exec_res):
        shared["doubled"] = exec_res


class Mark(Node):
    """Sets shared[its name] = True."""

    def post(self, shared, prep_res, exec_res):
        shared[self.name] = True


class AsyncMark(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared[self.name] = True


class Write(Node):
    """Writes ``value`` to shared[key] (appends it, for a list already there)."""

    def __init__(self, key, value, **options):
        super().__init__(name=f"{key}={value!r}", **options)
        self.key, self.value = key, value

    def post(self, shared, prep_res, exec_res):
        if isinstance(shared.get(self.key), list):
            shared[self.key].append(self.value)
        else:
            shared[self.key] = self.value


# -- a sync flow that reaches an async node ------------------------------------------------


def test_a_sync_flow_reaching_an_async_node_from_plain_code_says_asyncflow_and_run():
    with pytest.raises(AsyncUsageError) as caught:
        Flow(start=Double()).run({"numbers": [1, 2]})
    message = str(caught.value)
    make, instead, run = code_in(message)
    assert (make, instead, run) == ("AsyncFlow(start=...)", "Flow(start=...)", "flow.run(shared)")
    # Followed as written, from plain code (as a script is): no await anywhere.
    shared = {"numbers": [1, 2]}
    namespace = {**globals(), "shared": shared}
    namespace["flow"] = eval(make.replace("...", "Double()"), namespace)
    exec(run, namespace)
    assert shared["doubled"] == [2, 4]


async def test_a_sync_flow_reaching_an_async_node_inside_async_code_says_await_run_async():
    with pytest.raises(AsyncUsageError) as caught:
        Flow(start=Double()).run({"numbers": [1]})
    make, _, run = code_in(caught.value)
    assert run == "await flow.run_async(shared)"
    shared = {"numbers": [1]}
    flow = eval(make.replace("...", "Double()"), {**globals()})
    await flow.run_async(shared)  # what it says, in this async code
    assert shared["doubled"] == [2]


def test_a_sync_flow_subclass_is_told_to_derive_from_the_async_variant():
    class Pipeline(BatchFlow):
        def prep(self, shared):
            return [{"numbers": [1]}, {"numbers": [2]}]

    with pytest.raises(AsyncUsageError, match="derive Pipeline from AsyncBatchFlow in place of "):
        Pipeline(start=Double()).run({"numbers": [3]})

    class Pipeline(braidflow.AsyncBatchFlow):  # as it says
        def prep(self, shared):
            return [{}, {}]

    shared = {"numbers": [3]}
    Pipeline(start=Double()).run(shared)
    assert shared["doubled"] == [6]


def test_a_sync_flow_nested_in_an_async_flow_is_told_the_outer_one_runs_it():
    with pytest.raises(AsyncUsageError) as caught:
        AsyncFlow(start=Flow(start=Double(), name="inner"), name="outer").run({"numbers": [1]})
    message = str(caught.value)
    assert message.startswith("flow 'inner' (Flow) is synchronous but reached async node")
    assert message.endswith(
        "flow 'outer' (AsyncFlow), which you run, then runs it as one of its steps"
    )
    shared = {"numbers": [1]}
    inner = eval(code_in(message)[0].replace("...", "Double()"), {**globals()})
    AsyncFlow(start=inner, name="outer").run(shared)  # run as before
    assert shared["doubled"] == [2]


def test_a_sync_flow_nested_in_a_sync_flow_is_told_to_make_both_async():
    with pytest.raises(AsyncUsageError) as caught:
        Flow(start=Flow(start=Double(), name="inner"), name="outer").run({"numbers": [1]})
    message = str(caught.value)
    assert "and so every synchronous flow around it, up to flow 'outer' (Flow)" in message
    shared = {"numbers": [1]}
    AsyncFlow(start=AsyncFlow(start=Double(), name="inner"), name="outer").run(shared)
    assert shared["doubled"] == [2]


def test_an_async_branch_of_a_sync_fork_is_told_where_the_async_flow_goes():
    with pytest.raises(AsyncUsageError) as caught:
        Parallel(Double(), Mark(name="mark")).run({"numbers": [1]})
    message = str(caught.value)
    assert "is a branch of node 'Parallel', which runs synchronously here" in message
    assert code_in(message) == ["AsyncFlow(start=...)", "flow.run(shared)"]
    shared = {"numbers": [1]}
    AsyncFlow(start=Parallel(Double(), Mark(name="mark"))).run(shared)
    assert shared == {"numbers": [1], "doubled": [2], "mark": True}

    with pytest.raises(AsyncUsageError, match="make the flows around it async"):
        Flow(start=Parallel(Double(), Mark(name="mark"))).run({"numbers": [1]})
    shared = {"numbers": [1]}
    AsyncFlow(start=Parallel(Double(), Mark(name="mark"))).run(shared)
    assert shared["doubled"] == [2]


def test_private_sync_run_of_an_async_node_says_run_or_run_async():
    with pytest.raises(AsyncUsageError) as caught:
        Double()._run({"numbers": [1]})  # PocketFlow's internal name, called directly
    assert code_in(caught.value)[0] == "node.run(shared)"
    shared = {"numbers": [1]}
    Double().run(shared)
    assert shared["doubled"] == [2]


async def test_private_sync_run_of_an_async_node_inside_async_code_says_await_run_async():
    with pytest.raises(AsyncUsageError) as caught:
        Double()._run({"numbers": [1]})
    assert code_in(caught.value) == ["await node.run_async(shared)"]
    shared = {"numbers": [1]}
    await Double().run_async(shared)
    assert shared["doubled"] == [2]


@pytest.mark.parametrize(
    ("base", "variant"), [(Node, AsyncNode), (BatchNode, AsyncBatchNode), (Flow, AsyncFlow)]
)
def test_async_def_on_a_sync_kind_names_its_async_variant(base, variant):
    with pytest.raises(NodeDefinitionError) as caught:

        class Fetch(base):
            async def prep(self, shared):
                return [1]

    assert f"derive it from {variant.__name__} in place of {base.__name__}" in str(caught.value)

    class Fetch(variant):  # as it says; alone with node.run(shared)
        async def prep(self, shared):
            shared["prepped"] = True
            return [1]

    shared = {}
    node = Fetch(start=Mark(name="m")) if variant is AsyncFlow else Fetch()
    node.run(shared)
    assert shared["prepped"]


# -- wiring ------------------------------------------------------------------------------


def test_an_action_never_completed_says_how_to_complete_it():
    review, approved = Mark(name="review"), Mark(name="approved")
    with pytest.warns(WiringWarning) as caught:
        review - "approve"
    (written,) = [code for code in code_in(caught.list[0].message) if code.startswith("node -")]
    assert written == "node - 'approve' >> next_node"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(written, {**globals(), "node": review, "next_node": approved})
    assert review.successors == {"approve": approved}


def test_a_non_string_action_says_how_to_write_one():
    review = Mark(name="review")
    with pytest.raises(WiringError, match='write node - "action" >> next_node'):
        review - 1
    exec('node - "action" >> next_node', {**globals(), "node": review, "next_node": Mark()})
    assert list(review.successors) == ["action"]


def test_a_class_given_for_a_node_says_to_make_one():
    first = Mark(name="first")
    with pytest.raises(WiringError, match=r"got the class Mark itself; give a node made from it: "):
        first >> Mark
    with pytest.raises(WiringError, match=r"give a node made from it: Mark\(\)"):
        Parallel(Mark, Mark(name="other"))
    first >> Mark()  # as it says
    Parallel(Mark(), Mark(name="other"))


def test_a_lone_node_with_successors_says_use_flow():
    first = Mark(name="first")
    first >> Mark(name="second")
    with pytest.warns(UserWarning, match=r"Node won't run successors. Use Flow\."):
        first.run({})
    shared = {}
    Flow(start=first).run(shared)
    assert shared == {"first": True, "second": True}
    lone = AsyncMark(name="first")
    lone >> Mark(name="second")
    with pytest.warns(UserWarning, match=r"Use AsyncFlow\."):
        lone.run({})
    shared = {}
    AsyncFlow(start=lone).run(shared)
    assert shared == {"first": True, "second": True}


def test_an_action_with_no_successor_says_which_node_and_how_to_wire_it():
    class Says(Mark):
        def post(self, shared, prep_res, exec_res):
            super().post(shared, prep_res, exec_res)
            return shared.get("action")

    def made():
        says = Says(name="classify")
        says >> Mark(name="answer")
        return says

    says = made()
    with pytest.warns(UserWarning, match=r"Flow ends: 'next' not found in \['default'\]") as seen:
        Flow(start=says).run({"action": "next"})
    said = str(seen[0].message)
    assert "from node 'classify'; wire it with node - 'next' >> next_node" in said
    says - "next" >> Mark(name="next")  # as it says
    shared = {"action": "next"}
    Flow(start=says).run(shared)
    assert shared["next"] is True
    # No action, with only named ones wired: "node >> next_node".
    only = Says(name="only")
    only - "x" >> Mark(name="x")
    with pytest.warns(UserWarning, match="wire it with node >> next_node"):
        Flow(start=only).run({})
    only >> Mark(name="default")
    shared = {}
    Flow(start=only).run(shared)
    assert shared["default"] is True


@pytest.mark.parametrize("kind", [Flow, AsyncFlow])
def test_a_flow_with_no_start_says_how_to_give_one(kind):
    with pytest.raises(WiringError) as caught:
        kind().run({})
    given, started = code_in(caught.value)
    assert given == f"{kind.__name__}(start=node)"
    shared = {}
    eval(given, {**globals(), kind.__name__: kind, "node": Mark(name="m")}).run(shared)
    flow = kind()
    eval(started, {**globals(), "flow": flow, "node": Mark(name="n")})
    flow.run(shared)
    assert shared == {"m": True, "n": True}


# -- options -------------------------------------------------------------------------------


def test_flow_options_say_which_kind_takes_them():
    with pytest.raises(InvalidParameterError, match="are for AsyncParallelBatchFlow"):
        Flow(isolate=True)
    with pytest.raises(InvalidParameterError, match="add isolate=True"):
        AsyncParallelBatchFlow(merge={"seen": "extend"})
    with pytest.raises(InvalidParameterError, match="offload_sync=True is for AsyncFlow"):
        Flow(offload_sync=True)

    class Each(AsyncParallelBatchFlow):
        def prep(self, shared):
            return [{"n": 1}, {"n": 2}]

    class Seen(Node):
        def post(self, shared, prep_res, exec_res):
            shared["seen"].append(self.params["n"])

    shared = {"seen": []}
    Each(start=Seen(), isolate=True, merge={"seen": "extend"}).run(shared)
    assert shared["seen"] == [1, 2]
    shared = {}
    AsyncFlow(start=Mark(name="m"), offload_sync=True).run(shared)
    assert shared == {"m": True}


def test_retry_or_max_retries_says_give_one_of_them():
    with pytest.raises(InvalidParameterError, match=r"give either retry=Retry\(\.\.\.\) or "):
        Node(retry=Retry(attempts=3), max_retries=3)
    assert Node(retry=Retry(attempts=3)).max_retries == 3
    assert Node(max_retries=3, wait=0).max_retries == 3


def test_option_max_retries_says_what_one_means():
    with pytest.raises(InvalidParameterError, match=r"1 means run exec once, no retry"):
        Node(max_retries=0)
    calls = []

    class Once(Node):
        def exec(self, prep_res):
            calls.append(1)

    Once(max_retries=1).run({})
    assert calls == [1]


def test_option_wait_says_what_it_must_be():
    with pytest.raises(InvalidParameterError, match="a finite number of seconds >= 0"):
        Node(wait=-1)
    assert Node(max_retries=2, wait=0).wait == 0


@pytest.mark.parametrize(
    ("made", "option"),
    [
        (lambda **options: BatchNode(**options), {"max_concurrency": 2}),
        (lambda **options: braidflow.AsyncBatchFlow(**options), {"max_concurrency": 2}),
        (lambda **options: Flow(**options), {"max_concurrency": 2}),
        (lambda **options: Node(**options), {"max_concurrency": 2}),
        (lambda **options: BatchNode(**options), {"on_error": "collect"}),
        (lambda **options: Node(**options), {"on_error": "collect"}),
    ],
)
def test_option_that_needs_a_parallel_kind_names_it_and_that_works(made, option):
    with pytest.raises(InvalidParameterError) as caught:
        made(**option)
    suggested = next(code for code in code_in(caught.value) if code.endswith(")"))
    kind = suggested.split("(", 1)[0]
    items = [{"n": 1}, {"n": 2}, {"n": 3}]

    class Items(getattr(braidflow, kind)):
        def prep(self, shared):
            return items

        if "Flow" not in kind:  # a flow's items are parameter sets for its sub-flow

            def exec(self, item):
                return item["n"]

            def post(self, shared, prep_res, exec_res):
                shared["got"] = exec_res

    built = eval(
        suggested.replace("..., ", "start=Mark(name='m'), " if "Flow" in kind else ""),
        {kind: Items, "Mark": Mark},
    )
    shared = {}
    built.run(shared)
    assert shared == ({"m": True} if "Flow" in kind else {"got": [1, 2, 3]})
    if "Limiter(" in str(caught.value):  # a node with no items: share a limiter
        limits = re.search(r"limits=\[Limiter\((\d+)\)\]", str(caught.value)).group(0)
        node = eval(f"Node({limits})", {**globals(), "Node": Node, "Limiter": Limiter})
        assert node._bf_limits[0].max_concurrent == option["max_concurrency"]


def test_option_max_concurrency_on_a_subclass_says_derive():
    class Resize(BatchNode):
        max_concurrency = 4

        def prep(self, shared):
            return [1, 2]

    with pytest.raises(
        InvalidParameterError, match="derive Resize from ParallelBatchNode in place of BatchNode"
    ):
        Resize()

    class Resize(ParallelBatchNode):
        max_concurrency = 4

        def prep(self, shared):
            return [1, 2]

    Resize().run({})


def test_option_limits_listed_twice_says_give_each_once():
    api = Limiter(2)
    with pytest.raises(InvalidParameterError, match="give each one once"):
        Node(limits=[api, api])
    assert Node(limits=[api])._bf_limits == (api,)


def test_option_limits_giving_a_limiter_plain_and_weighted_says_keep_one():
    api = Limiter(4, name="api")
    for twice in ([api, api.weighted(2)], [api.weighted(1), api.weighted(2)]):
        with pytest.raises(InvalidParameterError, match="so keep one of the two"):
            Node(limits=twice)
        for kept in twice:  # as it says: either one is accepted
            assert Node(limits=[kept])._bf_limits == (kept,)


def test_option_limits_given_the_limiter_class_says_make_one():
    with pytest.raises(
        InvalidParameterError, match=r"got the class Limiter; make one: Limiter\("
    ) as caught:
        Node(limits=[Limiter])
    assert "node 'Node'" in str(caught.value)
    with pytest.raises(InvalidParameterError, match=r"got 3$"):
        Node(limits=[3])
    made = Limiter(2)  # as it says
    assert Node(limits=[made])._bf_limits == (made,)


def test_option_offload_is_for_sync_nodes_which_then_run_off_the_loop():
    with pytest.raises(InvalidParameterError, match="offload=True is for synchronous nodes"):
        AsyncNode(offload=True)
    shared = {}
    AsyncFlow(start=Mark(name="m", offload=True)).run(shared)
    assert shared == {"m": True}


@pytest.mark.ray  # it checks that the RayExecutor the advice names exists
def test_option_executor_says_which_executors_and_where_they_go():
    from braidflow.executors import InProcessExecutor

    with pytest.raises(InvalidParameterError) as caught:
        BatchNode(executor=object())
    message = str(caught.value)
    assert "use braidflow.executors.RayExecutor(...), or leave it out for " in message
    assert "braidflow.executors.InProcessExecutor(), the default" in message
    assert callable(braidflow.executors.RayExecutor.prepare)  # what it names exists
    BatchNode(executor=InProcessExecutor())
    with pytest.raises(InvalidParameterError) as caught:
        Node(executor=InProcessExecutor())
    batch_kind, on_the_flow = "AsyncParallelBatchNode", "AsyncFlow(start=..., executor=...)"
    assert batch_kind in str(caught.value)
    assert on_the_flow in str(caught.value)

    class Squares(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1, 2]

        async def exec_async(self, item):
            return item * item

        async def post_async(self, shared, prep_res, exec_res):
            shared["squares"] = exec_res

    shared = {}
    AsyncFlow(start=Squares(executor=InProcessExecutor())).run(shared)
    flow = eval(
        on_the_flow.replace("...", "Squares()", 1).replace("...", "InProcessExecutor()"),
        {"AsyncFlow": AsyncFlow, "Squares": Squares, "InProcessExecutor": InProcessExecutor},
    )
    flow.run(shared)
    assert shared["squares"] == [1, 4]


def test_retry_and_limiter_numbers_say_what_they_must_be():
    with pytest.raises(InvalidParameterError, match=r"1 means: no retry"):
        Retry(attempts=0)
    assert Retry(attempts=1).attempts == 1
    with pytest.raises(InvalidParameterError, match="or None for no bound"):
        Limiter(0)
    assert Limiter(None).max_concurrent is None
    # per= alone (meant as "60 a minute") would limit nothing per minute: refused.
    with pytest.raises(InvalidParameterError, match="no rate= is given") as caught:
        Limiter(60, per=60)
    assert "write Limiter(rate=N, per=60)" in str(caught.value)
    minute = Limiter(rate=60, per=60)  # as it says, with N = 60
    assert (minute.rate, minute.per, minute.max_concurrent) == (60, 60, None)
    assert Limiter(rate=2).per == 1.0  # per= left out: a second


def test_a_bad_merge_rule_says_what_a_rule_is():
    with pytest.raises(InvalidParameterError, match=r"is not one of 'extend', 'sum'"):
        Parallel(Mark(), Mark(), merge={"k": "append"})
    with pytest.raises(InvalidParameterError) as caught:
        Parallel(Mark(), Mark(), merge={"k": 3})
    assert "a function (value before the fork, list of the branches' values) -> merged" in str(
        caught.value
    )

    def longest(before, values):  # the shape it says
        return max(values, key=len)

    shared = {"k": ""}
    Flow(start=Parallel(Write("k", "ab"), Write("k", "abc"), merge={"k": longest})).run(shared)
    assert shared["k"] == "abc"


def test_run_options_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flow = Flow(start=Mark(name="m"))
    with pytest.raises(InvalidParameterError, match=r"pass SQLiteStore\(path\) \(from braidflow"):
        flow.run({}, store="runs.db")
    from braidflow.stores import SQLiteStore as FromStores

    with FromStores("runs.db") as store:
        flow.run({}, store=store)
        with pytest.raises(InvalidParameterError, match="are for durable runs; pass store= too"):
            flow.run({}, run_id="nightly")
        flow.run({}, run_id="nightly", store=store)
        with pytest.raises(InvalidParameterError, match="needs shared to be a dict"):
            flow.run([], store=store)
        flow.run({}, store=store)
    with pytest.raises(InvalidParameterError, match=r"use braidflow.testing.VirtualClock\(\)"):
        flow.run({}, clock=3)
    flow.run({}, clock=braidflow.testing.VirtualClock())
    flow.run({})  # or leave it out
    with pytest.raises(InvalidParameterError, match=r"neither callable nor has an on_event"):
        flow.run({}, observers=[3])
    seen = []

    class Watcher:
        def on_event(self, event):
            seen.append(event.kind)

    flow.run({}, observers=[seen.append, Watcher()])
    assert [getattr(event, "kind", event) for event in seen].count("run_end") == 2


def test_run_without_shared_shows_how_to_give_it():
    node = Mark(name="m")
    with pytest.raises(TypeError, match=r"e\.g\. run\(\{\}\)"):
        node.run()
    exec("node.run({})", {**globals(), "node": node})


def test_resume_without_a_store_says_to_give_the_store(tmp_path):
    flow = Flow(start=Fails())
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError):
            flow.run({}, store=store, run_id="r")
        with pytest.raises(InvalidParameterError, match="needs the store the run was recorded in"):
            flow.resume("r", store=None)
        Fails.down = False
        assert flow.resume("r", store=store) == {"fetched": True}


class Fails(Node):
    """Fails while ``Fails.down``."""

    down = True

    def exec(self, prep_res):
        if Fails.down:
            raise ConnectionError("upstream down")
        return True

    def post(self, shared, prep_res, exec_res):
        shared["fetched"] = exec_res


@pytest.fixture(autouse=True)
def _upstream_down():
    Fails.down = True
    yield
    Fails.down = True


# -- merge conflicts -----------------------------------------------------------------------


def test_a_merge_conflict_at_a_list_fan_out_says_to_write_parallel_and_that_works():
    a, b, c = Mark(name="a"), Write("items", "b"), Write("items", "c")
    a >> [b, c]
    with pytest.raises(MergeConflict) as caught:
        Flow(start=a).run({"items": []})
    message = str(caught.value)
    assert "a fan-out written as a list (`a >> [b, c]`) has no place for rules" in message
    written = code_in(message)[-1]
    assert written == "a >> Parallel(b, c, merge={'items': 'extend'})"
    a, b, c = Mark(name="a"), Write("items", "b"), Write("items", "c")
    exec(written, {**globals(), "a": a, "b": b, "c": c, "Parallel": Parallel})
    shared = {"items": []}
    Flow(start=a).run(shared)
    assert shared == {"a": True, "items": ["b", "c"]}


@pytest.mark.parametrize(
    ("values", "start", "merged"),
    [((1, 2), 0, 3), ("xy", "", "y"), (({"x": 1}, {"y": 2}), {}, {"x": 1, "y": 2})],
)
def test_a_merge_conflict_at_a_parallel_gives_a_rule_that_fits_the_values(values, start, merged):
    if isinstance(start, dict):
        branches = [UpdateKey(f"b{n}", value) for n, value in enumerate(values)]
    else:
        branches = [Write("k", value) for value in values]
    with pytest.raises(MergeConflict) as caught:
        Flow(start=Parallel(*branches)).run({"k": start})
    (written,) = code_in(caught.value)
    assert written.startswith("Parallel(..., merge={'k': ")
    fork = eval(
        written.replace("...", "*branches"),
        {**globals(), "Parallel": Parallel, "branches": branches},
    )
    shared = {"k": start}
    Flow(start=fork).run(shared)
    assert shared["k"] == merged


class UpdateKey(Node):
    def __init__(self, name, value):
        super().__init__(name=name)
        self.value = value

    def post(self, shared, prep_res, exec_res):
        shared["k"].update(self.value)


def test_a_merge_conflict_at_a_parallel_with_rules_says_to_add_one():
    fork = Parallel(Write("k", "x"), Write("k", "y"), merge={"other": "last"}, name="fork")
    with pytest.raises(MergeConflict, match=r"add 'k': 'last' to the merge= of node 'fork'"):
        Flow(start=fork).run({})
    fork = Parallel(
        Write("k", "x"), Write("k", "y"), merge={"other": "last", "k": "last"}, name="fork"
    )
    shared = {}
    Flow(start=fork).run(shared)
    assert shared == {"k": "y"}


def test_a_merge_conflict_in_an_isolated_parallel_batch_flow_says_where_the_rule_goes():
    class Each(AsyncParallelBatchFlow):
        def prep(self, shared):
            return [{"n": 1}, {"n": 2}]

    class Count(Node):
        def post(self, shared, prep_res, exec_res):
            shared["total"] = shared["total"] + self.params["n"]

    with pytest.raises(MergeConflict) as caught:
        Each(start=Count(), isolate=True).run({"total": 0})
    (written,) = code_in(caught.value)
    assert written == "Each(..., isolate=True, merge={'total': 'sum'})"
    flow = eval(
        written.replace("...", "start=Count()"), {**globals(), "Each": Each, "Count": Count}
    )
    shared = {"total": 0}
    flow.run(shared)
    assert shared == {"total": 3}


# -- running -------------------------------------------------------------------------------


async def test_a_run_never_awaited_says_await_it():
    flow = AsyncFlow(start=AsyncMark(name="m"))
    with pytest.warns(RuntimeWarning) as caught:
        flow.run({})  # dropped: never runs
    first, second = code_in(caught.list[0].message)
    shared = {}
    namespace = {**globals(), "flow": flow, "shared": shared}
    for written in (first, second):
        await eval(f"({written.removeprefix('await ')})", namespace)
    assert shared == {"m": True}


async def test_a_sync_run_that_must_wait_on_the_loop_thread_says_await_run_async():
    api = Limiter(1)
    flow = Flow(start=Mark(name="m", limits=[api]))
    await api.acquire()
    try:
        with pytest.raises(AsyncUsageError) as caught:
            flow.run({})
    finally:
        api.release()
    (written,) = [code for code in code_in(caught.value) if code.startswith("await")]
    assert written == "await flow.run_async(shared)"
    await api.acquire()
    shared = {}
    waiting = asyncio.create_task(flow.run_async(shared))  # waits on the loop, as it says
    while api.statistics().waiting == 0:
        await asyncio.sleep(0)
    api.release()
    await waiting
    assert shared == {"m": True}


class Calls(AsyncNode):
    """An async node holding ``limits`` that calls ``inner()`` in a flow of its own."""

    def __init__(self, inner, meet=None, **options):
        super().__init__(**options)
        self.inner, self.meet = inner, meet

    async def exec_async(self, prep_res):
        if self.meet is not None:
            await self.meet.wait()
        shared = {}
        await AsyncFlow(start=self.inner()).run_async(shared)
        return shared

    async def post_async(self, shared, prep_res, exec_res):
        shared["inner"] = exec_res


def items_calling(inner, meet=None):
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(2)

        async def exec_async(self, item):
            if meet is not None:
                await meet.wait()
            shared = {}
            await AsyncFlow(start=inner()).run_async(shared)
            return shared

        async def post_async(self, shared, prep_res, exec_res):
            shared["inner"] = exec_res

    return Items


async def test_a_limiter_deadlock_of_nested_holders_says_three_ways_out_and_each_works():
    api = Limiter(2, name="api")
    items = items_calling(lambda: AsyncMark(name="m", limits=[api]), asyncio.Barrier(2))
    with pytest.raises(LimiterDeadlock) as caught:
        await items(limits=[api]).run_async({})
    message = str(caught.value)
    assert "Raise max_concurrent of 'api' above the number of attempts that hold a slot" in message
    assert "(or bound the outer batch's max_concurrency below it)" in message
    assert "or give each limiter to the outer or the inner node only" in message
    wider, narrow = Limiter(3, name="api"), Limiter(2, name="api")
    for limiter, options in (
        (wider, {}),  # max_concurrent raised above the 2 holders
        (narrow, {"max_concurrency": 1}),  # the outer batch bounded below it
    ):
        kind = items_calling(lambda limiter=limiter: AsyncMark(name="m", limits=[limiter]))
        shared = {}
        await kind(limits=[limiter], **options).run_async(shared)
        assert shared["inner"] == [{"m": True}, {"m": True}]
    shared = {}
    await items_calling(lambda: AsyncMark(name="m"))(limits=[api]).run_async(shared)  # outer only
    assert shared["inner"] == [{"m": True}, {"m": True}]


async def test_a_limiter_deadlock_on_itself_says_ask_once_or_raise_it_and_both_work():
    api = Limiter(1, name="api")
    with pytest.raises(LimiterDeadlock) as caught:
        await Calls(lambda: AsyncMark(name="m", limits=[api]), limits=[api]).run_async({})
    message = str(caught.value)
    assert "do not ask for it again inside (give it to the outer or the inner node only)" in message
    assert message.endswith("or raise max_concurrent")
    shared = {}
    await Calls(lambda: AsyncMark(name="m"), limits=[api]).run_async(shared)
    wider = Limiter(2, name="api")
    await Calls(lambda: AsyncMark(name="m", limits=[wider]), limits=[wider]).run_async(shared)
    assert shared == {"inner": {"m": True}}


async def numbers():
    for number in (1, 2):
        yield number


def test_batch_items_from_an_async_iterator_say_the_async_kind_or_a_list():
    class Read(BatchNode):
        def prep(self, shared):
            return numbers()

        def exec(self, item):
            return item * 10

        def post(self, shared, prep_res, exec_res):
            shared["read"] = exec_res

    with pytest.raises(BatchItemsError) as caught:
        Read().run({})
    message = str(caught.value)
    assert "derive Read from AsyncBatchNode in place of BatchNode" in message
    assert message.endswith("or return a list or generator")

    class Read(AsyncBatchNode):  # as it says, the body unchanged
        def prep(self, shared):
            return numbers()

        def exec(self, item):
            return item * 10

        def post(self, shared, prep_res, exec_res):
            shared["read"] = exec_res

    shared = {}
    Read().run(shared)
    assert shared == {"read": [10, 20]}

    with pytest.raises(BatchItemsError, match="make it an AsyncBatchNode"):
        batch_reading(numbers(), kind=BatchNode).run({})
    for items, kind in ((numbers(), AsyncBatchNode), ((n for n in (1, 2)), BatchNode)):
        shared = {}  # the async kind, or a generator
        batch_reading(items, kind).run(shared)
        assert shared == {"read": [1, 2]}


class _Reads:
    """A batch node's phases: its items are ``self.items``, given as they are."""

    def __init__(self, items):
        super().__init__()
        self.items = items

    def prep(self, shared):
        return self.items

    def exec(self, item):
        return item

    def post(self, shared, prep_res, exec_res):
        shared["read"] = exec_res


def batch_reading(items, kind=BatchNode):
    return type(kind.__name__, (_Reads, kind), {})(items)


def test_batch_items_that_are_not_items_say_what_items_are():
    with pytest.raises(BatchItemsError, match="return a list, tuple, generator or iterator"):
        batch_reading(42).run({})
    for items in ([1], (1,), iter([1]), None):
        shared = {}
        batch_reading(items).run(shared)
        assert shared["read"] == ([] if items is None else [1])

    class Runs(BatchFlow):
        def prep(self, shared):
            return [1, 2]

    with pytest.raises(BatchItemsError, match="must be a dict of params for one run"):
        Runs(start=Mark(name="m")).run({})

    class Runs(BatchFlow):
        def prep(self, shared):
            return [{"n": 1}, {"n": 2}]

    shared = {}
    Runs(start=Mark(name="m")).run(shared)
    assert shared == {"m": True}


async def test_a_node_cancelled_error_points_at_its_cause():
    class Gives(AsyncNode):
        async def exec_async(self, prep_res):
            raise asyncio.CancelledError("the upstream call was cancelled")

    with pytest.raises(NodeCancelledError, match=r"see __cause__") as caught:
        await Gives().run_async({})
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert str(caught.value.__cause__) == "the upstream call was cancelled"


# -- durable runs --------------------------------------------------------------------------


class Ask(Node):
    def exec(self, prep_res):
        return interrupt("Send this reply?")

    def post(self, shared, prep_res, exec_res):
        shared["approved"] = exec_res


def test_interrupt_without_a_store_shows_the_run_with_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flow, shared = Flow(start=Ask()), {}
    with pytest.raises(NotDurableError) as caught:
        flow.run(shared)
    written = str(caught.value).split("e.g. ", 1)[1]
    assert written == "flow.run(shared, store=SQLiteStore('runs.db'))"
    with pytest.raises(Suspended):
        eval(written, {**globals(), "flow": flow, "shared": shared, "SQLiteStore": SQLiteStore})


def test_durable_suspended_says_how_to_answer_and_that_works(tmp_path):
    flow = Flow(start=Ask())
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(Suspended) as caught:
            flow.run({}, store=store, run_id="ticket")
        written = str(caught.value).split("resume it with ", 1)[1]
        assert written == "flow.resume('ticket', store=..., input=answer)"
        done = eval(
            written.replace("...", "store"),
            {**globals(), "flow": flow, "store": store, "answer": "yes"},
        )
    assert done == {"approved": "yes"}


async def test_durable_suspended_inside_async_code_says_await_resume_async(tmp_path):
    flow = AsyncFlow(start=Ask())
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(Suspended) as caught:
            await flow.run_async({}, store=store, run_id="ticket")
        written = str(caught.value).split("resume it with ", 1)[1]
        assert written == "await flow.resume_async('ticket', store=..., input=answer)"
        done = await eval(
            written.removeprefix("await ").replace("...", "store"),
            {**globals(), "flow": flow, "store": store, "answer": "yes"},
        )
    assert done == {"approved": "yes"}


def test_durable_failed_run_note_says_how_to_resume_and_that_works(tmp_path):
    flow = Flow(start=Fails())
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError) as caught:
            flow.run({}, store=store, run_id="nightly")
        (note,) = [note for note in caught.value.__notes__ if "fix the cause" in note]
        written = note.split("resume it with ", 1)[1]
        assert written == "flow.resume('nightly', store=...)"
        Fails.down = False  # the cause, fixed
        done = eval(written.replace("...", "store"), {**globals(), "flow": flow, "store": store})
    assert done == {"fetched": True}


async def test_durable_failed_run_inside_async_code_says_await_resume_async(tmp_path):
    flow = AsyncFlow(start=Fails())
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError) as caught:
            await flow.run_async({}, store=store, run_id="nightly")
        (note,) = [note for note in caught.value.__notes__ if "fix the cause" in note]
        written = note.split("resume it with ", 1)[1]
        assert written == "await flow.resume_async('nightly', store=...)"
        Fails.down = False
        done = await eval(
            written.removeprefix("await ").replace("...", "store"),
            {**globals(), "flow": flow, "store": store},
        )
    assert done == {"fetched": True}


def test_durable_resume_with_input_of_a_run_not_waiting_says_without_input(tmp_path):
    flow = Flow(start=Fails())
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError):
            flow.run({}, store=store, run_id="r")
        Fails.down = False
        with pytest.raises(ResumeError, match="not waiting for input; resume it without input="):
            flow.resume("r", store=store, input="yes")
        assert flow.resume("r", store=store) == {"fetched": True}


class AskFor(Node):
    def exec(self, prep_res):
        return interrupt(f"{self.name}?")

    def post(self, shared, prep_res, exec_res):
        shared[self.name] = exec_res


def two_asking():
    return Flow(start=Parallel(AskFor(name="a"), AskFor(name="b")))


def answers_shown(said, questions):
    """The ``answers={...}`` a message shows, with each ``...`` filled by its id's prompt."""
    (shown,) = re.findall(r"answers=(\{[^}]*\})", str(said))
    prompts = {question.id: question.prompt.upper() for question in questions}
    return {ident: prompts[ident] for ident in eval(shown.replace("...", "None"))}


def test_durable_questions_suspended_on_several_says_answers_by_id_and_that_works(tmp_path):
    flow = two_asking()
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(Suspended) as caught:
            flow.run({}, store=store, run_id="r")
        written = str(caught.value).split("the others keep waiting: ", 1)[1]
        assert written.startswith("flow.resume('r', store=..., answers={")
        done = flow.resume("r", store=store, answers=answers_shown(written, caught.value.questions))
    assert done == {"a": "A?", "b": "B?"}


def test_durable_questions_input_for_several_says_answer_by_id_and_that_works(tmp_path):
    flow = two_asking()
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(Suspended) as suspended:
            flow.run({}, store=store, run_id="r")
        with pytest.raises(ResumeError, match="answer them by id") as caught:
            flow.resume("r", store=store, input="yes")
        answers = answers_shown(caught.value, suspended.value.questions)
        assert flow.resume("r", store=store, answers=answers) == {"a": "A?", "b": "B?"}


def test_durable_questions_an_unknown_id_says_answer_those_ids_and_that_works(tmp_path):
    flow = two_asking()
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(Suspended):
            flow.run({}, store=store, run_id="r")
        with pytest.raises(ResumeError, match="answer those ids") as caught:
            flow.resume("r", store=store, answers={"nope": 1})
        listed = re.findall(r"'([0-9a-f]{8})' at", str(caught.value))
        assert len(listed) == 2
        done = flow.resume("r", store=store, answers={ident: ident for ident in listed})
    assert sorted(done.values()) == sorted(listed)


@pytest.mark.parametrize(
    ("wrong", "said"),
    [({"input": "x", "answers": {"a": 1}}, "not both"), ({"answers": ["a"]}, "must be a dict")],
)
def test_durable_questions_bad_answers_say_what_answers_takes_and_that_works(tmp_path, wrong, said):
    flow = two_asking()
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(Suspended) as suspended:
            flow.run({}, store=store, run_id="r")
        with pytest.raises(InvalidParameterError, match=said) as caught:
            flow.resume("r", store=store, **wrong)
        assert "{question_id: answer, ...}" in str(caught.value)
        # As it says: a dict of the question ids (from Suspended.questions) to answers.
        answers = {question.id: 1 for question in suspended.value.questions}
        assert flow.resume("r", store=store, answers=answers) == {"a": 1, "b": 1}


def test_durable_resume_with_another_graph_says_rename_or_the_flow_as_it_was(tmp_path):
    with SQLiteStore(tmp_path / "runs.db") as store:
        for run_id in ("as-it-was", "renamed"):
            with pytest.raises(ConnectionError):
                Flow(start=Fails(name="fetch")).run({}, store=store, run_id=run_id)
        renamed = Flow(start=Fails(name="fetch-v2"))
        with pytest.raises(ResumeError) as refused:
            renamed.resume("as-it-was", store=store)
        said = str(refused.value)
        assert "resume with rename={'old name': 'new name'}" in said
        # Its only node renamed, it has none of the run's: the run's own flow comes first.
        assert "resume with the flow the run was started with (flow 'Flow')" in said
        Fails.down = False
        assert Flow(start=Fails(name="fetch")).resume("as-it-was", store=store) == {"fetched": True}
        assert renamed.resume("renamed", store=store, rename={"fetch": "fetch-v2"}) == {
            "fetched": True
        }


def test_durable_resume_with_another_flow_says_to_give_the_runs_flow_and_that_works(tmp_path):
    started = Flow(start=Fails(name="fetch"), name="nightly")
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError):
            started.run({}, store=store, run_id="r")
        with pytest.raises(ResumeError) as refused:
            Flow(start=Mark(name="other"), name="weekly").resume("r", store=store)
        said = str(refused.value)
        assert said.endswith(
            "No node of the run is in the flow given: resume with the flow the run was started "
            "with (flow 'nightly'); if every node was renamed, resume with rename={'old name': "
            "'new name'} for each"
        )
        Fails.down = False
        assert started.resume("r", store=store) == {"fetched": True}  # as it says


def test_durable_items_that_changed_say_prep_must_give_the_same(tmp_path):
    items = [1, 2, 3]

    class Square(BatchNode):
        def prep(self, shared):
            return list(items)

        def exec(self, item):
            if item == 3 and Fails.down:
                raise ConnectionError("down")
            return item * item

        def post(self, shared, prep_res, exec_res):
            shared["squares"] = exec_res

    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError):
            Flow(start=Square()).run({}, store=store, run_id="r")
        Fails.down = False
        items[0] = 10
        with pytest.raises(ResumeError, match="prep must give the same items, in the same order"):
            Flow(start=Square()).resume("r", store=store)
        items[0] = 1
        assert Flow(start=Square()).resume("r", store=store) == {"squares": [1, 4, 9]}


def test_durable_items_that_cannot_be_fingerprinted_say_use_data_and_keep_clients_apart(
    tmp_path,
):
    class Client:
        def __init__(self):
            self.lock = threading.Lock()

        def get(self, url):
            return f"got {url}"

    class Fetch(BatchNode):
        def prep(self, shared):
            return [(Client(), url) for url in ("a", "b")]

        def exec(self, item):
            client, url = item
            return client.get(url)

    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(CheckpointError, match="make items the data that says what to do"):
            Flow(start=Fetch()).run({}, store=store)

        class Fetch(BatchNode):  # as it says: the URLs as items, the client on the node
            client = Client()

            def prep(self, shared):
                return ["a", "b"]

            def exec(self, url):
                return self.client.get(url)

            def post(self, shared, prep_res, exec_res):
                shared["got"] = exec_res

        shared = {}
        Flow(start=Fetch()).run(shared, store=store)
    assert shared == {"got": ["got a", "got b"]}


class Keeps(Node):
    """Puts ``value`` into shared[key]."""

    def __init__(self, key, value):
        super().__init__()
        self.key, self.value = key, value

    def post(self, shared, prep_res, exec_res):
        shared[self.key] = self.value


class Returns(BatchNode):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def prep(self, shared):
        return [1]

    def exec(self, item):
        return self.value

    def post(self, shared, prep_res, exec_res):
        shared["result"] = exec_res


def answer_with_a_set(store):
    flow = Flow(start=Ask())
    with contextlib.suppress(Suspended):
        flow.run({}, store=store, run_id="asks")
    flow.resume("asks", store=store, input={"yes", "no"})


@pytest.mark.parametrize(
    ("run", "said"),
    [
        (
            lambda store: Flow(start=Keeps(1, "x")).run({}, store=store),
            "(or use serializer='pickle')",
        ),
        (
            lambda store: Flow(start=Keeps("x", {1, 2})).run({}, store=store),
            "keep plain data in shared, or use a store with serializer='pickle'",
        ),
        (  # no node ran yet: it names the shared given to run(), not the flow as a node
            lambda store: Flow(start=Mark(), name="nightly").run({"x": {1, 2}}, store=store),
            "flow 'nightly': the initial shared['x'] holds a set that cannot be saved as json "
            "(the set is not JSON data); pass plain data in the shared given to run(), or use "
            "a store with serializer='pickle'",
        ),
        (
            lambda store: Flow(start=Mark(), name="nightly").run({1: "x"}, store=store),
            "flow 'nightly': the initial shared[1] has a key of type int; a durable run stores "
            "shared as JSON, whose keys are strings (or use serializer='pickle')",
        ),
        (answer_with_a_set, "give plain data, or use a store with serializer='pickle'"),
        (
            lambda store: Flow(start=Returns({1, 2})).run({}, store=store),
            "return plain data from exec, or use serializer='pickle'",
        ),
    ],
)
def test_durable_values_json_cannot_keep_say_pickle_and_that_works(tmp_path, run, said):
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(CheckpointError) as caught:
            run(store)
    assert said in str(caught.value)
    with SQLiteStore(tmp_path / "pickled.db", serializer="pickle") as store:  # as it says
        run(store)


class Label(enum.StrEnum):
    POSITIVE = "positive"


class Size(enum.IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    ("value", "said", "as_said"),
    [
        (
            Label.POSITIVE,
            "(the enum Label.POSITIVE would come back as the plain str 'positive'; store "
            "Label.POSITIVE.value, and Label(value) to have the enum again); keep plain data in "
            "shared, or use a store with serializer='pickle'",
            Label.POSITIVE.value,
        ),
        (
            {"seen": collections.Counter("aab")},
            "(the Counter at ['seen'] would come back as a plain dict; store dict(value) instead)",
            {"seen": dict(collections.Counter("aab"))},
        ),
        (
            {Size.ONE: 2},
            "(the key <Size.ONE: 1> (Size) would come back as the string "
            '"1"; key it by a str: str(Size.ONE.value))',
            {str(Size.ONE.value): 2},
        ),
    ],
)
def test_durable_values_json_gives_back_as_their_base_say_what_to_store_and_that_works(
    tmp_path, value, said, as_said
):
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(CheckpointError) as caught:
            Flow(start=Keeps("x", value)).run({}, store=store)
        assert said in str(caught.value)
        Flow(start=Keeps("x", as_said)).run({}, store=store, run_id="as-said")
        assert braidflow.stored_state("as-said", store=store)["x"] == as_said
    with SQLiteStore(tmp_path / "pickled.db", serializer="pickle") as store:  # or pickle
        Flow(start=Keeps("x", value)).run({}, store=store, run_id="pickled")
        assert braidflow.stored_state("pickled", store=store)["x"] == value


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            {"update": {"seen": {1, 2}}},
            "flow 'job': update['seen'] holds a set that cannot be saved as json (the set is "
            "not JSON data); pass plain data in update= (the run is saved as json)",
        ),
        (
            {"migrate": lambda shared: {**shared, "seen": {1, 2}}},
            "flow 'job', after migrate=: shared['seen'] holds a set that cannot be saved as json "
            "(the set is not JSON data); make migrate= leave plain data (the run is saved as json)",
        ),
    ],
)
def test_durable_values_given_to_fork_or_resume_say_plain_data_and_that_works(
    tmp_path, given, said
):
    flow = Flow(start=Fails(name="fetch"), name="job")
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError):
            flow.run({}, store=store, run_id="r")
        Fails.down = False
        again = flow.fork if "update" in given else flow.resume
        with pytest.raises(CheckpointError) as caught:
            again("r", store=store, **given)
        assert str(caught.value) == said
        # As it says: plain data (a list for the set).
        plain = {"update": {"seen": [1, 2]}, "migrate": lambda shared: {**shared, "seen": [1, 2]}}
        final = again("r", store=store, **{name: plain[name] for name in given})
        assert final == {"seen": [1, 2], "fetched": True}


def test_durable_values_with_braidflows_own_key_say_rename_it(tmp_path):
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(CheckpointError, match="rename that key"):
            Flow(start=Keeps("x", {"__braidflow__": 1})).run({}, store=store)
        Flow(start=Keeps("x", {"braidflow": 1})).run({}, store=store)


def test_store_run_id_already_used_says_choose_another_or_resume_it(tmp_path):
    flow = Flow(start=Fails())
    with SQLiteStore(tmp_path / "runs.db") as store:
        with pytest.raises(ConnectionError):
            flow.run({}, store=store, run_id="nightly")
        with pytest.raises(StoreError, match="choose another, or resume that run"):
            flow.run({}, store=store, run_id="nightly")
        Fails.down = False
        flow.run({}, store=store, run_id="nightly-2")
        assert flow.resume("nightly", store=store) == {"fetched": True}


def test_sqlite_store_paths_say_what_to_give(tmp_path):
    with pytest.raises(StoreError, match="does not exist; create it first"):
        SQLiteStore(tmp_path / "missing" / "runs.db")
    (tmp_path / "missing").mkdir()
    SQLiteStore(tmp_path / "missing" / "runs.db").close()
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match=r"give the path of a file \(it is made if missing\)"):
        SQLiteStore(tmp_path / "dir.db")
    SQLiteStore(tmp_path / "dir.db" / "runs.db").close()
    (tmp_path / "notes.txt").write_text("not a database, " * 100)
    with pytest.raises(StoreError, match="use another file"):
        SQLiteStore(tmp_path / "notes.txt").runs()
    with SQLiteStore(tmp_path / "another.db") as store:
        assert store.runs() == []


def test_a_closed_store_says_open_it_again_and_that_works(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.close()
    with pytest.raises(StoreError) as caught:
        Flow(start=Mark()).run({}, store=store)
    written = str(caught.value).split("open the file again: ", 1)[1].split(";")[0].rstrip(".")
    assert written.startswith("SQLiteStore(path)")
    path = tmp_path / "runs.db"
    with eval(written, {"SQLiteStore": SQLiteStore, "path": path}) as again:
        Flow(start=Mark()).run({}, store=again)


# -- tracing and extras --------------------------------------------------------------------


def test_a_trace_in_a_missing_directory_says_create_it_first(tmp_path):
    from braidflow.tracing import JSONLTrace, Timeline

    for make in (JSONLTrace, Timeline):
        with pytest.raises(InvalidParameterError, match="create it first or choose another path"):
            make(tmp_path / "traces" / "run.out")
    (tmp_path / "traces").mkdir()
    with JSONLTrace(tmp_path / "traces" / "run.jsonl") as trace:
        Flow(start=Mark()).run({}, observers=[trace, Timeline(tmp_path / "traces" / "run.html")])
    assert (tmp_path / "traces" / "run.html").exists()


def test_the_extras_named_exist():
    """`pip install 'braidflow[tracing]'` and `'braidflow[ray]'`, as the ImportErrors
    say, install what they need (checked in pyproject.toml: no network here)."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    named = {"tracing": ("rich", "opentelemetry-api"), "ray": ("ray",)}
    for extra, packages in named.items():
        for package in packages:
            assert any(req.startswith(package) for req in extras[extra]), (extra, package)
    sources = Path(braidflow.__file__).parent
    said = {
        "tracing/_progress.py": "pip install 'braidflow[tracing]'",
        "tracing/_otel.py": "pip install 'braidflow[tracing]'",
        "executors/_ray.py": "pip install 'braidflow[ray]'",
    }
    for module, words in said.items():
        assert words in (sources / module).read_text(), module


def advising_modules():
    """The modules of braidflow whose errors or warnings tell the user what to do:
    a message (the first argument of a call of an error class or of a warning)
    with a word of advice in it."""
    import ast
    from pathlib import Path

    advice = re.compile(
        r"\b(use|pass|write|call|give|put|derive|make|add|run it|resume it|create it|"
        r"choose another|rename|declare|raise max_concurrent|keep|return|leave it out|"
        r"wait for it|upgrade|fix the cause|point TARGET)\b"
    )
    sources = Path(braidflow.__file__).parent
    found = set()
    for path in sorted(sources.rglob("*.py")):
        module = path.relative_to(sources).with_suffix("").as_posix().replace("/", ".")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            called = ast.unparse(node.func)
            if not re.search(r"(Error|Conflict|Deadlock|Suspended|Exception|warn\w*)$", called):
                continue
            said = " ".join(
                part.value
                for part in ast.walk(node.args[0])
                if isinstance(part, ast.Constant) and isinstance(part.value, str)
            )
            if advice.search(said):
                found.add(module)
    return found


def test_every_module_that_gives_advice_is_in_the_catalogue():
    """A message added later that tells the user what to do must be followed
    here too (or in tests/test_cli.py for the command)."""
    found = advising_modules()
    assert {"_flow", "_merge", "durable._session", "cli._running"} <= found  # the scan works
    missing = [
        module
        for module in sorted(found)
        if not module.startswith("cli.") and module not in __doc__
    ]
    assert missing == []
