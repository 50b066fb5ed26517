"""Memo cache: a bounded LRU map from an input key to a cascade answer.

Keys are an exact digest of the input bytes, or a difference hash (dHash) matched within a Hamming
radius. Every entry belongs to a cascade fingerprint: when the fingerprint changes (another model,
threshold or temperature), the old entries are dropped, so a stale answer is never served.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from edgeconf.errors import ConfigError
from edgeconf.hashing import dhash, exact_digest, hamming

Key = Union[bytes, np.ndarray]

#: edgeconf's default key: a 256-bit dHash had no collisions on FashionMNIST, the paper's 64-bit one did.
DEFAULT_KEY = "dhash256"


@dataclass
class MemoStats:
    """Counters of a memo cache."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0
    size: int = 0
    capacity: int = 0

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> Optional[float]:
        return self.hits / self.lookups if self.lookups else None

    def to_json(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "invalidations": self.invalidations, "size": self.size, "capacity": self.capacity,
                "hit_rate": self.hit_rate}


@dataclass
class BatchLookup:
    """What :meth:`MemoCache.lookup_batch` found for a batch of inputs.

    ``hits``: index → stored answer. ``repeats``: index → earlier index in the same batch with the same key
    (answered by that input once it is computed). ``misses``: indices to compute, in batch order.
    """

    keys: List["Key"]
    hits: Dict[int, Any]
    repeats: Dict[int, int]
    misses: List[int]


def parse_key_kind(kind: str) -> int:
    """0 for ``exact``; the number of bits for ``dhashN``."""
    if kind == "exact":
        return 0
    m = re.fullmatch(r"dhash(\d+)", kind)
    if not m:
        raise ConfigError("unknown memo key %r; use 'exact', 'dhash64' or 'dhash256'" % kind)
    bits = int(m.group(1))
    side = int(round(bits ** 0.5))
    if side * side != bits or bits % 64 or bits == 0:
        raise ConfigError("memo key %r: dHash bits must be a square multiple of 64 (64, 256, 1024)" % kind)
    return bits


