"""What a node class defines, decided once when the class is created.

Which user method serves each phase (``exec_async`` or ``exec``, ``async def``
or ``def``), the older forms (``exec(shared, prep_res)``, ``process_after_fail``),
overrides of PocketFlow's internals (``_exec``, ``_run``, ``_orch``), and
whether a step's copy can be made cheaply. The engine reads the plan; it
never inspects methods per call.
"""

from __future__ import annotations

import copy
import difflib
import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from ._errors import NodeDefinitionError, NodeDefinitionWarning

__all__ = [
    "HOOKS",
    "Plan",
    "check_setup",
    "copy_node",
    "default",
    "has_plain_copy",
    "is_default",
    "preset",
    "variant",
]

HOOKS = ("before_prep", "after_exec", "on_error")


# Each preset's async variant and parallel variant: what errors tell a class
# to derive from instead (the names are braidflow's public classes).
_ASYNC_VARIANTS = {
    "BaseNode": "AsyncNode",
    "Node": "AsyncNode",
    "BatchNode": "AsyncBatchNode",
    "ParallelBatchNode": "AsyncParallelBatchNode",
    "Flow": "AsyncFlow",
    "BatchFlow": "AsyncBatchFlow",
}
_PARALLEL_VARIANTS = {
    "BatchNode": "ParallelBatchNode",
    "AsyncBatchNode": "AsyncParallelBatchNode",
    "BatchFlow": "AsyncParallelBatchFlow",
    "AsyncBatchFlow": "AsyncParallelBatchFlow",
}


def preset(cls: type) -> str:
    """The name of the braidflow class ``cls`` is, or derives from first."""
    for klass in cls.__mro__:
        module = klass.__module__
        if module == "braidflow" or module.startswith("braidflow."):
            return klass.__name__
    return "BaseNode"


def variant(cls: type, kind: str) -> str | None:
    """The ``"async"`` or ``"parallel"`` variant of ``cls``'s preset, if any."""
    table = _ASYNC_VARIANTS if kind == "async" else _PARALLEL_VARIANTS
    return table.get(preset(cls))


def default(function: Any) -> Any:
    """Mark an engine method as the default that a subclass may replace."""
    function._braidflow_default = True
    return function


def is_default(function: Any) -> bool:
    """Whether ``function`` is braidflow's own default of a phase (``is True``:
    a `unittest.mock.Mock` answers any attribute with a true Mock)."""
    return getattr(function, "_braidflow_default", False) is True


