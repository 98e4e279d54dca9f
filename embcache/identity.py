"""Model identity: the ``model_version`` that goes into every cache key.

Two configurations that give different vectors for the same text must never share
a cache entry. What changes the vectors is more than the model's name: its
revision (weights), the output dimension (a truncated Matryoshka vector differs),
the dtype it computes in and the precision of its output, normalisation, the
prompt or instruction prefixed to each text, and where the input is truncated.
``ModelIdentity`` holds all of them; its ``model_version`` is the model's name
followed by a digest of every field::

    ModelIdentity("all-MiniLM-L6-v2", dim=384, normalized=True).model_version
    -> 'all-MiniLM-L6-v2:3f0c...' (name, then 20 hex digits of SHA-256)

The digest is computed from a canonical JSON encoding of the fields, so it is
stable across processes, machines and releases (the same rule as
``CacheKey.digest``) and two identities meet only when every field is equal.

``ModelIdentity.from_sentence_transformer(model, ...)`` reads the fields off a
sentence-transformers model (duck-typed: this module never imports
sentence-transformers or torch), given the ``encode`` arguments that change the
vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embcache.core.checks import check_positive_int
from embcache.errors import ArgumentTypeError, ArgumentValueError, DimensionMismatchError

__all__ = ["ModelIdentity"]

_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
_PACKED = ("binary", "ubinary")  # 8 values a byte
_SNAPSHOT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{7,64})(?:[\\/]|$)")
# files of a model directory that never change the vectors
_NOT_MODEL_FILES = {"README.md", ".gitattributes", "LICENSE", "LICENSE.txt"}


def _check_str(name: str, value: object, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, got {type(value).__name__}")
    if not empty and not value:
        raise ArgumentValueError(f"{name} must be a non-empty str")
    return value


def _check_int(name: str, value: object, *, none: bool = False) -> int | None:
    """`value` as an int >= 1 (check_positive_int), or None when `none` allows it."""
    if value is None and none:
        return None
    return check_positive_int(value, name)


@dataclass(frozen=True)
class ModelIdentity:
    """Everything that changes an embedding model's vectors.

    ``name`` (non-empty str): the model, e.g. ``"sentence-transformers/all-MiniLM-L6-v2"``;
    ``dim`` (int >= 1): the output dimension; ``revision``: the weights'
    version (a commit hash, a release tag, a digest; None when unknown);
    ``dtype``: what the model computes in (``"float32"``, ``"float16"``, ...);
    ``precision``: the output's quantisation (``"float32"``, ``"int8"``,
    ``"binary"``, ...); ``normalized``: unit-length outputs; ``prompt``: the
    text prefixed to every input (instruction models; ``""`` for none);
    ``max_tokens``: where inputs are truncated (None: the model's own limit,
    unknown); ``extra``: any other setting that changes the vectors, as
    str -> str (a mapping is accepted and stored sorted).

    Wrong types raise ArgumentTypeError (a TypeError), empty or out-of-range
    values ArgumentValueError (a ValueError).
    """

    name: str
    dim: int
    revision: str | None = None
    dtype: str = "float32"
    precision: str = "float32"
    normalized: bool = False
    prompt: str = ""
    max_tokens: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        _check_str("name", self.name)
        object.__setattr__(self, "dim", _check_int("dim", self.dim))
        if self.revision is not None:
            _check_str("revision", self.revision)
        _check_str("dtype", self.dtype)
        _check_str("precision", self.precision)
        if not isinstance(self.normalized, bool):
            raise ArgumentTypeError(
                f"normalized must be a bool, got {type(self.normalized).__name__}"
            )
        _check_str("prompt", self.prompt, empty=True)
        object.__setattr__(self, "max_tokens", _check_int("max_tokens", self.max_tokens, none=True))
        extra = self.extra
        items: Any
        if isinstance(extra, Mapping):
            items = list(extra.items())
        elif isinstance(extra, (tuple, list)):
            items = list(extra)
        else:
            raise ArgumentTypeError(
                f"extra must be a mapping of str to str, got {type(extra).__name__}"
            )
        pairs = []
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise ArgumentTypeError("extra must be a mapping of str to str")
            key, value = item
            _check_str("an extra key", key)
            _check_str(f"extra[{key!r}]", value, empty=True)
            pairs.append((key, value))
        pairs.sort()
        if len({k for k, _ in pairs}) != len(pairs):
            raise ArgumentValueError("extra holds a key twice")
        object.__setattr__(self, "extra", tuple(pairs))

    @property
    def model_version(self) -> str:
        """``name:digest``: the name, then 20 hex digits of the SHA-256 of every
        field in canonical JSON. Equal for equal identities only (up to SHA-256)."""
        fields = {
            "name": self.name,
            "dim": self.dim,
            "revision": self.revision,
            "dtype": self.dtype,
            "precision": self.precision,
            "normalized": self.normalized,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "extra": [list(pair) for pair in self.extra],
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return f"{self.name}:{hashlib.sha256(canonical.encode()).hexdigest()[:20]}"

    def __str__(self) -> str:
        return self.model_version

    def check_dim(self, dim: int, what: str) -> None:
        """Raise DimensionMismatchError (a ValueError) unless `dim`, the
        dimension of `what` (e.g. the vectors a model returned), is this
        identity's ``dim``: vectors of another dimension would be cached under a
        model version that says otherwise. With ``precision`` "binary" or
        "ubinary" the vectors may also be the packed bits of ``dim`` values
        (``ceil(dim / 8)`` of them, as sentence-transformers returns them)."""
        packed_dim = -(-self.dim // 8) if self.precision in _PACKED else None
        if dim == self.dim or dim == packed_dim:
            return
        packed = f" (or {packed_dim} bytes of packed bits)" if packed_dim else ""
        raise DimensionMismatchError(
            f"{what} has dim {dim}, but the model identity {self.name!r} says dim "
            f"{self.dim}{packed}; give ModelIdentity the dimension the model returns"
        )

    @classmethod
    def from_sentence_transformer(
        cls,
        model: Any,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool = False,
        precision: str = "float32",
        truncate_dim: int | None = None,
        name: str | None = None,
        revision: str | None = None,
    ) -> ModelIdentity:
        """The identity of ``model.encode(texts, prompt_name=..., prompt=...,
        normalize_embeddings=..., precision=..., truncate_dim=...)`` for a
        sentence-transformers ``SentenceTransformer`` `model`.

        Read off the model: the dimension (``truncate_dim``, else the model's
        own truncation, else its embedding dimension), the dtype of its weights,
        normalisation (``normalize_embeddings`` or a Normalize module in the
        model), the prompt (``prompt``, else ``model.prompts[prompt_name]``, else
        the model's default prompt), ``max_seq_length``, and the names of its
        modules. ``name`` defaults to the Hub id the model was loaded from (else
        the name of its directory); ``revision`` to the Hub revision when known
        (the model card, or the ``snapshots/<commit>`` of a Hub cache path), else,
        for a model loaded from a local directory, a SHA-256 of that
        directory's files (read once per process and file state; pass
        ``revision`` to skip it).

        ArgumentTypeError when `model` is not a SentenceTransformer-like object
        or an argument has the wrong type; ArgumentValueError for an unknown
        ``prompt_name`` or ``precision``, or a ``truncate_dim`` < 1.
        """
        if not callable(getattr(model, "encode", None)):
            raise ArgumentTypeError(
                f"model must be a SentenceTransformer (with encode), got {type(model).__name__}"
            )
        get_dim = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension", None
        )
        if not callable(get_dim):
            raise ArgumentTypeError(
                f"model must be a SentenceTransformer (with get_embedding_dimension), "
                f"got {type(model).__name__}"
            )
        if prompt_name is not None:
            _check_str("prompt_name", prompt_name)
        if prompt is not None:
            _check_str("prompt", prompt, empty=True)
        if not isinstance(normalize_embeddings, bool):
            raise ArgumentTypeError(
                f"normalize_embeddings must be a bool, got {type(normalize_embeddings).__name__}"
            )
        _check_str("precision", precision)
        if precision not in _PRECISIONS:
            raise ArgumentValueError(
                f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}"
            )
        truncate = _check_int("truncate_dim", truncate_dim, none=True)
        if truncate is None:
            truncate = _check_int(
                "model.truncate_dim", getattr(model, "truncate_dim", None), none=True
            )
        full_dim = get_dim()
        if full_dim is None:
            raise ArgumentValueError("the model does not know its embedding dimension")
        dim = min(int(full_dim), truncate) if truncate is not None else int(full_dim)

        prompts = getattr(model, "prompts", None) or {}
        if prompt is None:
            chosen = prompt_name or getattr(model, "default_prompt_name", None)
            if chosen is not None:
                if chosen not in prompts:
                    raise ArgumentValueError(
                        f"prompt_name {chosen!r} is not one of the model's prompts "
                        f"({', '.join(map(repr, sorted(prompts))) or 'none'})"
                    )
                prompt = prompts[chosen]
            else:
                prompt = ""

        modules = [type(m).__name__ for m in _modules(model)]
        normalized = normalize_embeddings or "Normalize" in modules
        dtype = str(getattr(model, "dtype", "") or "unknown").replace("torch.", "")
        max_tokens = getattr(model, "max_seq_length", None)
        if not (isinstance(max_tokens, int) and max_tokens > 0):
            max_tokens = None

        path = _model_path(model)
        card = getattr(model, "model_card_data", None)
        hub_id = getattr(card, "base_model", None) or getattr(card, "model_id", None)
        if name is None:
            name = hub_id or (Path(path).name if path else None) or type(model).__name__
        if revision is None:
            revision = getattr(card, "base_model_revision", None) or _snapshot_of(path)
            if revision is None and path and os.path.isdir(path):
                revision = "sha256-" + _directory_digest(path)
        return cls(
            name=_check_str("name", name),
            dim=dim,
            revision=revision,
            dtype=dtype,
            precision=precision,
            normalized=normalized,
            prompt=prompt,
            max_tokens=max_tokens,
            extra=(("modules", ",".join(modules)),),
        )


def _modules(model: Any) -> list[Any]:
    try:
        return list(model)
    except TypeError:
        return []


def _model_path(model: Any) -> str | None:
    """Where the model's weights were loaded from (a Hub id or a directory)."""
    for module in _modules(model)[:1]:
        config = getattr(getattr(module, "auto_model", None), "config", None)
        path = getattr(config, "name_or_path", None)
        if isinstance(path, str) and path:
            return path
    path = getattr(getattr(model, "tokenizer", None), "name_or_path", None)
    return path if isinstance(path, str) and path else None


def _snapshot_of(path: str | None) -> str | None:
    """The commit of a Hub cache path ``.../snapshots/<commit>/``."""
    match = _SNAPSHOT.search(path) if path else None
    return match.group(1) if match else None


_DIGESTS: dict[tuple[Any, ...], str] = {}
_DIGESTS_LOCK = threading.Lock()


def _directory_digest(path: str) -> str:
    """SHA-256 (32 hex digits) over the relative names and contents of the model
    files under `path`, cached per (path, names, sizes, mtimes)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in _NOT_MODEL_FILES)
    state = tuple(
        (p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns)
        for p, st in ((p, p.stat()) for p in files)
    )
    memo = (str(root.resolve()), state)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(memo)
    if known is not None:
        return known
    digest = hashlib.sha256()
    for p in files:
        rel = p.relative_to(root).as_posix().encode()
        digest.update(len(rel).to_bytes(8, "little") + rel)
        digest.update(p.stat().st_size.to_bytes(8, "little"))
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):  # noqa: B023 - f is this file
                digest.update(block)
    result = digest.hexdigest()[:32]
    with _DIGESTS_LOCK:
        _DIGESTS[memo] = result
    return result
