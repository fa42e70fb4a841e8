"""Values as strict JSON, which any parser reads whole: a float JSON has no
number for (NaN, infinity) by its ``repr``, and each dict key a string of
its own (``{1: .., "1": ..}`` would be written with one key twice); what
cannot be shown at all (its ``repr`` raises) by a placeholder naming its type.

The command's output (``braidflow run``) and the JSON-lines trace use it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["is_json", "key_texts", "plain", "safe_repr"]

# Past 640 digits (the least limit there can be), Python may refuse to write
# an int as text: ``sys.set_int_max_str_digits``, 4,300 digits by default.
_LONG_INT_BITS = 2_000


def is_json(value: Any) -> bool:
    """Tell whether json.dumps writes ``value`` as it is: no float it has no
    number for (NaN, infinity), no dict key but strings (it would write ``1``
    and ``"1"`` as the same key). Looked through without recursion, as deep as
    it goes."""
    seen: set[int] = set()
    waiting = [value]
    while waiting:
        item = waiting.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict | list | tuple) and id(item) not in seen:
            seen.add(id(item))  # once each: a value that holds itself ends here
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    return False
                waiting.extend(item.values())
            else:
                waiting.extend(item)
    return True


def plain(value: Any) -> Any:
    """``value`` with only what strict JSON holds in its dicts and lists: a float
    JSON has no number for by its ``repr``, an int too long to write as text
    by a placeholder (see `safe_repr`), keys as `key_texts` says."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, int) and value.bit_length() > _LONG_INT_BITS:
        try:
            int.__repr__(value)
        except ValueError:  # too many digits to write
            return safe_repr(value)
        return value
    if isinstance(value, dict):
        return {
            text: plain(item) for text, item in zip(key_texts(value), value.values(), strict=True)
        }
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def key_texts(mapping: dict[Any, Any]) -> list[str]:
    """The keys of ``mapping`` as JSON's string keys, each one its own: a string
    as it is; another key as JSON writes one (``1`` as ``"1"``, ``None`` as
    ``"null"``), or by its ``repr`` where JSON has none (a tuple, ``nan``; see
    `safe_repr`); one whose text is another key's, by its ``repr`` and type
    (``"1 (int)"``), numbered if even that is taken. A string key never
    changes: it is what a reader of the JSON looks up."""
    texts = [key if isinstance(key, str) else _key_text(key) for key in mapping]
    counts = Counter(texts)
    taken = {
        text
        for key, text in zip(mapping, texts, strict=True)
        if isinstance(key, str) or counts[text] == 1
    }
    shown = []
    for key, text in zip(mapping, texts, strict=True):
        if not isinstance(key, str) and counts[text] > 1:
            text = typed = f"{safe_repr(key)} ({type(key).__name__})"
            number = 1
            while text in taken:
                number += 1
                text = f"{typed} #{number}"
            taken.add(text)
        shown.append(text)
    return shown


def _key_text(key: Any) -> str:
    """A key that is not a string as JSON writes one, or by its ``repr``."""
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    if isinstance(key, int):
        return safe_repr(key, int.__repr__)
    if isinstance(key, float):
        return float.__repr__(key)  # nan and inf too, as values are shown
    return safe_repr(key)


def safe_repr(value: Any, text: Callable[[Any], str] = repr) -> str:
    """``text(value)`` (its ``repr``), or, if that raises, a placeholder that
    names the value's type: ``"<Thing: repr raised RuntimeError>"``. Never
    raises (but for ``KeyboardInterrupt`` and the like)."""
    try:
        return text(value)
    except Exception as error:  # a broken __repr__, an int too long to write
        name = getattr(text, "__name__", "repr").strip("_")
        return f"<{type(value).__name__}: {name} raised {type(error).__name__}>"