def _required_positional_count(function: Any) -> int | None:
    """Count the positional parameters without defaults (self included); None if *args."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if (
            parameter.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            and parameter.default is inspect.Parameter.empty
        ):
            count += 1
    return count


def _is_coroutine_function(function: Any) -> bool:
    return inspect.iscoroutinefunction(inspect.unwrap(function))


class Plan:
    """Which user method serves each phase of a class, and how to call it."""

    __slots__ = (
        "copy_plain",
        "custom_exec",
        "custom_orch",
        "custom_orch_async",
        "custom_routing",
        "custom_run",
        "custom_run_async",
        "custom_set_params",
        "exec",
        "exec_coro",
        "exec_wants_shared",
        "fallback",
        "fallback_coro",
        "fallback_wants_shared",
        "fast",
        "hook_coro",
        "hooked",
        "is_async",
        "plain",
        "post",
        "post_coro",
        "prep",
        "prep_coro",
        "single_exec",
    )

    def __init__(self, cls: type[Any]) -> None:
        is_async = cls._bf_async
        self.prep, self.prep_coro = self._pick(
            cls, ("prep_async", "prep") if is_async else ("prep",)
        )
        self.exec, self.exec_coro = self._pick(
            cls, ("exec_async", "exec") if is_async else ("exec",)
        )
        self.post, self.post_coro = self._pick(
            cls, ("post_async", "post") if is_async else ("post",)
        )
        fallbacks: tuple[str, ...] = ("exec_fallback", "process_after_fail")
        if is_async:
            fallbacks = ("exec_fallback_async", *fallbacks)
        self.fallback, self.fallback_coro = self._pick(cls, fallbacks)
        # The oldest documented forms take the shared store first:
        # exec(shared, prep_res) and process_after_fail(shared, prep_res, exc).
        self.exec_wants_shared = self._takes(cls, self.exec, 3)
        self.fallback_wants_shared = self._takes(cls, self.fallback, 4)
        # PocketFlow's internals that user code overrides: PocketFlow calls
        # self._exec(prep_res) for the exec stage, self._run(shared) for a
        # whole node and self._orch(shared) for a flow's walk; so does braidflow
        # when a class replaces them.
        self.custom_exec = not cls._bf_is_flow and not is_default(cls._exec)
        self.custom_run = not is_default(cls._run)
        self.custom_run_async = not is_default(cls._run_async)
        self.custom_orch = cls._bf_is_flow and not is_default(getattr(cls, "_orch", None))
        self.custom_orch_async = cls._bf_is_flow and not is_default(
            getattr(cls, "_orch_async", None)
        )
        # How a flow routes (get_next_node) and how a step gets its params
        # (set_params): PocketFlow's methods, which a class may replace.
        self.custom_routing = cls._bf_is_flow and not is_default(
            getattr(cls, "get_next_node", None)
        )
        self.custom_set_params = not is_default(getattr(cls, "set_params", None))
        # KayGraph's lifecycle hooks, where the class defines any: before_prep,
        # after_exec and on_error (a method; a string is the on_error policy).
        self.hook_coro: dict[str, bool] = {}
        for hook in HOOKS:
            function = getattr(cls, hook, None)
            if callable(function) and not is_default(function):
                self.hook_coro[hook] = _is_coroutine_function(function)
        self.hooked = bool(self.hook_coro)
        self.is_async = is_async
        # One item's exec (not a batch, not a flow, no _exec of its own), and
        # no hook: a plain node; with PocketFlow's own _run (_run_async), a
        # driver's fast path fits it. A step's copy is a plain copy of the
        # __dict__, its params set by the engine, unless the class says otherwise.
        self.single_exec = (
            cls._bf_batch == "single" and not cls._bf_is_flow and not self.custom_exec
        )
        self.plain = self.single_exec and not self.hooked
        self.fast = self.plain and not (self.custom_run_async if is_async else self.custom_run)
        self.copy_plain = has_plain_copy(cls) and not self.custom_set_params
        if not is_async:
            for name, coro in (
                (self.prep, self.prep_coro),
                (self.exec, self.exec_coro),
                (self.post, self.post_coro),
                (self.fallback, self.fallback_coro),
                *self.hook_coro.items(),
            ):
                if coro:
                    base, instead = preset(cls), variant(cls, "async") or "AsyncNode"
                    raise NodeDefinitionError(
                        f"{cls.__name__}.{name} is 'async def', but {cls.__name__} is a "
                        f"synchronous node; derive it from {instead} in place of {base}, so "
                        "its coroutines are awaited (run it in an AsyncFlow, or alone with "
                        "node.run(shared))",
                        node=cls.__name__,
                    )
            _warn_unused_async(cls)
        _warn_misspelled(cls)

    @staticmethod
    def _pick(cls: type[Any], names: tuple[str, ...]) -> tuple[str, bool]:
        """The phase's method (the first of ``names`` the class has) and
        whether what it returns is awaited: an ``..._async`` method's always,
        as PocketFlow awaits it (a plain ``def`` that returns a coroutine, or
        an ``async def`` under a decorator that hides it, included)."""
        for name in names:
            function = getattr(cls, name, None)
            if function is not None and not is_default(function):
                return name, name.endswith("_async") or _is_coroutine_function(function)
        function = getattr(cls, names[0])
        return names[0], _is_coroutine_function(function)

    @staticmethod
    def _takes(cls: type[Any], name: str, positional: int) -> bool:
        function = getattr(cls, name)
        if is_default(function):
            return False
        return _required_positional_count(function) == positional


_COPY_HOOKS = ("__copy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__")


def has_plain_copy(cls: type) -> bool:
    """True when copy.copy(instance) would just copy ``__dict__`` into a new object."""
    if cls.__new__ is not object.__new__:  # type: ignore[comparison-overlap]
        return False
    for klass in cls.__mro__:
        if klass is object:
            continue
        if vars(klass).get("__slots__"):  # slot values live outside __dict__
            return False
        if any(hook in vars(klass) for hook in _COPY_HOOKS):
            return False
    return True


def copy_node(node: Any) -> Any:
    """The fresh shallow copy a flow runs at each step (as ``copy.copy`` would make)."""
    cls = node.__class__
    if has_plain_copy(cls):
        new = object.__new__(cls)
        new.__dict__.update(node.__dict__)
        return new
    return copy.copy(node)


_ASYNC_FORMS = {
    "prep_async": "prep",
    "exec_async": "exec",
    "post_async": "post",
    "exec_fallback_async": "exec_fallback",
}


def _warn_unused_async(cls: type[Any]) -> None:
    """Warn of a synchronous node class with async forms of its phases of
    its own: nothing calls them (PocketFlow neither), its sync ones run."""
    if cls.__module__.startswith("braidflow."):
        return
    for name, sync in _ASYNC_FORMS.items():
        if not is_default(getattr(cls, name)):
            base, instead = preset(cls), variant(cls, "async") or "AsyncNode"
            warnings.warn(
                f"{cls.__name__}.{name} is never called: {cls.__name__} is a synchronous "
                f"node, whose {sync} runs instead; derive it from {instead} in place of "
                f"{base} to run {name}",
                NodeDefinitionWarning,
                stacklevel=4,
            )


# The phases whose names are easy to get a letter wrong in (a short name
# such as ``post`` is left out: ``posts`` may well be a method of its own).
_PHASES = ("prep_async", "exec_async", "post_async", "exec_fallback", "exec_fallback_async")


def _warn_misspelled(cls: type[Any]) -> None:
    """Warn of a method of the class's own whose name is a phase's, nearly
    (``exec_asnyc``): nothing calls it, and the phase it means runs as inherited."""
    if cls.__module__.startswith("braidflow."):
        return
    known = {name for klass in cls.__mro__ for name in vars(klass) if klass is not cls}
    for name, value in vars(cls).items():
        if name.startswith("_") or name in known or not callable(value):
            continue
        meant = difflib.get_close_matches(name, _PHASES, n=1, cutoff=0.85)
        if meant:
            warnings.warn(
                f"{cls.__name__}.{name} looks like {meant[0]} misspelled: nothing calls "
                f"{name}, so {cls.__name__} runs the {meant[0]} it inherits; rename it "
                f"{meant[0]} (or give it a name further from it)",
                NodeDefinitionWarning,
                stacklevel=4,
            )


def check_setup(cls: type[Any]) -> None:
    """Make a node class's own ``__init__`` check, when it returns, that it ran
    `BaseNode`'s (through ``super().__init__()``).

    Forgetting that call used to pass silently and fail later, far away, with
    ``AttributeError: ... no attribute 'successors'``. Only construction pays
    (one dict lookup); braidflow's own classes, and a subclass that inherits an
    ``__init__`` already checked, are left alone.
    """
    init = cls.__init__
    if getattr(init, "_bf_sets_up", False):
        return
    if cls.__module__.startswith("braidflow."):  # braidflow's presets call it
        if "__init__" in vars(cls):
            init._bf_sets_up = True
        return
    cls.__init__ = _checked_init(init, cls)


def _checked_init(init: Callable[..., None], cls: type[Any]) -> Callable[..., None]:
    owner = getattr(init, "__qualname__", f"{cls.__qualname__}.__init__").rsplit(".", 1)[0]

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if "successors" not in self.__dict__:
            used_by = "" if owner == cls.__qualname__ else f" (the __init__ of {cls.__qualname__})"
            raise NodeDefinitionError(
                f"{owner}.__init__{used_by} returned without calling super().__init__(), so "
                f"this {type(self).__name__} was not set up as a node (it has no successors "
                f"or params, and would fail when wired or run); call super().__init__() in "
                f"{owner}.__init__, anywhere in it, passing on any options "
                f"({'start=' if self._bf_is_flow else 'max_retries='}, name=, ...)",
                node=type(self).__name__,
            )

    __init__._bf_sets_up = True  # type: ignore[attr-defined]
    return __init__
