from __future__ import annotations

import numpy as np
import pytest

from edgeconf.backends import prepare
from edgeconf.cascade import Cascade, Stage
from edgeconf.errors import ConfigError
from edgeconf.hashing import dhash, hamming, popcount
from edgeconf.memo import DEFAULT_KEY, MemoCache
from edgeconf.preprocess import Preprocessing


def _img(seed, shape=(28, 28)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_default_key_is_not_the_papers_64_bit_hash():
    assert DEFAULT_KEY == "dhash256"
    assert MemoCache().bits == 256


def test_dhash_matches_the_definition():
    img = _img(0, (40, 50))
    import cv2

    small = cv2.resize(img, (9, 8), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    want = int("".join("1" if b else "0" for b in bits), 2)
    assert dhash(img, 64).tolist() == [want]
    assert dhash(img, 256).shape == (4,)
    with pytest.raises(ValueError):
        dhash(img, 100)


def test_popcount_and_hamming():
    words = np.array([0, 1, 0xFF, 2**64 - 1], dtype=np.uint64)
    assert popcount(words).tolist() == [0, 1, 8, 64]
    table = np.array([[0, 0], [1, 3], [2**64 - 1, 0]], dtype=np.uint64)
    assert hamming(np.array([0, 0], np.uint64), table).tolist() == [0, 3, 64]


def test_lru_eviction_and_counters():
    cache = MemoCache(capacity=3, key="exact")
    keys = [cache.key(_img(i)) for i in range(4)]
    for i in range(3):
        cache.put(keys[i], "fp", i)
    assert cache.get(keys[0], "fp") == 0  # 0 becomes most recent; 1 is now the oldest
    cache.put(keys[3], "fp", 3)
    assert cache.get(keys[1], "fp") is None
    assert [cache.get(keys[i], "fp") for i in (0, 2, 3)] == [0, 2, 3]
    s = cache.stats
    assert (s.hits, s.misses, s.evictions, s.size) == (4, 1, 1, 3)
    assert s.hit_rate == pytest.approx(0.8)
    cache.clear()
    assert len(cache) == 0 and cache.get(keys[0], "fp") is None


def test_exact_keys_separate_shapes_and_dtypes():
    cache = MemoCache(key="exact")
    a = np.zeros((4, 4), np.uint8)
    assert cache.key(a) != cache.key(np.zeros((2, 8), np.uint8))
    assert cache.key(a) != cache.key(np.zeros((4, 4), np.int8))


def test_radius_lookup_finds_near_duplicates_only():
    cache = MemoCache(capacity=1000, key="dhash64", radius=4)
    base = np.array([0b1011], dtype=np.uint64)
    cache.put(base, "fp", "base")
    for i in range(500):  # distractors far away
        cache.put(np.array([(0xF0F0F0F0F0F0F0F0 ^ (i << 20)) & (2**64 - 1)], dtype=np.uint64), "fp", i)
    near = np.array([0b1011 ^ 0b1110000], dtype=np.uint64)  # 3 bits differ
    far = np.array([0b1011 ^ 0b11111000000], dtype=np.uint64)  # 5 bits differ
    assert cache.get(near, "fp") == "base"
    assert cache.get(far, "fp") is None
    exact0 = MemoCache(capacity=10, key="dhash64", radius=0)
    exact0.put(base, "fp", "base")
    assert exact0.get(near, "fp") is None


def test_fingerprint_change_never_serves_stale_answers():
    cache = MemoCache(key="exact")
    k = cache.key(_img(1))
    cache.put(k, "model-A", "answer of A")
    assert cache.get(k, "model-B") is None
    assert cache.stats.invalidations == 1
    assert cache.get(k, "model-A") is None  # dropped, not kept around for a later switch back


def test_invalid_settings():
    with pytest.raises(ConfigError, match="unknown memo key"):
        MemoCache(key="md5")
    with pytest.raises(ConfigError, match="0 for exact keys"):
        MemoCache(key="exact", radius=2)
    with pytest.raises(ConfigError, match="capacity"):
        MemoCache(capacity=0)
    with pytest.raises(ConfigError, match="square multiple of 64"):
        MemoCache(key="dhash100")


def test_cascade_with_memo_answers_repeats_and_follows_thresholds(two_models):
    memo = MemoCache(capacity=64, key="exact")
    stages = [Stage("a", prepare(two_models[0]), "margin", 0.3), Stage("b", prepare(two_models[1]), "margin", 0.0)]
    cascade = Cascade(stages, preprocessing=Preprocessing(), memo=memo, labels=[str(i) for i in range(10)])
    images = [_img(i) for i in range(10)]
    first = cascade.classify_batch(images)
    again = cascade.classify_batch(images[::-1])
    assert not any(r.memo_hit for r in first) and all(r.memo_hit for r in again)
    assert [r.class_id for r in again] == [r.class_id for r in first][::-1]
    assert all(r.stage_seconds == () for r in again)
    assert cascade.counters.inputs == 10  # the repeats ran no model
    cascade.set_threshold(0, 0.9)  # a new operating point: old answers must not be served
    third = cascade.classify_batch(images)
    assert not any(r.memo_hit for r in third)
    # repeats inside one batch are answered by their first copy
    cascade.memo.clear()
    before = (memo.stats.hits, memo.stats.misses)
    dup = cascade.classify_batch([images[0], images[1], images[0]])
    assert [r.memo_hit for r in dup] == [False, False, True] and dup[0].class_id == dup[2].class_id
    assert (memo.stats.hits - before[0], memo.stats.misses - before[1]) == (1, 2)


def test_lookup_batch_counts_repeats_inside_a_batch_as_hits():
    memo = MemoCache(capacity=8, key="exact")
    a, b = _img(1), _img(2)
    memo.put(memo.key(b), "fp", "answer-b")
    found = memo.lookup_batch([a, b, a, a], "fp")
    assert found.hits == {1: "answer-b"}
    assert found.misses == [0] and found.repeats == {2: 0, 3: 0}
    assert len(found.keys) == 4 and found.keys[0] == found.keys[2]
    assert (memo.stats.hits, memo.stats.misses) == (3, 1)  # b from the cache, two repeats of a


@pytest.mark.parametrize("bits, radius", [(64, 2), (64, 4), (256, 4), (256, 9)])
def test_radius_lookup_agrees_with_brute_force(bits, radius):
    """The multi-index lookup finds exactly what a full scan finds, across evictions."""
    rng = np.random.default_rng(bits + radius)
    cache = MemoCache(capacity=300, key="dhash%d" % bits, radius=radius)
    words = bits // 64
    base = rng.integers(0, 2**63, (40, words), dtype=np.int64).astype(np.uint64)
    for step in range(600):
        parent = base[rng.integers(0, 40)].copy()
        flips = rng.integers(0, bits, rng.integers(0, radius * 2 + 2))
        for f in flips:
            parent[f // 64] ^= np.uint64(1) << np.uint64(63 - f % 64)
        if rng.uniform() < 0.5:
            cache.put(parent, "fp", step)
        else:
            got = cache.get(parent, "fp")
            live = [cache._table[s] for s in cache._slot_of.values()]
            dists = [int(popcount(np.bitwise_xor(parent, w)).sum()) for w in live]
            assert (got is not None) == (min(dists, default=bits + 1) <= radius)
