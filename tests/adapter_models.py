"""Deterministic fake models for the adapter tests: a text's vector is a function
of the text alone (bytes of its SHA-256), every call is recorded."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

DIM = 8


def vector(text: str, dim: int = DIM, salt: str = "") -> list[float]:
    """The fake model's embedding of `text` (exactly representable in float32)."""
    digest = hashlib.sha256((salt + text).encode()).digest()
    return [b / 256.0 for b in digest[:dim]]


def matrix(texts: list[str], dim: int = DIM, salt: str = "") -> np.ndarray:
    return np.array([vector(t, dim, salt) for t in texts], dtype=np.float32).reshape(-1, dim)


class Recorder:
    """What a fake model was asked: ``batches`` of documents, ``queries``."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[list[str]] = []
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self.fail: BaseException | None = None
        self.bad: str | None = None  # "nan" / "short": answer wrongly

    def documents(self, texts: list[str], dim: int = DIM, salt: str = "") -> list[list[float]]:
        with self.lock:
            self.batches.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        out = [vector(t, dim, salt) for t in texts]
        if self.bad == "nan":
            out[-1][0] = float("nan")
        elif self.bad == "short":
            out = out[:-1]
        return out

    def query(self, text: str, dim: int = DIM, salt: str = "q:") -> list[float]:
        with self.lock:
            self.queries.append(text)
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return vector(text, dim, salt)

    @property
    def embedded(self) -> Counter[str]:
        return Counter(t for b in self.batches for t in b)


# --- a sentence-transformers model, duck-typed (what ModelIdentity and cached_embedder read) ---


class Normalize:
    pass


class Transformer:
    def __init__(self, path: str) -> None:
        config = type("Config", (), {"name_or_path": path})()
        self.auto_model = type("Auto", (), {"config": config})()


class Pooling:
    pass


class FakeSentenceTransformer:
    """Just the surface ModelIdentity.from_sentence_transformer reads."""

    def __init__(self, path: str, *, normalize: bool = True, dim: int = 6) -> None:
        self.modules = [Transformer(path), Pooling()] + ([Normalize()] if normalize else [])
        self.dim = dim
        self.prompts = {"query": "query: ", "document": ""}
        self.default_prompt_name: str | None = None
        self.truncate_dim: int | None = None
        self.max_seq_length = 256
        self.dtype = "torch.float32"
        self.model_card_data = type("Card", (), {"base_model": None})()
        self.encoded: list[dict[str, Any]] = []

    def __iter__(self) -> Any:
        return iter(self.modules)

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.encoded.append({"texts": list(texts), **kwargs})
        dim = kwargs.get("truncate_dim") or self.dim
        prompt = kwargs.get("prompt") or self.prompts.get(kwargs.get("prompt_name") or "", "")
        return np.ones((len(texts), dim), dtype=np.float32) * len(prompt)
