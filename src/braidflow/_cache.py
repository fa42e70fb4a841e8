"""`Cache`: where and for how long a node keeps its exec results, and the key each is kept under.

A key is a hash of the node's name, the version of its exec code (derived
from the compiled code unless given), the store's serializer, and the input:
the prep result (a batch's item), or what the cache's ``key=`` makes of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

from ._errors import CacheError, add_note
from ._options import check_cache_options
from .durable._fingerprint import Unfingerprintable, stable_text
from .stores._base import CacheEntry, CacheStore

__all__ = ["Cache", "cache_key", "exec_version"]


class Cache:
    """A result cache for a node's ``exec``: ``Node(cache=Cache(...))``.

    An exec result is kept under a key made of the node's name, the
    version of its exec code, and its input (the prep result, or a batch
    node's item). A later call with the same key, in this run or another,
    in this process or another that shares the store, takes the result kept
    instead of running ``exec``: no limiter, retry or timeout applies to it,
    and the run emits a ``cache_hit`` event. Items of one run that need the
    same key at once compute it once; the others wait for it. A failed
    exec, or a fallback's result, is never kept: the items waiting then
    compute their own, unless the failure stops their batch
    (``on_error="raise"``), when they stop with it.

    ``cache=True`` on a node is ``Cache()``: results in the run's store.

    Args:
        store: Where results are kept: a `CacheStore` such as `SQLiteStore`
            or `MemoryStore` (shared with runs, or one of its own). ``None``
            (default): the run's own store, which the run must then have
            (``run(shared, store=...)``).
        ttl: Seconds a kept result may be used, from when it was stored;
            older ones are computed again. ``None`` (default): no limit.
        version: A name for the version of exec's code (``"prompt-v3"``):
            changing it misses every result kept before. ``None`` (default):
            derived from exec's compiled code, its default values, and the
            functions and simple values (strings, numbers, tuples of them)
            its closure holds, so editing exec misses (a comment or a blank
            line does not). What exec's code calls by a global name
            (helpers, a prompt kept elsewhere, the model) is not in it: name
            a version when those change.
        key: A function of the prep result (a batch node's item) that gives
            what identifies it, as plain data: for inputs that hold more than
            matters (a client, a timestamp) or that have no stable text.
            ``None`` (default): the input itself (its JSON, keys sorted, or
            a canonical text for other values), hashed.
        refresh: Do not use results stored before this cache was made:
            compute each once again, and keep the new one.
        clock: What gives the time results are stored at, in seconds since
            the epoch (default ``time.time``); tests give one they move by hand.

    Raises:
        InvalidParameterError: For an option that cannot work.
    """

    __slots__ = ("_clock", "_key", "_refresh", "_since", "_store", "_ttl", "_version")

    def __init__(
        self,
        *,
        store: CacheStore | None = None,
        ttl: float | None = None,
        version: str | None = None,
        key: Callable[[Any], Any] | None = None,
        refresh: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._ttl = check_cache_options(store, ttl, version, key, refresh, clock, CacheStore)
        self._store = store
        self._version = version
        self._key = key
        self._refresh = refresh
        self._clock: Callable[[], float] = time.time if clock is None else clock
        self._since = self._clock() if refresh else 0.0

    @property
    def store(self) -> CacheStore | None:
        """The store results are kept in; ``None``: the run's."""
        return self._store

    @property
    def ttl(self) -> float | None:
        """Seconds a kept result may be used; ``None``: no limit."""
        return self._ttl

    @property
    def version(self) -> str | None:
        """The version given; ``None``: derived from exec's code."""
        return self._version

    @property
    def key(self) -> Callable[[Any], Any] | None:
        """The function that makes an input's key; ``None``: the input itself."""
        return self._key

    @property
    def refresh(self) -> bool:
        """Whether results stored before this cache was made are computed again."""
        return self._refresh

    def __repr__(self) -> str:
        given = [
            f"{name}={value!r}"
            for name, value in (
                ("store", self._store),
                ("ttl", self._ttl),
                ("version", self._version),
                ("key", self._key),
            )
            if value is not None
        ]
        if self._refresh:
            given.append("refresh=True")
        return f"Cache({', '.join(given)})"

    def _usable(self, entry: CacheEntry) -> bool:
        """Whether a kept entry may be used now: not stored before a refresh,
        not older than the ttl."""
        stored = entry[1]
        if stored < self._since:
            return False
        return self._ttl is None or self._clock() - stored < self._ttl


def cache_key(cache: Cache, node: Any, item: Any, index: int | None, serializer: str) -> str:
    """The key ``node``'s result for input ``item`` (item ``index`` of a
    batch) is kept under, in a store with ``serializer``.

    Raises:
        CacheError: If the input has no stable text to make a key of.
    """
    version = cache._version or exec_version(node, index)
    given = item
    if cache._key is not None:
        try:
            given = cache._key(item)
        except Exception as error:
            where = f" on item {index}" if index is not None else ""
            add_note(error, f"the cache's key= of {node._describe()} raised this{where}")
            raise
    try:
        text = stable_text(given)
    except Unfingerprintable as why:
        what = "what its cache's key= gave" if cache._key is not None else "its input"
        where = f" (item {index})" if index is not None else ""
        raise CacheError(
            f"{node._describe()}: the result cache cannot make a key of {what}{where}: {why}; "
            "give the cache a key= that returns plain data (a str, numbers, lists or dicts "
            "of them) naming what exec depends on: `Cache(key=lambda item: item.id)`",
            node=node._display_name(),
            item_index=index,
        ) from None
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{node.name}\0{version}\0{serializer}\0".encode("utf-8", "surrogatepass"))
    digest.update(text)
    return digest.hexdigest()


# -- the version of exec's code ----------------------------------------------------------

# Each exec function's version, made once; dropped with the function (a class made
# at run time, in a test, leaves nothing behind).
_VERSIONS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def exec_version(node: Any, index: int | None = None) -> str:
    """A version of ``node``'s exec code: a hash of its compiled code (the
    code of what it wraps, its default values, and the functions and simple
    values its closure holds: `_feed_function`), the same in every process of
    one Python version, changed by an edit of the code. Made once per function.

    Raises:
        CacheError: If exec has no Python code to read (a builtin).
    """
    function = getattr(node, node._bf_plan.exec)
    function = getattr(function, "__func__", function)
    try:
        known = _VERSIONS.get(function)
    except TypeError:  # a callable that cannot be weakly referenced: made each time
        known = None
    if known is not None:
        return known
    digest = hashlib.blake2b(digest_size=16)
    if not _feed_function(digest, function, set()):
        raise CacheError(
            f"{node._describe()}: its exec ({function!r}) has no Python code to derive the "
            "result cache's version from; name the version: `Cache(version='1')` (change it "
            "when exec changes)",
            node=node._display_name(),
            item_index=index,
        )
    version = digest.hexdigest()
    with contextlib.suppress(TypeError):
        _VERSIONS[function] = version
    return version


def _feed_function(digest: Any, function: Any, seen: set[int]) -> bool:
    """Add the code of ``function`` (unwrapped), its default values, and the
    functions and simple values its closure holds, to ``digest``; False if it
    has no code.

    A default counts by its stable text (as a cache key's input does), a
    function by its code; a default with no stable text (a client, a lock)
    by its type. A value held in the closure counts if it is simple (a str,
    number, bool, ``None``, bytes, or a tuple of them: what a factory's prompt
    or model name is), or a function; other values there (a class, a client,
    a list kept as state) do not. Nothing is added for a function without
    defaults or such values, so its version is as it was before they counted.
    """
    for _ in range(100):  # decorators made with functools.wraps: what they wrap
        inner = getattr(function, "__wrapped__", None)
        if inner is None:
            break
        function = getattr(inner, "__func__", inner)
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType) or id(function) in seen:
        return isinstance(code, types.CodeType)
    seen.add(id(function))
    _feed(digest, code)
    defaults = getattr(function, "__defaults__", None)
    if defaults:
        digest.update(b"(defaults")
        for value in defaults:
            _feed_default(digest, value, seen)
        digest.update(b")")
    keyword_defaults = getattr(function, "__kwdefaults__", None)
    if keyword_defaults:
        digest.update(b"(kwdefaults")
        for name in sorted(keyword_defaults):
            digest.update(f"{name}=".encode("utf-8", "surrogatepass"))
            _feed_default(digest, keyword_defaults[name], seen)
        digest.update(b")")
    for index, cell in enumerate(getattr(function, "__closure__", None) or ()):
        try:
            held = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(held, types.FunctionType | types.MethodType):
            _feed_function(digest, getattr(held, "__func__", held), seen)
        elif _simple(held):
            digest.update(f"(cell{index}".encode())
            _feed(digest, held)
            digest.update(b")")
    return True


def _feed_default(digest: Any, value: Any, seen: set[int]) -> None:
    """Add a default value of a function to ``digest``: a function by its
    code, another value by its stable text, or by its type if it has none."""
    if isinstance(value, types.FunctionType | types.MethodType):
        digest.update(b"(function")
        known = _feed_function(digest, getattr(value, "__func__", value), seen)
        digest.update(b")")
        if known:
            return
    try:
        text = stable_text(value)
    except Unfingerprintable:  # only its address tells it apart: count what it is
        kind = type(value)
        text = f"type:{kind.__module__}.{kind.__qualname__}".encode("utf-8", "surrogatepass")
    digest.update(b"(value%d:" % len(text))
    digest.update(text)
    digest.update(b")")


# The kinds of value a closure's cell counts by: immutable, and the same in every process.
_SIMPLE = frozenset((str, int, float, bool, type(None), bytes))


def _simple(value: Any) -> bool:
    """Whether ``value`` is a simple value: a str, number, bool, ``None``,
    bytes, or a tuple of them (nested), whose repr is its identity."""
    kind = type(value)
    if kind is tuple:
        try:
            return all(_simple(part) for part in value)
        except RecursionError:
            return False
    return kind in _SIMPLE


def _feed(digest: Any, value: Any) -> None:
    """Add a value of a code object to ``digest``: what the code does, not
    where it is (no file name, line numbers or qualified name)."""
    if isinstance(value, types.CodeType):
        digest.update(b"(code")
        digest.update(value.co_code)
        digest.update(getattr(value, "co_exceptiontable", b""))
        digest.update(repr(_shape(value)).encode())
        for constant in value.co_consts:
            _feed(digest, constant)
        digest.update(b")")
    elif isinstance(value, tuple):
        digest.update(b"(tuple")
        for part in value:
            _feed(digest, part)
        digest.update(b")")
    elif isinstance(value, frozenset):  # its order changes with the hash seed: sorted
        digest.update(b"(frozenset")
        for text in sorted(repr(part) for part in value):
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b",")
        digest.update(b")")
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode("utf-8", "surrogatepass"))


def _shape(code: types.CodeType) -> tuple[Any, ...]:
    """The names and counts a code object's instructions refer to."""
    return (
        code.co_name,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
    )
