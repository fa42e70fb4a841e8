"""RayExecutor: each batch item's exec runs as a Ray task.

The node is stripped of what stays in the driver (its successors, and all
braidflow keeps on it: limiters, cache, executor...) and put in Ray's object
store once per batch (if it cannot be pickled, the error names the attribute
at fault); each item then is one task that calls exec on it and sends back
the result, or the exception exec raised, with the usage it reported and the
data it emitted.
Ray must be installed (``pip install 'braidflow[ray]'``).
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import os
import pickle
import socket
import sys
import threading
from functools import partial
from typing import Any

from .._context import REMOTE, RemoteExec, current_item, observed
from .._errors import InvalidParameterError, add_note, message_of
from .._usage import report
from ._base import DispatchTimeout, still_running

try:
    import ray
    from ray import cloudpickle  # pickles what pickle cannot: lambdas, local classes
except ImportError as missing:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "braidflow.executors.RayExecutor needs ray: pip install 'braidflow[ray]'"
    ) from missing

__all__ = ["RayExecutor"]


def _pickled(value: Any) -> bytes:
    data: bytes = cloudpickle.dumps(value)  # type: ignore[no-untyped-call]
    return data


# What braidflow keeps on a node (its ``_bf_`` attributes) serves the driver,
# which runs the node's limiters, retries, timeout, cache and executor, and
# is not sent to Ray: a worker needs only the node's names, for messages. An
# attribute braidflow adds later stays in the driver too, unless listed here.
_TRAVELS = ("_bf_name", "_bf_display")


class RayExecutor:
    """Run each batch item's ``exec`` as a Ray task, sync or async.

    Args:
        address: A Ray cluster to join (``"ray://host:10001"``, ``"auto"``).
            ``None`` joins the Ray instance this process already runs, or
            starts a local one (on this machine's cores).
        num_cpus: For a local instance it starts: how many CPUs it offers.
        resources: For a local instance it starts: custom resources
            (``{"gpu_box": 1}``).
        runtime_env: Ray's runtime environment for the workers (packages,
            working directory, environment variables): what a cluster needs
            to import your nodes' code.
        ray_remote_args: Options for every task (``{"num_cpus": 1}``,
            ``{"num_gpus": 1}``, ``{"memory": ...}``). Ray's own retry of a
            task whose worker died is off (``max_retries=0``): the node's
            ``max_retries`` says how often its exec runs.

    The executor starts (or joins) Ray on first use, or on ``with``; ``close()``
    (or leaving the ``with``) shuts down a Ray instance it started.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        resources: dict[str, float] | None = None,
        runtime_env: dict[str, Any] | None = None,
        ray_remote_args: dict[str, Any] | None = None,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise InvalidParameterError(f"RayExecutor: address={address!r} must be a string")
        if num_cpus is not None and (
            isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1
        ):
            raise InvalidParameterError(f"RayExecutor: num_cpus={num_cpus!r} must be an int >= 1")
        for option, value in (
            ("resources", resources),
            ("runtime_env", runtime_env),
            ("ray_remote_args", ray_remote_args),
        ):
            if value is not None and not isinstance(value, dict):
                raise InvalidParameterError(f"RayExecutor: {option}={value!r} must be a dict")
        self.address = address
        self.num_cpus = num_cpus
        self.resources = resources
        self.runtime_env = runtime_env
        self.ray_remote_args = dict(ray_remote_args or {})
        self._started = False  # this executor started the Ray instance
        self._lock = threading.Lock()
        self._task: Any = None

    def __repr__(self) -> str:
        where = self.address or "local"
        return f"RayExecutor({where!r})"

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Start or join Ray now (the first batch does it otherwise)."""
        with self._lock:
            if self._task is not None:
                return
            if not ray.is_initialized():
                ray.init(
                    address=self.address,
                    num_cpus=self.num_cpus,
                    resources=self.resources,
                    runtime_env=self.runtime_env,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
                self._started = True
            # Ray retries a task whose worker died 3 times by default: an exec
            # (and its side effects) would run 4 times under max_retries=1. The
            # node's own retries (a new task each) are the ones that count.
            self._task = ray.remote(_run_exec).options(**{"max_retries": 0, **self.ray_remote_args})

    def close(self) -> None:
        """Shut Ray down if this executor started it; joining again is allowed."""
        with self._lock:
            if self._started and ray.is_initialized():
                ray.shutdown()
            self._started = False
            self._task = None

    def prepare(self, node: Any, method: str) -> _RayDispatch:
        """Check the node can be sent to Ray and put it in the object store.

        Raises:
            InvalidParameterError: If the node cannot be pickled (naming what
                cannot), or uses the old ``exec(shared, item)`` form, whose
                ``shared`` stays in the driver.
        """
        if node._bf_plan.exec_wants_shared:
            raise InvalidParameterError(
                f"{node._describe()}: its exec takes shared (exec(shared, item)), which stays "
                "in the driver; with an executor, exec gets only its item",
                node=node._display_name(),
            )
        shipped = _remote_copy(node)
        self.start()
        try:
            stored = ray.put(shipped)  # pickles it: the check, with no second pickling
        except Exception:
            _check_pickles(shipped, node)  # names what cannot be pickled
            raise  # it pickles: Ray failed for another reason
        return _RayDispatch(self._task, stored, method, node._bf_plan.exec_coro, node)


def _remote_copy(node: Any) -> Any:
    """The node as a worker gets it: without what only the driver uses."""
    shipped = copy.copy(node)
    state = shipped.__dict__
    for name in [name for name in state if name.startswith("_bf_") and name not in _TRAVELS]:
        del state[name]
    state["successors"] = {}
    state["params"] = dict(node.params)
    return shipped


def _check_pickles(shipped: Any, node: Any) -> None:
    """Raise InvalidParameterError, naming the attribute at fault, if the node
    cannot be pickled."""
    try:
        _pickled(shipped)
    except Exception as error:
        culprit = ""
        for name, value in vars(shipped).items():
            try:
                _pickled(value)
            except Exception:
                culprit = f"its attribute {name!r} ({type(value).__name__}) "
                break
        raise InvalidParameterError(
            f"{node._describe()} cannot be sent to Ray: {culprit or ''}cannot be pickled "
            f"({type(error).__name__}: {error}); make such objects inside exec (or in a "
            "module-level cache there), or run this node in this process",
            node=node._display_name(),
        ) from error


class _RayDispatch:
    """One batch's items, each a Ray task on the stored node."""

    __slots__ = ("_coro", "_method", "_node", "_stored", "_task")

    def __init__(self, task: Any, stored: Any, method: str, coro: bool, node: Any) -> None:
        self._task, self._stored, self._method, self._coro = task, stored, method, coro
        self._node = node

    def _submit(self, args: tuple[Any, ...]) -> Any:
        try:
            attempt = self._node.cur_retry
            watched = observed() is not None  # (data emitted is sent back only then)
            return self._task.remote(self._stored, self._method, args, attempt, self._coro, watched)
        except (TypeError, pickle.PicklingError) as error:
            raise InvalidParameterError(
                f"{self._node._describe()}: an item cannot be sent to Ray ({error}); items "
                "must pickle",
                node=self._node._display_name(),
            ) from error

    async def run_async(self, *args: Any) -> Any:
        """Submit the call and await it; cancelling this cancels the task."""
        reference = self._submit(args)
        try:
            outcome = await reference
        except asyncio.CancelledError:
            ray.cancel(reference)
            # (if stopped for its timeout)
            still_running(partial(_when_ended, reference, self._node, contextvars.copy_context()))
            raise
        except ray.exceptions.RayError as error:
            raise _ray_failure(self._node, error) from None
        return _result(self._node, outcome)

    def run(self, *args: Any, timeout: float | None = None) -> Any:
        """Submit the call and wait for it; a timeout or an interrupt cancels the task."""
        reference = self._submit(args)
        try:
            outcome = ray.get(reference, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(reference)
            still_running(partial(_when_ended, reference, self._node, contextvars.copy_context()))
            raise DispatchTimeout(f"the Ray task outlived {timeout} s") from None
        except ray.exceptions.RayError as error:
            raise _ray_failure(self._node, error) from None
        except BaseException:
            ray.cancel(reference)
            raise
        return _result(self._node, outcome)


def _when_ended(reference: Any, node: Any, context: Any, callback: Any) -> None:
    """Call ``callback`` once the task of ``reference`` has ended (cancelled:
    Ray stops it at its next Python code; a call it is blocked in ends first),
    after counting, in the attempt's ``context``, the usage it reported (and
    emitting the data it emitted), as an attempt left running at home does."""

    def ended(future: Any) -> None:
        try:
            sent = future.result()[2]
        except Exception:  # cancelled before it began, or its worker died: nothing came back
            sent = ()
        try:
            context.run(_replay, node, sent)
        except Exception:  # (a report refused: the attempt has failed already)
            pass
        finally:
            callback()

    reference.future().add_done_callback(ended)


def _ray_failure(node: Any, error: BaseException) -> BaseException:
    """What to raise when Ray itself failed (not exec): a worker that cannot
    load the node, a result that cannot be sent back, or the cause Ray gives."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ray.exceptions.RaySystemError) and isinstance(
        cause.client_exc, ImportError
    ):
        return _cannot_import(node, cause.client_exc)
    if (
        isinstance(error, ray.exceptions.RayTaskError)
        and isinstance(cause, Exception)
        and not isinstance(cause, ray.exceptions.RayError)
    ):  # not exec's own error, which comes back as a value: sending its result back
        item = current_item()
        which = "its exec's result" if item is None else f"the result of its item {item}"
        return InvalidParameterError(
            f"{node._describe()}: {which} cannot be sent back from Ray: it cannot be "
            f"pickled ({type(cause).__name__}: {cause}); return plain data (text, numbers, "
            "lists, dicts, dataclasses), not an object that holds a lock, a connection or "
            "an open file",
            node=node._display_name(),
        )
    if isinstance(cause, BaseException):
        return cause
    failure = RuntimeError(f"{node._describe()}: the Ray task failed: {error}")
    return failure


def _cannot_import(node: Any, missing: ImportError) -> ImportError:
    """The error for a worker that cannot import what the node needs (the
    node's class, an item's), with the ``runtime_env`` that ships it."""
    module = sys.modules.get((missing.name or "").partition(".")[0])
    paths = getattr(module, "__path__", None)  # a package: its directory
    path = next(iter(paths), None) if paths else getattr(module, "__file__", None)
    shipped = repr(path) if path else "'path/to/your_module'"
    return type(missing)(
        f"{node._describe()}: a Ray worker cannot load the node or its item to run its "
        f"exec ({missing}): the workers must be able to import its code; have the executor "
        f"give it to them as it starts Ray: RayExecutor(runtime_env={{'py_modules': "
        f"[{shipped}]}}) (or runtime_env={{'working_dir': '.'}}: your project's directory), "
        "or install it where they run",
        name=missing.name,
        path=missing.path,
    )


def _replay(node: Any, sent: Any) -> None:
    """What an exec reported and emitted in a worker, in the run, as if here
    (the usage in its budget, events and store; the data to its observers)."""
    for kind, value in sent:
        if kind == "usage":
            report(node, value)
        else:
            node.emit(pickle.loads(value))


def _result(node: Any, outcome: tuple[str, Any, list[Any]]) -> Any:
    kind, value, sent = outcome
    if sent:
        _replay(node, sent)
    if kind == "ok":
        return value
    if kind == "error":
        raise value
    if kind == "cancelled":  # (by someone else: the engine awaits no task it cancels)
        raise RuntimeError(f"{node._describe()}: its Ray task was cancelled")
    name, message, where = value  # an exception that could not travel
    raise type(name, (RuntimeError,), {"__module__": "braidflow.remote"})(
        f"{message} (raised in a Ray task on {where}; its {name} could not be pickled)"
    )


def _run_exec(
    node: Any, method: str, args: tuple[Any, ...], attempt: int, coro: bool, watched: bool
) -> Any:
    """The task: call exec on the node in this worker; send back its outcome,
    with the usage it reported and (if the run is ``watched``) the data it
    emitted, in order (counted and emitted in the run when they come back)."""
    node.__dict__["_bf_cur_retry"] = attempt
    call = getattr(node, method)
    where = f"{socket.gethostname()} (pid {os.getpid()})"
    remote = RemoteExec(f"a Ray task on {where}", watched, _pickled)
    token = REMOTE.set(remote)
    try:
        result = _run_coroutine(call(*args)) if coro else call(*args)
    except Exception as error:
        add_note(error, f"raised in a Ray task on {where}")
        sendable = _sendable(error)
        if sendable is None:
            return "lost", (type(error).__name__, message_of(error), where), remote.sent
        return "error", sendable, remote.sent
    except KeyboardInterrupt:  # how Ray cancels a task: what it reported still counts
        return "cancelled", None, remote.sent
    finally:
        REMOTE.reset(token)
    return "ok", result, remote.sent


def _comes_back(value: Any) -> bool:
    """Whether ``value`` survives the trip to the driver: pickled, then unpickled."""
    try:
        pickle.loads(_pickled(value))
    except Exception:
        return False
    return True


def _sendable(error: BaseException, depth: int = 0) -> Any:
    """``error`` as it can travel back: itself if it comes back whole; else a
    `_Rebuilt`, which makes an instance of its class again without calling
    its ``__init__`` (an exception unpickles by calling ``cls(*args)``, which
    fails when ``__init__`` wants other arguments: openai's
    ``RateLimitError(message, *, response, body)``); ``None`` if neither does."""
    if _comes_back(error):
        return error
    rebuilt = _Rebuilt(error, depth)
    if _comes_back(rebuilt):
        return rebuilt
    return None


class _Rebuilt:
    """Unpickles as an instance of the error's class, made by its ``__new__``,
    with its args, its attributes that travel (its notes among them), and
    its cause and context if they travel."""

    __slots__ = ("parts",)

    def __init__(self, error: BaseException, depth: int) -> None:
        attributes = {name: value for name, value in vars(error).items() if _comes_back(value)}
        cause, context = (
            _sendable(other, depth + 1) if other is not None and depth < 8 else None
            for other in (error.__cause__, error.__context__)
        )
        self.parts = (
            type(error),
            error.args,
            attributes,
            cause,
            context,
            error.__suppress_context__,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, self.parts


def _rebuild(
    cls: type[BaseException],
    args: tuple[Any, ...],
    attributes: dict[str, Any],
    cause: BaseException | None,
    context: BaseException | None,
    suppress_context: bool,
) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    vars(error).update(attributes)
    error.__cause__, error.__context__ = cause, context
    error.__suppress_context__ = suppress_context
    return error


def _run_coroutine(coroutine: Any) -> Any:
    """Run an async exec in this worker. Ray cancels a task by raising
    KeyboardInterrupt in it, which Python delivers only while running code:
    the loop wakes up every 50 ms so that a cancelled exec stops promptly
    (its task is then cancelled by ``asyncio.run`` on the way out)."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            handle[0] = loop.call_later(0.05, tick)

        handle = [loop.call_later(0.05, tick)]
        try:
            return await coroutine
        finally:
            handle[0].cancel()

    return asyncio.run(main())
