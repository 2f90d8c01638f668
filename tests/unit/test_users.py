"""Pure logic of hitmetrics.users: the key that keeps Elasticsearch's cardinality hashes apart, and the inversion
of its linear-counting estimate."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from hitmetrics import users
from hitmetrics.model import MAX_USER_ID


def encode(hashed: int, p: int = 18) -> int:
    """Elasticsearch's linear-counting encoding of a 64-bit hash (AbstractLinearCounting.encodeHash), for the test."""
    e = hashed >> (64 - 25)
    if e & ((1 << (25 - p)) - 1) == 0:
        rest = (hashed << 25) & ((1 << 64) - 1)
        run = 1 + min(64 - rest.bit_length(), 64 - 25)
        return (e << 7) | (run << 1) | 1
    return e << 1


def test_2083_and_5752_collide_as_ids_and_not_as_keys() -> None:
    assert encode(users.mix64(2083)) == encode(users.mix64(5752))
    assert encode(users.mix64(users.user_key(2083))) != encode(users.mix64(users.user_key(5752)))


@given(st.integers(0, MAX_USER_ID), st.integers(1, users.BLOCK - 1))
def test_ids_closer_than_a_block_never_share_an_encoding(first: int, gap: int) -> None:
    second = first + gap
    assert encode(users.mix64(users.user_key(first))) != encode(users.mix64(users.user_key(second)))


@given(st.integers(0, 2**63 - 1))
def test_the_key_puts_the_ids_low_bits_on_top_of_its_hash_and_is_a_long(user_id: int) -> None:
    key = users.user_key(user_id)
    assert -(2**63) <= key < 2**63
    assert users.mix64(key) >> 39 == user_id % users.BLOCK
    assert users.mix64(key) & ((1 << 39) - 1) == user_id >> 25


@given(st.integers(0, 45_000))
def test_the_estimate_gives_back_the_number_of_encodings(n: int) -> None:
    m = 1 << 25
    estimate = math.floor(m * math.log(m / (m - n)) + 0.5)  # Java's Math.round, as Elasticsearch reports it
    assert users.distinct_from_estimate(estimate) == n


def test_rows_with_many_hits_are_asked_again_in_parts() -> None:
    small = {"doc_count": users.SPLIT - 1, "unique_users": {"value": 5}}
    assert users.exact_users(small) == 5
    assert users.exact_users({"doc_count": users.SPLIT, "unique_users": {"value": 5}}) is None
    blocks = {
        "doc_count": 40_000,
        "user_blocks": {"buckets": [{"doc_count": 20_000, "unique_users": {"value": 3}}] * 2},
    }
    assert users.exact_users(blocks) == 6
    parts = {"doc_count": 90_000, "user_parts": {"buckets": [{"doc_count": 45_000, "unique_users": {"value": 7}}]}}
    assert users.exact_users(parts) == 7
