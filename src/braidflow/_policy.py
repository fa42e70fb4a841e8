"""Retry policy: how many attempts, how long to wait between them, which errors count.

The decision "retry after this failure, and after how long?" is made here
once; the sync and async drivers in ``_node`` only carry it out.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ._errors import InvalidParameterError, SetupError
from ._options import check_number

__all__ = ["Retry", "next_delay"]

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy for a node's ``exec``: attempts, backoff, jitter and a filter.

    The wait after the failed attempt ``n`` (0-based) is
    ``min(delay * backoff ** n, max_delay)``, then reduced by a random share of
    at most ``jitter`` (``jitter=1.0`` is "full jitter": anywhere from 0 to the
    computed wait). When the last attempt fails, or an error does not match
    ``retry_on``, the node's fallback (``exec_fallback``) gets the error.

    ``Node(max_retries=n, wait=s)`` is the same as
    ``Node(retry=Retry(attempts=n, delay=s, backoff=1.0))``.

    Args:
        attempts: How many times ``exec`` may run in all; at least 1.
        delay: Seconds to wait after the first failure.
        backoff: Factor applied to the wait after each further failure; >= 1.
        max_delay: Upper bound on any single wait, or ``None`` for no bound.
        jitter: Share of each wait, from 0 to 1, that is randomly taken off.
        retry_on: Exception types, or a predicate taking the exception, that
            decide which failures are retried. Others go straight to the fallback.

    Raises:
        InvalidParameterError: For a value that cannot work (``attempts=0``,
            a negative delay, ``jitter`` outside 0..1, ...).
    """

    attempts: int = 3
    delay: float = 0.0
    backoff: float = 2.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: RetryOn = Exception
    _random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise InvalidParameterError(f"Retry(attempts={self.attempts!r}) must be an int")
        if self.attempts < 1:
            raise InvalidParameterError(
                f"Retry(attempts={self.attempts}) must be at least 1 (1 means: no retry)"
            )
        check_number(
            self.delay, f"Retry(delay={self.delay!r})", "a finite number of seconds >= 0",
            at_least=0,
        )  # fmt: skip
        check_number(
            self.backoff, f"Retry(backoff={self.backoff!r})", "a finite number >= 1", at_least=1
        )
        if self.max_delay is not None:
            check_number(
                self.max_delay, f"Retry(max_delay={self.max_delay!r})",
                "a number of seconds >= 0, or None", at_least=0,
            )  # fmt: skip
        check_number(
            self.jitter, f"Retry(jitter={self.jitter!r})", "a number between 0 and 1",
            at_least=0, at_most=1,
        )  # fmt: skip
        retry_on = self.retry_on
        if isinstance(retry_on, tuple):
            ok = all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on)
        elif isinstance(retry_on, type):
            ok = issubclass(retry_on, BaseException)
        else:
            ok = callable(retry_on)
        if not ok:
            raise InvalidParameterError(
                f"Retry(retry_on={retry_on!r}) must be an exception type, a tuple of them, "
                "or a function taking the exception and returning a bool"
            )

    def should_retry(self, error: BaseException) -> bool:
        """Tell whether ``error`` is one this policy retries (ignoring the attempt count)."""
        retry_on = self.retry_on
        if isinstance(retry_on, type | tuple):
            return isinstance(error, retry_on)
        return bool(retry_on(error))

    def wait_after(self, attempt: int) -> float:
        """Seconds to wait after the 0-based ``attempt`` failed, jitter included.

        Never overflows: a wait too large for a float is capped at ``max_delay``,
        or else at the longest wait the platform can sleep.
        """
        wait = self.delay
        if wait and self.backoff != 1:
            try:
                wait = wait * self.backoff**attempt
            except OverflowError:
                wait = math.inf
        if self.max_delay is not None and wait > self.max_delay:
            wait = self.max_delay
        if wait > _LONGEST_WAIT:
            wait = _LONGEST_WAIT
        if self.jitter and wait:
            wait -= wait * self.jitter * self._random()
        return wait


_LONGEST_WAIT = float(threading.TIMEOUT_MAX)


def next_delay(
    retry: Retry | None, max_retries: int, wait: float, attempt: int, error: BaseException
) -> float | None:
    """Decide what follows the failure of the 0-based ``attempt``.

    A `SetupError` (braidflow refusing what it was given, such as usage
    priced for a model with no price) is final whatever the policy.

    Returns:
        The seconds to wait before the next attempt, or ``None`` when the
        failure is final and the fallback takes over.
    """
    if isinstance(error, SetupError):  # a mistake no retry mends (a model with no price)
        return None  # (retried, a paid call would be made again each time, to fail again)
    if retry is None:
        return wait if attempt + 1 < max_retries else None
    if attempt + 1 >= retry.attempts or not retry.should_retry(error):
        return None
    return retry.wait_after(attempt)
