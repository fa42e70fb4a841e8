"""Helpers for LLM calls: their usage read from a client's responses, priced with your prices.

No LLM client is a dependency of braidflow: `usage_from_openai` reads the
objects the ``openai`` SDK returns (or anything shaped like them) without
importing it. Costs come only from the `Prices` you give.
"""

from ._openai import usage_from_openai as usage_from_openai
from ._prices import Prices as Prices

__all__ = ["Prices", "usage_from_openai"]

for _object in (Prices, usage_from_openai):
    _object.__module__ = __name__
