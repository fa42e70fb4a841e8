"""The public namespace: complete, sorted, and reporting the public module."""

from types import ModuleType

import braidflow
import braidflow as pocketflow

POCKETFLOW_NAMES = [
    "BaseNode",
    "Node",
    "BatchNode",
    "Flow",
    "BatchFlow",
    "AsyncNode",
    "AsyncBatchNode",
    "AsyncParallelBatchNode",
    "AsyncFlow",
    "AsyncBatchFlow",
    "AsyncParallelBatchFlow",
]


def test_all_lists_every_public_name_sorted():
    public = {
        name
        for name in dir(braidflow)
        if not name.startswith("_") and not isinstance(getattr(braidflow, name), ModuleType)
    }
    public.discard("annotations")
    assert set(braidflow.__all__) == public
    assert braidflow.__all__ == sorted(braidflow.__all__)


def test_public_objects_report_the_public_module():
    for name in braidflow.__all__:
        obj = getattr(braidflow, name)
        if name == "MISSING":  # a value, not a class or function
            assert repr(obj) == "braidflow.MISSING"
            continue
        assert obj.__module__ == "braidflow", name


def test_pocketflow_names_are_importable_under_the_pocketflow_alias():
    for name in POCKETFLOW_NAMES:
        assert isinstance(getattr(pocketflow, name), type)


def test_aliases_are_the_same_classes():
    assert braidflow.BatchAsyncFlow is braidflow.AsyncBatchFlow
    assert braidflow.Graph is braidflow.Flow
    assert braidflow.BatchGraph is braidflow.BatchFlow
    assert braidflow.AsyncGraph is braidflow.AsyncFlow
    assert braidflow.AsyncBatchGraph is braidflow.AsyncBatchFlow
    assert braidflow.AsyncParallelBatchGraph is braidflow.AsyncParallelBatchFlow


def test_isinstance_relations_match_pocketflow():
    assert issubclass(braidflow.AsyncFlow, braidflow.Flow)
    assert issubclass(braidflow.AsyncFlow, braidflow.AsyncNode)
    assert issubclass(braidflow.AsyncNode, braidflow.Node)
    assert issubclass(braidflow.AsyncParallelBatchNode, braidflow.BatchNode)
    assert issubclass(braidflow.AsyncParallelBatchFlow, braidflow.BatchFlow)
    assert issubclass(braidflow.Flow, braidflow.BaseNode)


def test_errors_form_one_tree_with_builtin_bases():
    assert issubclass(braidflow.InvalidParameterError, ValueError)
    assert issubclass(braidflow.WiringError, TypeError)
    assert issubclass(braidflow.NodeDefinitionError, TypeError)
    assert issubclass(braidflow.RunError, RuntimeError)
    assert issubclass(braidflow.AsyncUsageError, RuntimeError)
    assert issubclass(braidflow.BatchItemsError, TypeError)
    assert issubclass(braidflow.NodeTimeoutError, TimeoutError)
    assert issubclass(braidflow.WiringWarning, UserWarning)  # warnings are warnings
    assert issubclass(braidflow.NodeDefinitionWarning, UserWarning)
    for name in braidflow.__all__:
        obj = getattr(braidflow, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, braidflow.BraidflowError), name


def test_a_bad_option_is_both_a_value_error_and_a_type_error():
    import pytest

    with pytest.raises(TypeError, match="Limiter"):
        braidflow.Node(limits=[3])
    with pytest.raises(ValueError, match="Limiter"):
        braidflow.Node(limits=[3])
