"""Usage from the ``openai`` SDK's responses (plain or streamed), without importing ``openai``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._errors import InvalidParameterError
from .._usage import Usage
from ._prices import Prices

__all__ = ["usage_from_openai"]


def _field(thing: Any, name: str) -> Any:
    if isinstance(thing, dict):
        return thing.get(name)
    return getattr(thing, name, None)


def _counts(usage: Any) -> tuple[int, int] | None:
    """(input, output) tokens of a usage object: Chat Completions'
    ``prompt_tokens``/``completion_tokens``, the Responses API's
    ``input_tokens``/``output_tokens``, or the Embeddings API's
    ``prompt_tokens`` alone (it generates no tokens)."""
    for names in (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens")):
        given = [_field(usage, name) for name in names]
        if all(isinstance(count, int) for count in given):
            return given[0], given[1]
    prompt = _field(usage, "prompt_tokens")
    if isinstance(prompt, int) and _field(usage, "completion_tokens") is None:
        return prompt, 0
    return None


def usage_from_openai(response: Any, *, prices: Prices | None = None) -> Usage:
    """The `braidflow.Usage` of an ``openai`` SDK call, for ``report_usage``.

    ``response`` is what the call returned: a ``ChatCompletion``, a Responses
    API ``Response``, an embeddings ``CreateEmbeddingResponse`` (its tokens
    are input tokens: it generates none), or, for a streamed call made with
    ``stream_options={"include_usage": True}``, its chunks (a list of them,
    or just the last, which carries the usage). Their ``model_dump()`` dicts
    work too. With ``prices``, the usage carries its cost.

    Args:
        response: The response, a chunk, or the chunks of a stream.
        prices: What the model's tokens cost (`Prices`); ``None``: no cost.

    Raises:
        InvalidParameterError: If it carries no usage (a stream made without
            ``include_usage``), is an async stream (collect its chunks first),
            or ``prices`` has no price for its model.
    """
    found = response
    if hasattr(response, "__aiter__") and _field(response, "usage") is None:
        raise InvalidParameterError(
            f"usage_from_openai: {type(response).__name__} is an async stream, read with "
            "async for, which this function cannot do: collect its chunks and pass them, "
            "usage_from_openai([chunk async for chunk in stream]) (made with "
            "stream_options={'include_usage': True}, the last one carries the usage)"
        )
    if _field(found, "usage") is None and isinstance(response, Iterable):
        if isinstance(response, str | bytes | dict):
            found = None
        else:
            chunks = list(response)
            found = next((c for c in reversed(chunks) if _field(c, "usage") is not None), None)
    usage = _field(found, "usage") if found is not None else None
    counts = _counts(usage) if usage is not None else None
    if counts is None:
        raise InvalidParameterError(
            f"usage_from_openai: {type(response).__name__} carries no token usage; for a "
            "streamed call pass stream_options={'include_usage': True} and give the chunks "
            "(or the last one)"
        )
    model = _field(found, "model")
    model = model if isinstance(model, str) else None
    cost = None
    if prices is not None:
        if model is None:
            raise InvalidParameterError("usage_from_openai: the response names no model to price")
        cost = prices.cost(model, *counts)
    return Usage(counts[0], counts[1], cost, model)