def _byte_parts(nbytes: int, parts: int) -> List[Tuple[int, int]]:
    """Split ``nbytes`` into ``parts`` contiguous byte ranges of near-equal size ([] when impossible)."""
    if parts > nbytes:
        return []
    bounds = [round(i * nbytes / parts) for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


class MemoCache:
    """Bounded LRU memo of answers keyed by input, with vectorised Hamming-radius lookup."""

    def __init__(self, capacity: int = 4096, key: str = DEFAULT_KEY, radius: int = 0) -> None:
        if capacity < 1:
            raise ConfigError("memo capacity must be >= 1, got %d" % capacity)
        self.bits = parse_key_kind(key)
        if radius < 0 or (self.bits == 0 and radius):
            raise ConfigError("memo radius must be >= 0, and 0 for exact keys (got %d with %s)" % (radius, key))
        if self.bits and radius >= self.bits:
            raise ConfigError("memo radius %d is not below the hash size of %d bits" % (radius, self.bits))
        self.kind = key
        self.radius = int(radius)
        self.capacity = int(capacity)
        words = max(1, self.bits // 64)
        self._table = np.zeros((self.capacity, words), dtype=np.uint64) if self.bits else None
        self._valid = np.zeros(self.capacity, dtype=bool)
        self._values: List[Any] = [None] * self.capacity
        self._keys: List[Optional[bytes]] = [None] * self.capacity
        self._slot_of: Dict[bytes, int] = {}
        self._lru: "OrderedDict[int, None]" = OrderedDict()
        self._free: List[int] = list(range(self.capacity - 1, -1, -1))
        self._high = 0  # slots below this index may be valid
        self._fingerprint: Optional[str] = None
        self.stats = MemoStats(capacity=self.capacity)
        # Multi-index hashing: split the key bytes into radius+1 parts; a key within the radius
        # agrees exactly with a stored key on at least one part (pigeonhole), so exact part lookups
        # give candidates and only those are compared (vectorised) instead of the whole table.
        self._parts = _byte_parts(self.bits // 8, self.radius + 1) if self.radius else []
        self._part_maps: List[Dict[bytes, Set[int]]] = [dict() for _ in self._parts]

    def __len__(self) -> int:
        return len(self._slot_of)

    def key(self, image: np.ndarray) -> Key:
        """The cache key of a raw input image (bytes for exact keys, uint64 words for dHash)."""
        return exact_digest(image) if self.bits == 0 else dhash(image, self.bits)

    @staticmethod
    def _bytes(key: Key) -> bytes:
        return key if isinstance(key, bytes) else key.tobytes()

    def _check_fingerprint(self, fingerprint: str) -> None:
        if fingerprint != self._fingerprint:
            if self._slot_of:
                self.stats.invalidations += 1
            self._drop_all()
            self._fingerprint = fingerprint

    def _find(self, key: Key) -> Optional[int]:
        kb = self._bytes(key)
        slot = self._slot_of.get(kb)
        if slot is not None or self.radius == 0 or not self._slot_of:
            return slot
        words = np.asarray(key, dtype=np.uint64)
        if self._parts:
            cands: Set[int] = set()
            for (a, b), part_map in zip(self._parts, self._part_maps):
                cands.update(part_map.get(kb[a:b], ()))
            if not cands:
                return None
            if len(cands) * 8 < self._high:  # few candidates: compare only those
                idx = np.fromiter(cands, dtype=np.int64, count=len(cands))
                dist = hamming(words, self._table[idx])
                best = int(np.argmin(dist))
                return int(idx[best]) if dist[best] <= self.radius else None
        dist = hamming(words, self._table[: self._high])
        dist = np.where(self._valid[: self._high], dist, self.bits + 1)
        best = int(np.argmin(dist))
        return best if dist[best] <= self.radius else None

    def get(self, key: Key, fingerprint: str) -> Optional[Any]:
        """The stored answer for ``key`` under ``fingerprint``, or None (counted as hit or miss)."""
        self._check_fingerprint(fingerprint)
        slot = self._find(key)
        if slot is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        self._lru.move_to_end(slot)
        return self._values[slot]

    def lookup_batch(self, images: Sequence[np.ndarray], fingerprint: str) -> BatchLookup:
        """Look up a batch of raw inputs at once.

        An input whose key equals an earlier miss in the same batch is a repeat: it will be answered by that
        input, so it counts as a hit (the stream saw it before), while the first copy counts as a miss.
        """
        keys: List[Key] = []
        hits: Dict[int, Any] = {}
        repeats: Dict[int, int] = {}
        misses: List[int] = []
        first_of: Dict[bytes, int] = {}
        for i, image in enumerate(images):
            key = self.key(image)
            keys.append(key)
            kb = self._bytes(key)
            if kb in first_of:
                repeats[i] = first_of[kb]
                self.stats.hits += 1
                continue
            value = self.get(key, fingerprint)
            if value is not None:
                hits[i] = value
            else:
                first_of[kb] = i
                misses.append(i)
        return BatchLookup(keys, hits, repeats, misses)

    def put(self, key: Key, fingerprint: str, value: Any) -> None:
        """Store ``value`` for ``key``; evicts the least recently used entry when full."""
        self._check_fingerprint(fingerprint)
        kb = self._bytes(key)
        slot = self._slot_of.get(kb)
        if slot is None:
            if not self._free:
                old, _ = self._lru.popitem(last=False)
                self._release(old)
                self.stats.evictions += 1
            slot = self._free.pop()
            self._slot_of[kb] = slot
            self._keys[slot] = kb
            self._valid[slot] = True
            if self._table is not None:
                self._table[slot] = key
            for (a, b), part_map in zip(self._parts, self._part_maps):
                part_map.setdefault(kb[a:b], set()).add(slot)
            self._high = max(self._high, slot + 1)
        self._values[slot] = value
        self._lru[slot] = None
        self._lru.move_to_end(slot)
        self.stats.size = len(self._slot_of)

    def _release(self, slot: int) -> None:
        kb = self._keys[slot]
        if kb is not None:
            del self._slot_of[kb]
            for (a, b), part_map in zip(self._parts, self._part_maps):
                members = part_map[kb[a:b]]
                members.discard(slot)
                if not members:
                    del part_map[kb[a:b]]
        self._keys[slot] = None
        self._values[slot] = None
        self._valid[slot] = False
        self._free.append(slot)

    def _drop_all(self) -> None:
        self._slot_of.clear()
        self._lru.clear()
        for part_map in self._part_maps:
            part_map.clear()
        self._valid[:] = False
        self._values = [None] * self.capacity
        self._keys = [None] * self.capacity
        self._free = list(range(self.capacity - 1, -1, -1))
        self._high = 0
        self.stats.size = 0

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._drop_all()

    def settings(self) -> dict:
        return {"key": self.kind, "radius": self.radius, "capacity": self.capacity}
