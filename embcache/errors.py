"""Exceptions raised by embcache.

Each one subclasses the built-in a caller would expect (TypeError or
ValueError), so ``except ValueError`` keeps working, and EmbcacheError, so
``except EmbcacheError`` catches everything the cache rejects.
"""

__all__ = [
    "EmbcacheError",
    "KeyTypeError",
    "VectorTypeError",
    "InvalidVectorError",
    "DimensionMismatchError",
    "EntryTooLargeError",
]


class EmbcacheError(Exception):
    """Base class of the errors embcache raises for rejected input."""


class KeyTypeError(EmbcacheError, TypeError):
    """A key is not a CacheKey."""


class VectorTypeError(EmbcacheError, TypeError):
    """A vector does not hold real numbers (strings, objects, complex, bool)."""


class InvalidVectorError(EmbcacheError, ValueError):
    """A vector has the wrong shape, is empty, or holds NaN, infinity or values
    that overflow float32."""


class DimensionMismatchError(InvalidVectorError):
    """A vector's dimension differs from the cache's fixed ``dim``."""


class EntryTooLargeError(InvalidVectorError):
    """One entry would need more memory than the cache's whole budget."""
