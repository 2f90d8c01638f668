"""Exact unique users out of Elasticsearch's `cardinality` aggregation.

`cardinality` is approximate at any size: below its threshold it keeps the set of its values' *encoded hashes*
(linear counting), and distinct ids whose hashes encode alike count as one (user_id 2083 and 5752 do). The
encoding keeps the top 25 bits of the 64-bit hash (`BitMixer.mix64` of the value for numbers). So each hit also
stores `user_key`, the value whose hash has the user id's low 25 bits on top: `mix64(user_key)` is
`(user_id mod 2^25) << 39 | user_id >> 25`. Over ids within any window of 2^25 values the encodings are then all
different, and a `cardinality` of `user_key` below its threshold counts them exactly, once its linear-counting
estimate is turned back into the set size it was computed from (`distinct_from_estimate`).

Two cases are split before counting, so every count is exact:
- a partition whose ids span 2^25 values or more has each row's users counted per `BLOCK` of ids and summed;
- a row (or block) with `SPLIT` hits or more, where Elasticsearch may have left linear counting, is asked again
  as `histogram` parts of `SPLIT` ids each (`split_aggs`), each under the threshold, and summed.

Sums are of disjoint sets of ids, so they are exact too. Nothing is stored outside the indexes: a day's unique
users can always be recomputed from them.
"""

from __future__ import annotations

import math
from typing import Any

FIELD = "user_key"
# Elasticsearch's highest cardinality precision (p = 18); linear counting holds more than SPLIT values there.
PRECISION_THRESHOLD = 40_000
# Ids counted in one cardinality: below linear counting's capacity at PRECISION_THRESHOLD, with a margin.
SPLIT = 30_000
# A window of ids whose encoded hashes all differ (the 25 bits of the encoding).
BLOCK = 1 << 25
_LC_REGISTERS = 1 << 25  # linear counting's m in Elasticsearch (AbstractLinearCounting.P2)
_MASK = (1 << 64) - 1
_MIX_1, _MIX_2 = 0x4CD6944C5CC20B6D, 0xFC12C5B19D3259E9
_UNMIX_1, _UNMIX_2 = pow(_MIX_1, -1, 1 << 64), pow(_MIX_2, -1, 1 << 64)


def mix64(value: int) -> int:
    """hppc's `BitMixer.mix64`, the hash Elasticsearch's cardinality takes of a long (as unsigned 64 bits)."""
    z = value & _MASK
    z = ((z ^ (z >> 32)) * _MIX_1) & _MASK
    z = ((z ^ (z >> 29)) * _MIX_2) & _MASK
    return z ^ (z >> 32)


def _unmix64(hashed: int) -> int:
    """The inverse of `mix64` (each of its steps is a bijection of 64-bit words)."""
    z = hashed ^ (hashed >> 32)
    z = (z * _UNMIX_2) & _MASK
    z ^= (z >> 29) ^ (z >> 58)
    z = (z * _UNMIX_1) & _MASK
    return z ^ (z >> 32)


def user_key(user_id: int) -> int:
    """The `user_key` stored with a hit of `user_id` (a non-negative id below 2^63), as a signed long."""
    key = _unmix64(((user_id & (BLOCK - 1)) << 39) | (user_id >> 25))
    return key - (1 << 64) if key >= 1 << 63 else key


def distinct_from_estimate(estimate: int) -> int:
    """The number of distinct encoded hashes behind a linear-counting `estimate`.

    Elasticsearch reports `round(m * ln(m / (m - n)))` for `n` distinct encodings, slightly more than `n` (by 24
    at 40,000); it grows by more than 1 for each 1 of `n`, so `n` is the one whose report is `estimate`.
    """
    m = _LC_REGISTERS
    guess = round(m * -math.expm1(-estimate / m))
    for n in (guess, guess - 1, guess + 1, guess - 2, guess + 2):
        if 0 <= n < m and math.floor(m * math.log(m / (m - n)) + 0.5) == estimate:
            return n
    raise ValueError(f"{estimate} is not a linear-counting estimate")


def cardinality() -> dict[str, Any]:
    """The `unique_users` aggregation: exact below `SPLIT` once read by `exact_users`."""
    return {"unique_users": {"cardinality": {"field": FIELD, "precision_threshold": PRECISION_THRESHOLD}}}


def users_aggs(wide: bool) -> dict[str, Any]:
    """The sub-aggregations of a row that `exact_users` reads; `wide` when the ids span `BLOCK` or more."""
    if not wide:
        return cardinality()
    return {"user_blocks": {"histogram": {"field": "user_id", "interval": BLOCK, "min_doc_count": 1},
                            "aggs": cardinality()}}  # fmt: skip


def split_aggs() -> dict[str, Any]:
    """The sub-aggregations of a row asked again in parts of `SPLIT` ids (each exact: see the module)."""
    return {"user_parts": {"histogram": {"field": "user_id", "interval": SPLIT, "min_doc_count": 1},
                           "aggs": cardinality()}}  # fmt: skip


def exact_users(bucket: dict[str, Any]) -> int | None:
    """A row's exact unique users from its `users_aggs` or `split_aggs`; None when the row (or a block of it) has
    `SPLIT` hits or more, where Elasticsearch may have left linear counting: ask it again with `split_aggs`.

    The hit count decides, not the estimate: past linear counting, `user_key`'s estimates are meaningless (its
    hashes are far from uniform), while fewer hits than `SPLIT` means fewer users too.
    """
    if "user_parts" in bucket:
        # A part has at most SPLIT ids, whatever its hits: always linear counting.
        return sum(distinct_from_estimate(part["unique_users"]["value"]) for part in bucket["user_parts"]["buckets"])
    parts = bucket["user_blocks"]["buckets"] if "user_blocks" in bucket else [bucket]
    if any(part["doc_count"] >= SPLIT for part in parts):
        return None
    return sum(distinct_from_estimate(_value(part)) for part in parts)


def _value(bucket: dict[str, Any]) -> int:
    # filter_path drops what is empty: a row without hits has no unique_users value.
    return bucket.get("unique_users", {}).get("value", 0)
