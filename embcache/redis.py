"""The public import path of the Redis tier.

The implementation and its documentation are in embcache.tier.redis; this
module's ``__doc__`` is that one's."""

from __future__ import annotations

import embcache.tier.redis as _impl
from embcache.tier.redis import FAILURES_TO_OPEN, RedisTier, RedisTierError, TierInfo

__doc__ = _impl.__doc__
__all__ = ["FAILURES_TO_OPEN", "RedisTier", "RedisTierError", "TierInfo"]
