"""Checking a value against a type at run time, with the standard library only.

`problem` says what in a value does not fit a type annotation (``None`` if
it fits): classes by ``isinstance``, unions, ``Literal``, containers item by
item, TypedDicts key by key. A form it cannot check is taken as fitting.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any, Final

__all__ = ["describe", "problem", "strip"]

# The wrappers of a TypedDict's keys that say nothing about the value.
_QUALIFIERS: Final = frozenset({"Required", "NotRequired", "ReadOnly", "Final", "ClassVar"})
_UNION_TYPES: Final = (typing.Union, types.UnionType)


def _qualifier(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is not None and getattr(origin, "_name", None) in _QUALIFIERS


def strip(annotation: Any) -> tuple[Any, list[Any]]:
    """The type inside ``Annotated``/``Required``/``NotRequired``/``ReadOnly``
    wrappers, and the metadata of every ``Annotated`` met, outermost first."""
    metadata: list[Any] = []
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            metadata.extend(annotation.__metadata__)
            annotation = annotation.__origin__
        elif _qualifier(annotation):
            (annotation,) = typing.get_args(annotation)
        else:
            return annotation, metadata


def describe(annotation: Any) -> str:
    """An annotation as a reader writes it: ``list[str]``, ``int | None``."""
    annotation = strip(annotation)[0]
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    origin = typing.get_origin(annotation)
    if origin in _UNION_TYPES:
        return " | ".join(describe(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    if isinstance(annotation, type) and origin is None:
        return annotation.__qualname__
    text = repr(annotation)
    return text.replace("typing.", "").replace("collections.abc.", "")


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def problem(value: Any, annotation: Any, where: str) -> str | None:
    """What in ``value`` does not fit ``annotation``: ``"shared['n'] should be
    int, got 'x' (str)"``, naming the place (``where``, then inside it); or
    ``None`` if it fits, or the annotation is a form not checked here."""
    try:
        return _problem(value, strip(annotation)[0], where, 0)
    except RecursionError:  # nested too deep to tell: taken as fitting
        return None


def _wrong(value: Any, annotation: Any, where: str) -> str:
    return f"{where} should be {describe(annotation)}, got {_shown(value)}"


def _problem(value: Any, annotation: Any, where: str, depth: int) -> str | None:
    if annotation is Any or annotation is object:
        return None
    if annotation is None or annotation is type(None):
        return None if value is None else _wrong(value, annotation, where)
    if isinstance(annotation, typing.TypeVar):
        bound = annotation.__bound__
        return None if bound is None else _problem(value, strip(bound)[0], where, depth)
    if isinstance(annotation, typing.NewType):
        return _problem(value, strip(annotation.__supertype__)[0], where, depth)
    origin = typing.get_origin(annotation)
    if origin is None:
        return _of_class(value, annotation, where, depth)
    args = typing.get_args(annotation)
    if origin in _UNION_TYPES:
        found = [_problem(value, strip(arg)[0], where, depth) for arg in args]
        if any(problem is None for problem in found):
            return None
        # One alternative the value's class fits: say what is wrong inside it.
        inner = [
            problem
            for arg, problem in zip(args, found, strict=True)
            if isinstance(typing.get_origin(arg) or arg, type)
            and _of_its_class(value, typing.get_origin(arg) or arg)
        ]
        return inner[0] if len(inner) == 1 else _wrong(value, annotation, where)
    if origin is typing.Literal:
        for arg in args:
            if value == arg and type(value) is type(arg):
                return None
        return _wrong(value, annotation, where)
    if origin is type:
        expected = strip(args[0])[0] if args else Any
        if not isinstance(value, type):
            return _wrong(value, annotation, where)
        if isinstance(expected, type) and not issubclass(value, expected):
            return _wrong(value, annotation, where)
        return None
    if not isinstance(origin, type):
        return None  # a form this check does not know: taken as fitting
    if origin is collections.abc.Callable:  # type: ignore[comparison-overlap]
        return None if callable(value) else _wrong(value, annotation, where)
    if not _instance(value, origin):
        return _wrong(value, annotation, where)
    return _items(value, origin, args, where, depth)


def _instance(value: Any, cls: type) -> bool:
    try:
        return isinstance(value, cls)
    except TypeError:  # a Protocol not marked runtime_checkable, say: not checked
        return True


def _of_its_class(value: Any, cls: type) -> bool:
    """Whether ``value`` is of the class ``cls`` names (a TypedDict: a mapping)."""
    return isinstance(value, collections.abc.Mapping) if _typeddict(cls) else _instance(value, cls)


def _of_class(value: Any, annotation: Any, where: str, depth: int) -> str | None:
    if not isinstance(annotation, type):
        return None  # a string (an unresolved name), a special form: not checked
    if _typeddict(annotation):
        if not isinstance(value, collections.abc.Mapping):
            return _wrong(value, annotation, where)
        return mapping_problem(value, annotation, where, depth + 1)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return None  # int is acceptable where float is (PEP 484's numeric tower)
    if annotation is complex and isinstance(value, int | float) and not isinstance(value, bool):
        return None
    return None if _instance(value, annotation) else _wrong(value, annotation, where)


def _plain_class(annotation: Any) -> bool:
    """Whether an item's annotation is a class its items fit by ``isinstance``
    alone (not a TypedDict, nor ``float`` or ``complex``, which take ints)."""
    return (
        isinstance(annotation, type)
        and annotation is not float
        and annotation is not complex
        and not _typeddict(annotation)
    )


def _typeddict(cls: type) -> bool:
    return issubclass(cls, dict) and hasattr(cls, "__required_keys__")


def mapping_problem(value: Any, cls: type, where: str, depth: int) -> str | None:
    """What in the mapping ``value`` does not fit the TypedDict ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for key in cls.__required_keys__:  # type: ignore[attr-defined]
        if key not in value:
            return f"{where} has no key {key!r} ({describe(hints.get(key, Any))})"
    for key, item in value.items():
        if key not in hints:
            return f"{where}[{key!r}] is not a key of {cls.__qualname__}"
        found = _problem(item, strip(hints[key])[0], f"{where}[{key!r}]", depth + 1)
        if found is not None:
            return found
    return None


