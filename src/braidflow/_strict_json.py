"""Values as strict JSON, which any parser reads whole: a float JSON has no
number for (NaN, infinity) by its ``repr``, and each dict key a string of
its own (``{1: .., "1": ..}`` would be written with one key twice).

The command's output (``braidflow run``) and the JSON-lines trace use it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

__all__ = ["is_json", "key_texts", "plain"]


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
    JSON has no number for by its ``repr``, keys as `key_texts` says."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
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
    ``"null"``), or by its ``repr`` where JSON has none (a tuple, ``nan``); one
    whose text is another key's, by its ``repr`` and type (``"1 (int)"``),
    numbered if even that is taken. A string key never changes: it is what a
    reader of the JSON looks up."""
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
            text = typed = f"{key!r} ({type(key).__name__})"
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
        return int.__repr__(key)
    if isinstance(key, float):
        return float.__repr__(key)  # nan and inf too, as values are shown
    return repr(key)
