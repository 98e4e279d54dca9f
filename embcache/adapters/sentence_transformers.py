"""sentence-transformers: a CachedEmbedder for a ``SentenceTransformer`` model.

Install from a clone with ``pip install ".[sentence-transformers]"``. Nothing here imports
sentence-transformers or torch (the model is used through ``encode``), and
``import embcache`` never imports this module. ::

    from sentence_transformers import SentenceTransformer
    from embcache.sentence_transformers import cached_embedder

    embedder = cached_embedder(SentenceTransformer("all-MiniLM-L6-v2"), batch_size=64)
    vectors = embedder.embed_sync(texts)

The model version is ``ModelIdentity.from_sentence_transformer`` of the model
with the same ``encode`` arguments, so changing the prompt, normalisation,
precision or truncation gives new keys.
"""

from __future__ import annotations

import functools
from typing import Any

from embcache.core.checks import check_positive_int
from embcache.embedder.caches import AnyCache
from embcache.embedder.embedder import CachedEmbedder
from embcache.identity import ModelIdentity

__all__ = ["cached_embedder"]


def cached_embedder(
    model: Any,
    *,
    cache: AnyCache | None = None,
    storage: str | None = None,
    batch_size: int = 32,
    texts_per_call: int = 1024,
    prompt_name: str | None = None,
    prompt: str | None = None,
    normalize_embeddings: bool = False,
    precision: str = "float32",
    truncate_dim: int | None = None,
    name: str | None = None,
    revision: str | None = None,
    timeout: float | None = None,
    embedder_name: str | None = None,
) -> CachedEmbedder:
    """A CachedEmbedder whose misses go to ``model.encode``.

    ``batch_size`` is sentence-transformers' own (texts per forward pass, passed
    to ``encode``); ``texts_per_call`` the most distinct misses given to one
    ``encode`` call (which sorts them by length, so larger calls pad less).
    ``prompt_name``, ``prompt``, ``normalize_embeddings``, ``precision`` and
    ``truncate_dim`` are passed to ``encode`` and go into the model identity;
    ``name`` and ``revision`` override the identity's (see
    ``ModelIdentity.from_sentence_transformer``). ``cache``, ``storage`` and
    ``timeout`` as CachedEmbedder's: ``storage`` (None: ``"float32"``;
    ``"float16"``, ``"bfloat16"`` or ``"int8"``) is how the default cache holds
    its rows, which is not the model's ``precision`` (what ``encode``
    computes, and part of the key); a cache passed in keeps its own storage.
    ``embedder_name`` is CachedEmbedder's ``name`` (the embedder's label in
    monitoring, embcache.metrics), spelled so here because ``name`` is the model's.

    ArgumentTypeError / ArgumentValueError for a `model` without ``encode`` or
    arguments of the wrong type or range.
    """
    identity = ModelIdentity.from_sentence_transformer(
        model,
        prompt_name=prompt_name,
        prompt=prompt,
        normalize_embeddings=normalize_embeddings,
        precision=precision,
        truncate_dim=truncate_dim,
        name=name,
        revision=revision,
    )
    options: dict[str, Any] = {
        "batch_size": check_positive_int(batch_size, "batch_size"),
        "convert_to_numpy": True,
        "show_progress_bar": False,
    }
    if prompt_name is not None:
        options["prompt_name"] = prompt_name
    if prompt is not None:
        options["prompt"] = prompt
    if normalize_embeddings:
        options["normalize_embeddings"] = True
    if precision != "float32":
        options["precision"] = precision
    if truncate_dim is not None:
        options["truncate_dim"] = truncate_dim
    encode = functools.partial(model.encode, **options)
    return CachedEmbedder(
        encode,
        identity,
        cache=cache,
        storage=storage,
        batch_size=check_positive_int(texts_per_call, "texts_per_call"),
        timeout=timeout,
        name=embedder_name,
    )