def _items(value: Any, origin: type, args: tuple[Any, ...], where: str, depth: int) -> str | None:
    """Check the items of a container whose class fits."""
    if not args:
        return None
    if issubclass(origin, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif args == ((),):  # tuple[()]
            args = ()
        if len(args) != len(value):
            return f"{where} should be {describe(origin[args])}, got {_shown(value)}"  # type: ignore[index]
        for index, (item, arg) in enumerate(zip(value, args, strict=True)):
            found = _problem(item, strip(arg)[0], f"{where}[{index}]", depth + 1)
            if found is not None:
                return found
        return None
    if issubclass(origin, collections.abc.Mapping):
        key_type = strip(args[0])[0]
        value_type = strip(args[1])[0] if len(args) > 1 else Any
        for key, item in value.items():
            found = _problem(key, key_type, f"a key of {where}", depth + 1)
            if found is None:
                found = _problem(item, value_type, f"{where}[{key!r}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list | set | frozenset | collections.deque) or (
        issubclass(origin, collections.abc.Collection) and isinstance(value, tuple)
    ):
        item_type = strip(args[0])[0]
        if _plain_class(item_type):  # the usual list[str]: its items looked at once, first
            try:
                if all(isinstance(item, item_type) for item in value):
                    return None
            except TypeError:  # a Protocol not marked runtime_checkable: as below
                pass
        unordered = isinstance(value, set | frozenset)
        for index, item in enumerate(value):
            place = f"an item of {where}" if unordered else f"{where}[{index}]"
            found = _problem(item, item_type, place, depth + 1)
            if found is not None:
                return found
    return None  # other iterables (generators, iterators) are not read to check them
