"""What the nodes of a typed flow get as ``shared``: a view of the store the engine works on.

A dataclass or model state is read and written by attribute
(``shared.question``), a TypedDict by key; writes are validated when the
flow asks, and a model's frozen fields are not written. The store under a
view stays what it is without one (a dict, a durable run's dict, a
branch's `SharedView`), so isolation, merging and checkpoints work as they
do for untyped flows.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

from ._errors import StateError
from ._state_check import describe


class StateType(Protocol):
    """What a view reads of its state type (`braidflow._state.StateType`)."""

    cls: Any
    name: str
    kind: str
    hints: dict[str, Any]
    required: frozenset[str]
    writable: frozenset[str]
    validate: bool

    def validated(self, key: str, value: Any, store: Any) -> Any: ...


__all__ = ["StateView", "store_under", "view_class"]


class StateView:
    """Base of the views: the store under it and the state type it shows."""

    __slots__ = ("_bf_store",)
    _bf_store: Any

    def __init__(self, store: Any) -> None:
        object.__setattr__(self, "_bf_store", store)


def store_under(shared: Any) -> Any:
    """The store the engine works on: under a view, or ``shared`` itself."""
    if isinstance(shared, StateView):
        return shared._bf_store
    return shared


class AttributeView(StateView):
    """``shared`` in a flow whose state is a dataclass or a pydantic model:
    each key an attribute, read from and written to the store under it. The
    class's methods and properties work on it (bound to the view);
    ``isinstance(shared, State)`` does not hold, and pydantic's own methods
    need a real instance."""

    __slots__ = ()
    _bf_type: StateType

    def __getattr__(self, name: str) -> Any:
        # Reached for what is not a key, the state class's own attributes, and
        # for a key not set yet (its property raised AttributeError).
        state = type(self)._bf_type
        if name in state.hints:
            raise _not_set(state, name)
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        try:
            found = inspect.getattr_static(state.cls, name)
        except AttributeError:
            raise AttributeError(
                f"{state.name} has no key or attribute {name!r} "
                f"(its keys: {', '.join(map(repr, state.hints))})"
            ) from None
        getter = getattr(type(found), "__get__", None)
        return found if getter is None else getter(found, self, state.cls)

    def __setattr__(self, name: str, value: Any) -> None:
        state = type(self)._bf_type
        if name not in state.writable:
            raise _refused(state, name)
        if state.validate:
            value = state.validated(name, value, self._bf_store)
        self._bf_store[name] = value

    # Read and written by key too: a node written for a plain dict works in a
    # typed flow, and the key is checked alike.
    def __getitem__(self, key: str) -> Any:
        if key not in type(self)._bf_type.hints:
            raise KeyError(key)
        return self._bf_store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.__setattr__(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        """``shared.get(key, default)``, as on a dict (a key named ``get`` hides it)."""
        if key not in type(self)._bf_type.hints:
            return default
        return self._bf_store.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._bf_store

    def __delattr__(self, name: str) -> None:
        raise AttributeError(
            f"the keys of a {type(self)._bf_type.name} state cannot be deleted; set a value "
            "(None, if its type allows it)"
        )

    def __delitem__(self, key: str) -> None:  # ``del shared["key"]``, as on a dict: the same
        self.__delattr__(key)

    def __dir__(self) -> list[str]:
        return sorted({*type(self)._bf_type.hints, *dir(type(self)._bf_type.cls)})

    def __repr__(self) -> str:
        state = type(self)._bf_type
        store = self._bf_store
        shown = ", ".join(f"{key}={store[key]!r}" for key in state.hints if key in store)
        return f"<{state.name} view: {shown}>"


def _refused(state: StateType, name: str) -> Exception:
    """The error for a write to what is not a key of the state, or to a
    model's frozen field (refused at the write, as pydantic refuses it: at
    the end of the run, the values nodes read would be refused)."""
    if name not in state.hints:
        return AttributeError(
            f"{state.name} has no key {name!r} to set "
            f"(its keys: {', '.join(map(repr, state.hints))})"
        )
    return StateError(
        f"{state.name}.{name} is a frozen field: nodes cannot write it (it keeps the "
        f"value the run started with); leave {name} as it is, or declare it without "
        "`frozen=True`",
        key=name,
    )


def _not_set(state: StateType, name: str) -> AttributeError:
    """The error for a key of the state that has no value yet (a dataclass
    field with ``init=False`` and no default, read before a node set it)."""
    return AttributeError(
        f"{state.name}.{name} is not set: it has no default and no node set it yet; "
        f"set it first (`shared.{name} = ...`), or give it a default in {state.name}"
    )


def _key(name: str) -> property:
    def read(view: Any) -> Any:
        try:
            return view._bf_store[name]
        except KeyError:
            # (Python then calls __getattr__, which raises this one again.)
            raise _not_set(type(view)._bf_type, name) from None

    return property(read, doc=f"shared[{name!r}]")


class MappingView(StateView, MutableMapping[Any, Any]):
    """``shared`` in a flow whose TypedDict state is validated (``validate=True``):
    the store under it, each write checked against the key's type first."""

    __slots__ = ()
    _bf_type: StateType

    def __getitem__(self, key: Any) -> Any:
        return self._bf_store[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self._bf_store.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._bf_store

    def __setitem__(self, key: Any, value: Any) -> None:
        store = self._bf_store
        store[key] = type(self)._bf_type.validated(key, value, store)

    def __delitem__(self, key: Any) -> None:
        state = type(self)._bf_type
        if key in state.required and key in self._bf_store:
            raise StateError(
                f"shared[{key!r}] is a required key of {state.name}: a node cannot delete it "
                f"(shared would not fit {state.name}); set a value of its type "
                f"({describe(state.hints[key])}), or declare it `NotRequired[...]` in "
                f"{state.name}",
                key=key,
            )
        del self._bf_store[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._bf_store)

    def __len__(self) -> int:
        return len(self._bf_store)

    def __repr__(self) -> str:
        return f"<{type(self)._bf_type.name} view of {self._bf_store!r}>"


def view_class(state: StateType) -> type[StateView] | None:
    """The class of the views of ``state``'s stores; ``None`` where nodes get
    the store itself (a TypedDict that is not validated)."""
    if state.kind == "typeddict":
        if not state.validate:
            return None
        return type(f"{state.name}View", (MappingView,), {"__slots__": (), "_bf_type": state})
    namespace: dict[str, Any] = {"__slots__": (), "_bf_type": state}
    for key in state.hints:
        namespace[key] = _key(key)
    return type(f"{state.name}View", (AttributeView,), namespace)
