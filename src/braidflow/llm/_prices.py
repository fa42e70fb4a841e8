"""Prices: what a model's tokens cost, per million in and out, as the user gives them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .._errors import InvalidParameterError

__all__ = ["Prices"]

# What a provider adds to a model's name for one release of it: a date or a
# snapshot number (-2024-07-18, -20241022, -0613, @20240620), perhaps a
# version after it (-v1:0). Anything else (-mini, -turbo, .1) is another model.
_RELEASE = re.compile(r"[-@]\d{4}(?:-?\d{2}-?\d{2})?(?:-v\d+(?::\d+)?)?")


def _price(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and value >= 0
    )


class Prices:
    """What tokens cost, per model: ``Prices({"gpt-4o-mini": (0.15, 0.60)})``
    is 0.15 per million input tokens and 0.60 per million output tokens, in
    whatever currency you count in. braidflow has no price list of its own.

    A model is found by its name, or else by the name given that it is a
    release of (the name, then a date or snapshot number): ``"gpt-4o-mini"``
    prices ``"gpt-4o-mini-2024-07-18"``, the dated name a provider answers
    with, but not ``"gpt-4o-mini-tts"``; ``"gpt-4o"`` does not price
    ``"gpt-4o-mini"``, another model.

    Args:
        per_million: Model name -> (input price, output price) per million tokens.

    Raises:
        InvalidParameterError: For a name that is not a string, or prices
            that are not two finite numbers >= 0.
    """

    __slots__ = ("_prices",)

    def __init__(self, per_million: Mapping[str, tuple[float, float]]) -> None:
        if not isinstance(per_million, Mapping):
            raise InvalidParameterError(
                f"Prices: give a dict of model name -> (input, output) price per million "
                f"tokens, got {per_million!r}"
            )
        prices: dict[str, tuple[float, float]] = {}
        for model, pair in per_million.items():
            if not isinstance(model, str) or not model:
                raise InvalidParameterError(f"Prices: model name {model!r} must be a string")
            if not isinstance(pair, tuple | list) or len(pair) != 2 or not all(map(_price, pair)):
                raise InvalidParameterError(
                    f"Prices: {model!r}: {pair!r} must be (input, output) prices per million "
                    "tokens, two finite numbers >= 0"
                )
            prices[model] = (float(pair[0]), float(pair[1]))
        self._prices = prices

    def __repr__(self) -> str:
        return f"Prices({self._prices!r})"

    def of(self, model: str) -> tuple[float, float]:
        """The (input, output) prices per million tokens of ``model``.

        Raises:
            InvalidParameterError: If no price is given for it (a cost left
                out silently would let a cost budget be overrun).
        """
        found = self._prices.get(model)
        if found is None:
            matches = [
                name
                for name in self._prices
                if model.startswith(name) and _RELEASE.fullmatch(model, len(name))
            ]
            if matches:
                found = self._prices[max(matches, key=len)]
        if found is None:
            raise InvalidParameterError(
                f"Prices: no price for model {model!r}; add it, e.g. "
                f"Prices({{{model!r}: (input, output), ...}}) per million tokens "
                f"(priced now: {sorted(self._prices)})"
            )
        return found

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """What ``input_tokens`` and ``output_tokens`` of ``model`` cost."""
        price_in, price_out = self.of(model)
        return (input_tokens * price_in + output_tokens * price_out) / 1_000_000
