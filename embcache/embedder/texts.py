"""Texts to cache keys: ``CacheKey.from_text(text, model_version)`` for one text
and for a whole call (one SHA-256 and one CacheKey per text, in a
comprehension), and the texts of a call taken as a sequence of their own."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from embcache._core import CacheKey
from embcache.errors import ArgumentTypeError, InvalidKeyError

__all__ = ["keys_of", "text_key"]

_sha256 = hashlib.sha256


def text_key(text: str, model_version: str) -> CacheKey:
    """``CacheKey.from_text(text, model_version)``, built the cheaper way: the
    SHA-256 hex digest of the UTF-8 text (hashlib), then the key from it.
    ArgumentTypeError for a `text` that is not a str; InvalidKeyError for a
    text with a lone surrogate."""
    try:
        # str.encode: a non-str raises TypeError, and a str subclass's own encode is not used
        data = str.encode(text)
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(
            f"text holds a lone surrogate, which has no UTF-8 encoding ({exc})"
        ) from None
    except TypeError:
        raise ArgumentTypeError(f"text must be a str, got {type(text).__name__}") from None
    return CacheKey(_sha256(data).hexdigest(), model_version)


def keys_of(texts: Iterable[str], model_version: str) -> tuple[list[CacheKey], Sequence[str]]:
    """The key of each text, and the texts as a sequence of their own (the keys
    and the texts sent to the model come from the same contents, whatever
    another thread does to the caller's list meanwhile). A repeated text is
    keyed again, which costs less than looking every text up in a dict to save
    the rare repeat; single flight embeds a repeat once anyway.

    ArgumentTypeError for a `texts` that is a str or bytes, not iterable, or
    holds a non-str (naming its index); InvalidKeyError for a text with a lone
    surrogate."""
    if type(texts) is list:
        if len(texts) == 1 and type(texts[0]) is str:  # one text (a query)
            text = texts[0]
            return [text_key(text, model_version)], (text,)
        items: Any = tuple(texts)  # a copy, taken atomically
    elif type(texts) is tuple:
        items = texts
    elif isinstance(texts, (str, bytes)):
        raise ArgumentTypeError(
            f"texts must be a sequence of str, not a single {type(texts).__name__}"
        )
    else:
        try:
            items = list(texts)
        except TypeError:
            raise ArgumentTypeError(
                f"texts must be a sequence of str, got {type(texts).__name__}"
            ) from None
    encode, sha256, key = str.encode, _sha256, CacheKey
    try:
        # str.encode, not text.encode: a non-str raises TypeError, whatever it has
        return [key(sha256(encode(t)).hexdigest(), model_version) for t in items], items
    except (TypeError, UnicodeEncodeError):
        pass
    for i, text in enumerate(items):  # the error, naming the text at fault
        if not isinstance(text, str):
            raise ArgumentTypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        text_key(text, model_version)
    raise AssertionError("unreachable: a text that failed to key keyed")  # pragma: no cover
