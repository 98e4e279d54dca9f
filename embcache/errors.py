"""Exceptions raised by embcache.

Every error embcache raises for input it rejects subclasses both EmbcacheError
and the built-in a caller would expect (TypeError or ValueError), so
``except ValueError`` and ``except EmbcacheError`` both keep working:

==========================  ===========  ==========================================
class                       built-in     raised for
==========================  ===========  ==========================================
ArgumentTypeError           TypeError    an argument of the wrong type: constructor
                                         limits, ``clock``, ``out=``, ``compute``,
                                         ``CachedEmbedder`` arguments
ArgumentValueError          ValueError   an argument out of range
KeyTypeError                TypeError    a key that is not a CacheKey, or a CacheKey
                                         field of the wrong type
InvalidKeyError             ValueError   an empty CacheKey field
VectorTypeError             TypeError    a vector that does not hold real numbers, or
                                         cannot be read as an array (a tensor on
                                         another device, an object whose __array__
                                         raises)
InvalidVectorError          ValueError   a vector of the wrong shape, empty, or
                                         holding NaN / infinity / float32 overflow
DimensionMismatchError      ValueError   a dimension other than the one required
EntryTooLargeError          ValueError   one entry larger than the whole budget
SnapshotError               ValueError   a snapshot file that is not a valid, intact
                                         snapshot (truncated, corrupt, foreign,
                                         another format version)
SnapshotFolderError         OSError      a snapshot's folder that is missing, is
                                         not a folder, or is not writable
                                         (``errno`` says which)
CallContextError            RuntimeError a call made where it can never finish: a
                                         ``get_or_compute`` that would wait on
                                         itself (re-entry, computes waiting on
                                         each other, a thread blocking on its own
                                         event loop's task), or a synchronous call
                                         that would have to run an event loop
                                         inside the running one (``embed_sync``)
FlightTimeoutError          TimeoutError a ``get_or_compute`` (or a CachedEmbedder
                                         call) that ran out of its ``timeout``
RedisTierError              ConnectionError
                                         ``RedisTier.drop_model`` could not finish
                                         because Redis failed (cause chained)
SharedSegmentError          ValueError   a shared-memory segment that cannot be
                                         used: not an embcache segment, another
                                         format version or ABI, truncated or
                                         resized, another user's, or closed
==========================  ===========  ==========================================

Errors that are not about the caller's input keep their built-in type:
MemoryError when memory cannot be had, and whatever a user's ``compute``, model
or clock raises (a ``StopIteration`` out of one is raised as a RuntimeError
chained from it, as PEP 479 does for generators).
"""

__all__ = [
    "EmbcacheError",
    "ArgumentTypeError",
    "ArgumentValueError",
    "KeyTypeError",
    "InvalidKeyError",
    "VectorTypeError",
    "InvalidVectorError",
    "DimensionMismatchError",
    "EntryTooLargeError",
    "SnapshotError",
    "SnapshotFolderError",
    "CallContextError",
    "FlightTimeoutError",
    "RedisTierError",
    "SharedSegmentError",
]


class EmbcacheError(Exception):
    """Base class of the errors embcache raises for rejected input."""


class ArgumentTypeError(EmbcacheError, TypeError):
    """An argument has the wrong type (a limit, a clock, ``out=``, ``compute``...)."""


class ArgumentValueError(EmbcacheError, ValueError):
    """An argument has the right type but a value out of range."""


class KeyTypeError(ArgumentTypeError):
    """A key is not a CacheKey, or a CacheKey field has the wrong type."""


class InvalidKeyError(ArgumentValueError):
    """A CacheKey field that must be a non-empty str is empty."""


class VectorTypeError(ArgumentTypeError):
    """A vector does not hold real numbers (strings, objects, complex, bool), is
    missing (None), or cannot be read as an array (a torch tensor on another
    device or sparse, an object whose ``__array__`` raises)."""


class InvalidVectorError(ArgumentValueError):
    """A vector has the wrong shape, is empty, or holds NaN, infinity or values
    that overflow float32."""


class DimensionMismatchError(InvalidVectorError):
    """A vector's dimension differs from the one the cache or the batch requires."""


class EntryTooLargeError(InvalidVectorError):
    """One entry would need more memory than the cache's whole budget."""


class SnapshotError(EmbcacheError, ValueError):
    """A snapshot file cannot be loaded: empty, truncated, corrupt (a checksum
    fails), foreign (not an embcache snapshot), of another format version, or
    internally inconsistent. The message says which; nothing was built."""


class SnapshotFolderError(EmbcacheError, OSError):
    """A snapshot's folder cannot take the file: it does not exist
    (``errno.ENOENT``), is not a folder (``errno.ENOTDIR``), or this process may
    not create files in it (``errno.EACCES``, as ``os.access`` judges: for root,
    only a read-only file system). ``filename`` is the folder.
    ``EmbeddingCache.open`` checks all three on entry, before any request is
    served, rather than at the save on exit, after everything was lost; ``save``
    raises it (``ENOTDIR``) when a file stands at the folder's path or on it,
    before writing anything (a missing folder: FileNotFoundError). Both follow a
    symbolic link to the file it names."""


class CallContextError(EmbcacheError, RuntimeError):
    """A call made where it can never finish: a ``get_or_compute`` that would
    wait on itself (asked for keys its own compute is computing, computes of
    different callers waiting for each other, a thread blocking on a flight whose
    owner needs that very thread), or a synchronous call that would have to run
    an event loop inside the one running in this thread (``embed_sync`` of an
    async model, LangChain's sync methods from a coroutine)."""


class FlightTimeoutError(EmbcacheError, TimeoutError):
    """get_or_compute ran out of its ``timeout``: waiting for keys another caller
    is computing (that flight goes on), or awaiting its own async compute (which
    is cancelled; nothing of it is stored)."""


class RedisTierError(EmbcacheError, ConnectionError):
    """``RedisTier.drop_model`` could not finish because Redis failed (the cause
    is chained). The tier's reads and writes never raise it: their failures are
    misses, counted."""


class SharedSegmentError(EmbcacheError, ValueError):
    """A shared-memory segment (SharedEmbeddingCache) cannot be used: the file is
    not an embcache segment, is of another format version or ABI, is truncated or
    resized, belongs to another user, or the cache was closed. The message says
    which; a refused file is left untouched."""
