"""Memo cache: a bounded LRU map from an input key to a cascade answer.

Keys are an exact digest of the input bytes, or a difference hash (dHash) matched within a Hamming
radius. Every entry belongs to a cascade fingerprint: when the fingerprint changes (another model,
threshold or temperature), the old entries are dropped, so a stale answer is never served.

Lean by design, because a memo that costs more than it saves makes the cascade dearer:

- a lookup first hashes the input's bytes (an exact pre-key, about 1 µs) and finds an exact repeat with one
  dict lookup; only otherwise is the key computed (for a small image a numpy dHash, no OpenCV: 9–12 µs alone,
  about 25 µs between model calls) and looked up, so a near-duplicate still hits;
- storage is compact: keys in one ``(capacity, words)`` uint64 table, answers in arrays (class, stage,
  confidence and OOD score, probabilities), the LRU order in two int32 arrays, the Hamming-radius index in sorted arrays;
- **adaptive sampling** (:class:`Sampling`): the cache measures what a lookup, a store and a miss cost, and
  its hit rate; when the hit rate is below the break-even rate (judged first after 128 inputs, then every
  512) it looks up (and stores) only the inputs whose content falls in one part in ``every`` (a CRC-32 of
  their bytes, so every copy of a repeated input is looked up, or none), plus one input in ``4 × every`` by
  position; it backs off to one in ``max_every`` (64) while no hit comes (after four windows there, picked by
  position only: no hash per input), and resumes full lookups as soon as the sampled hits say repeats are
  back. A hit on a short key (``dhash64``, the paper's) counts as a repeat for these decisions only when a
  check stored beside the entry (the grid's vertical comparisons) agrees as well: distinct images that share
  a 64-bit key are answered from the memo, as the paper's memo answers them, but do not keep it looking up.
"""
from __future__ import annotations

import array
import numbers
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from edgeconf.errors import ConfigError
from edgeconf.hashing import dhash_bytes, dhash_check, dhash_side, exact_digest, hamming, prekey, sample_hash

Key = Union[bytes, np.ndarray]

#: edgeconf's default key: a 256-bit dHash had no collisions on FashionMNIST, the paper's 64-bit one did.
DEFAULT_KEY = "dhash256"
#: Bytes of an exact key (a 128-bit BLAKE2b digest of dtype, shape and bytes).
EXACT_BYTES = 16
#: dHash keys of fewer bits than this are stored with a check (:func:`edgeconf.hashing.dhash_check`): distinct
#: images share a 64-bit key often enough (563 of the 10,000 FashionMNIST test images share one with an earlier
#: image; none share a 256-bit key) that the sampling counts a hit as a repeat only when the check agrees too.
CHECKED_BELOW_BITS = 128
#: Most entries a memo cache may hold (its table is allocated up front); a bundle's manifest has the same cap
#: (``edgeconf.bundle.MAX_MEMO_CAPACITY``).
MAX_CAPACITY = 1 << 20


class Answer(NamedTuple):
    """A stored answer: what a memo hit returns."""

    class_id: int
    confidence: float
    stage: int
    probs: np.ndarray
    ood_score: Optional[float] = None  # the answer's OOD score (None: no stage with an OOD rule ran)


_new_answer = tuple.__new__  # builds an Answer from a tuple without the Python-level __new__ of a NamedTuple


@dataclass
class MemoStats:
    """Counters of a memo cache. ``skipped``: inputs not looked up because the cache was sampling."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0
    size: int = 0
    capacity: int = 0
    skipped: int = 0
    sampling: bool = False  # looking up only one input in `every` right now
    switches: int = 0  # changes between full lookups and sampling
    every: int = 1  # the sampling interval now (1: full lookups)
    break_even: Optional[float] = None  # the hit rate above which lookups pay, as last measured

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> Optional[float]:
        return self.hits / self.lookups if self.lookups else None

    def to_json(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                "invalidations": self.invalidations, "size": self.size, "capacity": self.capacity,
                "hit_rate": self.hit_rate, "skipped": self.skipped, "sampling": self.sampling,
                "switches": self.switches, "every": self.every, "break_even": self.break_even}


@dataclass
class BatchLookup:
    """What :meth:`MemoCache.lookup_batch` found for a batch of inputs.

    ``hits``: index → stored answer. ``repeats``: index → earlier index in the same batch with the same key
    (answered by that input once it is computed). ``misses``: indices to compute, in batch order; a miss
    whose key is None was not looked up (sampling) and is not stored. ``prekeys``: each input's exact
    pre-key (None where it was not computed), stored with the answer by :meth:`MemoCache.put`.
    ``looked_up`` inputs were looked up (not skipped by the sampling), ``looked_up_hits`` of them hit or
    repeat (a short key's hit only where its check agrees: a repeat, not a collision): what
    :meth:`MemoCache.observe_batch` prices. ``checks``: each input's check (short keys), stored by :meth:`put`.
    """

    keys: List[Optional[bytes]]
    hits: Dict[int, Answer]
    repeats: Dict[int, int]
    misses: List[int]
    prekeys: List[Optional[int]]
    looked_up: int = 0
    looked_up_hits: int = 0
    checks: List[Optional[bytes]] = field(default_factory=list)

    def check(self, i: int) -> Optional[bytes]:
        """Input ``i``'s check, or None."""
        return self.checks[i] if i < len(self.checks) else None


@dataclass(frozen=True)
class Sampling:
    """Adaptive sampling of memo lookups.

    Full lookups cost ``lookup`` per input plus ``store`` per miss and save ``miss`` (the cascade's cost) per
    hit, so they pay while the hit rate ``h`` exceeds the break-even rate ``(lookup + store) / (miss + store)``.
    The cache prices lookups, stores and misses as it runs (moving averages over one lookup in eight, the
    first one left out because it pays one-time costs, and each price capped at four times the average, so
    a descheduled moment does not count as the memo's cost; or ``break_even`` fixes the rate) and compares
    the hit rate with it, first after ``warmup`` inputs, then every ``window`` inputs:

    - full lookups → sampling when the hit rate is below ``leave`` × break-even. While sampling, an input is
      looked up (and stored) when its content falls in one part in ``every`` (a CRC-32 of its bytes,
      :func:`edgeconf.hashing.sample_hash`), so both copies of a repeated input are looked up or neither
      is: the sampled inputs hit as often as the stream's do. One input in ``positional`` × ``every`` is also
      looked up by its position, whatever its content, so that repeats of inputs the content never picks
      (a small repeating set) are seen too. The others go straight to the cascade;
    - **backoff**: each sampling window without a hit doubles the interval, up to ``max_every`` (a stream
      that never repeats costs ever fewer lookups; the content picked at ``2 × every`` is part of the content
      picked at ``every``, so stored inputs stay findable). After four windows without a hit at ``max_every``
      (when it is above ``every``), inputs are picked by position only, one in ``max_every``: a long stretch
      without repeats then costs no hash per input. A window with a hit brings the interval back to
      ``every``, picked by content;
    - sampling → full lookups when the hit rate of the looked-up inputs (by content and by position) × the
      interval reaches ``resume`` × break-even. Scaling up errs towards full lookups, which never lose a hit
      and store for later: the start of a shuffled stream with repeats has few of them, and what full
      lookups store there pays later.
    """

    every: int = 8
    window: int = 512
    warmup: int = 128
    leave: float = 0.5
    resume: float = 1.25
    break_even: Optional[float] = None
    max_every: int = 64
    positional: int = 4

    def __post_init__(self) -> None:
        if self.every < 1 or self.window < 1 or self.warmup < 0 or self.resume <= 0 or self.leave <= 0:
            raise ConfigError("memo sampling needs every >= 1, window >= 1, warmup >= 0, leave > 0 and resume > 0")
        if self.max_every < self.every:
            raise ConfigError("memo sampling max_every (%d) must be >= every (%d)" % (self.max_every, self.every))
        if self.positional < 1:
            raise ConfigError("memo sampling positional must be >= 1, got %d" % self.positional)
        if self.break_even is not None and not 0.0 <= self.break_even <= 1.0:
            raise ConfigError("memo sampling break_even must be a hit rate in [0, 1], got %r" % (self.break_even,))

    def to_json(self) -> dict:
        return {"every": self.every, "window": self.window, "warmup": self.warmup, "leave": self.leave,
                "resume": self.resume, "break_even": self.break_even, "max_every": self.max_every,
                "positional": self.positional}


class _Sampler:
    """The state of :class:`Sampling` in one cache."""

    __slots__ = ("cfg", "full", "every", "skip", "since", "checks", "hits", "total", "lookup_s", "store_s", "miss_s",
                 "stats", "to_price", "cold", "idle", "deep")

    #: lookups between two priced ones (the clock is read around one lookup in this many)
    PRICE_EVERY = 8
    #: a price above this many times its moving average is capped there (a preempted or descheduled moment)
    CAP = 4.0
    #: windows without a hit at ``max_every`` after which inputs are picked by position only (no hash)
    DEEP_AFTER = 4

    def __init__(self, cfg: Sampling, stats: MemoStats) -> None:
        self.cfg = cfg
        self.stats = stats
        self.full = True
        self.every = cfg.every  # the sampling interval now (backs off up to cfg.max_every)
        self.skip = 0  # inputs left before the next one picked by position
        self.since = 0  # inputs since the last decision
        self.checks = self.hits = self.total = 0  # looked up (and hits) since the last decision; inputs seen
        self.lookup_s: Optional[float] = None
        self.store_s: Optional[float] = None
        self.miss_s: Optional[float] = None
        self.to_price = 0
        self.cold = True  # the first priced lookup pays one-time costs (plans, buffers): not a price
        self.idle = 0  # windows in a row without a hit at max_every
        self.deep = False  # idle for DEEP_AFTER windows: picks by position only, one in max_every

    def price(self) -> bool:
        """Whether to time this lookup (one in :attr:`PRICE_EVERY`, the first one included)."""
        if self.to_price:
            self.to_price -= 1
            return False
        self.to_price = self.PRICE_EVERY - 1
        return True

    def count(self, hit: bool) -> None:
        """A looked-up input that was not priced."""
        self._tally(int(hit), 1)

    def skips(self, image: np.ndarray) -> bool:
        """While sampling: whether to skip this input (counted as skipped). Picked by content (one part in
        ``every`` of :func:`~edgeconf.hashing.sample_hash`) or by position (one input in ``positional`` ×
        ``every``); once backed off for long (``deep``), by position only, one in ``every``, with no hash."""
        if self.deep:
            interval = self.every
        elif not sample_hash(image) % self.every:
            return False
        else:
            interval = self.cfg.positional * self.every
        if self.skip:
            self.skip -= 1
            self.since += 1
            self.total += 1
            self.stats.skipped += 1
            return True
        self.skip = interval - 1
        return False

    def _avg(self, old: Optional[float], new: float) -> float:
        if old is None:
            return new
        return old + 0.05 * (min(new, self.CAP * old) - old)

    def observe(self, hits: int, lookup_s: float, miss_s: Optional[float] = None, store_s: Optional[float] = None,
                n: int = 1) -> None:
        """Costs of ``n`` looked-up inputs (per input), ``hits`` of them hits."""
        if self.cold:
            self.cold = False
        else:
            self.lookup_s = self._avg(self.lookup_s, lookup_s)
            if miss_s is not None:
                self.miss_s = self._avg(self.miss_s, miss_s)
            if store_s is not None:
                self.store_s = self._avg(self.store_s, store_s)
        self._tally(hits, n)

    def _tally(self, hits: int, n: int) -> None:
        self.hits += hits
        self.checks += n
        self.since += n
        self.total += n
        # decisions every window, and a first one after `warmup` inputs when that comes before the first window
        if self.since >= self.cfg.window or (self.since == self.total and self.total - n < self.cfg.warmup <= self.total):
            self._decide()

    def break_even(self) -> Optional[float]:
        if self.cfg.break_even is not None:
            return self.cfg.break_even
        if self.lookup_s is None or self.miss_s is None:
            return None  # not measured yet: keep full lookups
        store = self.store_s or 0.0
        return min(1.0, (self.lookup_s + store) / max(self.miss_s + store, 1e-12))

    def _decide(self) -> None:
        rate = self.hits / self.checks if self.checks else 0.0
        hits = self.hits
        self.since = self.checks = self.hits = 0
        be = self.break_even()
        self.stats.break_even = be
        if be is None:
            return
        cfg = self.cfg
        if self.full:
            if self.total >= cfg.warmup and rate < cfg.leave * be:
                self.full = False
                self.every = cfg.every
                self.skip = cfg.positional * self.every - 1
                self.stats.switches += 1
        elif rate * self.every >= cfg.resume * be:
            self.full = True
            self.skip = 0
            self.stats.switches += 1
        elif hits:
            self.every = cfg.every
            self.skip = min(self.skip, cfg.positional * self.every - 1)
        elif self.every < cfg.max_every:
            self.every = min(2 * self.every, cfg.max_every)
        else:
            self.idle += 1
            if self.idle >= self.DEEP_AFTER and not self.deep and cfg.max_every > cfg.every:
                self.deep = True
                self.skip = min(self.skip, self.every - 1)
        if self.full or hits:
            self.idle = 0
            self.deep = False
        self.stats.sampling = not self.full
        self.stats.every = 1 if self.full else self.every


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


class _RadiusIndex:
    """Multi-index hashing in arrays: a key within radius ``r`` of a stored key agrees with it exactly on at
    least one of ``r + 1`` byte parts (pigeonhole). Each stored key enters one 64-bit hash per part into a
    sorted array (with its slot and the slot's generation); recent entries wait in a small dict until the next
    merge. Lookups return candidate slots; the caller compares whole keys. Entries of evicted or reused slots
    are dropped at the next merge (their generation no longer matches)."""

    def __init__(self, parts: List[Tuple[int, int]]) -> None:
        self.parts = parts
        self.clear()

    def clear(self) -> None:
        self.keys = np.zeros(0, dtype=np.int64)  # sorted part hashes
        self.slots = np.zeros(0, dtype=np.int32)
        self.gens = np.zeros(0, dtype=np.uint32)
        self.pending: Dict[int, List[Tuple[int, int]]] = {}
        self.pending_n = 0

    def part_hashes(self, kb: bytes) -> List[int]:
        return [hash((i, kb[a:b])) for i, (a, b) in enumerate(self.parts)]

    def add(self, kb: bytes, slot: int, gen: int, all_gens: np.ndarray) -> None:
        for h in self.part_hashes(kb):
            self.pending.setdefault(h, []).append((slot, gen))
        self.pending_n += len(self.parts)
        if self.pending_n > max(4096, self.keys.size // 8):
            self.merge(all_gens)

    def merge(self, all_gens: np.ndarray) -> None:
        n = self.pending_n
        keys = np.empty(n, dtype=np.int64)
        slots = np.empty(n, dtype=np.int32)
        gens = np.empty(n, dtype=np.uint32)
        i = 0
        for h, entries in self.pending.items():
            for slot, gen in entries:
                keys[i], slots[i], gens[i] = h, slot, gen
                i += 1
        keys = np.concatenate([self.keys, keys[:i]])
        slots = np.concatenate([self.slots, slots[:i]])
        gens = np.concatenate([self.gens, gens[:i]])
        live = all_gens[slots] == gens
        keys, slots, gens = keys[live], slots[live], gens[live]
        order = np.argsort(keys, kind="stable")
        self.keys, self.slots, self.gens = keys[order], slots[order], gens[order]
        self.pending = {}
        self.pending_n = 0

    def candidates(self, kb: bytes) -> np.ndarray:
        q = np.array(self.part_hashes(kb), dtype=np.int64)
        lo = np.searchsorted(self.keys, q, "left")
        hi = np.searchsorted(self.keys, q, "right")
        found = [self.slots[a:b] for a, b in zip(lo.tolist(), hi.tolist()) if b > a]
        for h in q.tolist():
            entries = self.pending.get(h)
            if entries:
                found.append(np.array([s for s, _ in entries], dtype=np.int32))
        return np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int32)

    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.slots.nbytes + self.gens.nbytes)


class MemoCache:
    """Bounded LRU memo of cascade answers keyed by input, with Hamming-radius lookup and adaptive sampling.

    Each stored answer also keeps the exact pre-key of the input it was computed for
    (:func:`edgeconf.hashing.prekey`), so an exact repeat is answered without computing its key; the answer is
    the one the key's lookup would give (equal bytes have equal keys).

    ``sampling``: a :class:`Sampling` (the default), or None for a lookup on every input. ``clock``: the
    clock that prices lookups, stores and misses for the sampling (tests inject one).
    """

    def __init__(self, capacity: int = 4096, key: str = DEFAULT_KEY, radius: int = 0,
                 sampling: Optional[Sampling] = Sampling(), clock: Callable[[], float] = time.perf_counter) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) \
                or not 1 <= capacity <= MAX_CAPACITY:
            raise ConfigError("memo capacity must be a whole number of entries in [1, %d] (its table is allocated up "
                              "front), got %r" % (MAX_CAPACITY, capacity))
        if not isinstance(key, str):
            raise ConfigError("memo key must be a key kind: 'exact', 'dhash64', 'dhash256' or 'dhash1024', got %r"
                              % (key,))
        self.bits = parse_key_kind(key)
        if isinstance(radius, bool) or not isinstance(radius, numbers.Integral):
            raise ConfigError("memo radius must be a whole number of bits >= 0, got %r" % (radius,))
        if sampling is not None and not isinstance(sampling, Sampling):
            raise ConfigError("memo sampling must be an edgeconf.memo.Sampling (Sampling() for the default) or None "
                              "(look up every input), got %r" % (sampling,))
        if not callable(clock):
            raise ConfigError("memo clock must be a function returning seconds, got %r" % (clock,))
        if radius < 0 or (self.bits == 0 and radius):
            raise ConfigError("memo radius must be >= 0, and 0 for exact keys (got %d with %s)" % (radius, key))
        if self.bits and radius >= self.bits:
            raise ConfigError("memo radius %d is not below the hash size of %d bits" % (radius, self.bits))
        self.kind = key
        self.radius = int(radius)
        self.capacity = int(capacity)
        self.key_bytes = self.bits // 8 if self.bits else EXACT_BYTES
        self.stats = MemoStats(capacity=self.capacity)
        self.sampling = sampling
        self.clock = clock
        self._sampler = _Sampler(sampling, self.stats) if sampling is not None else None
        cap = self.capacity
        # keys, one row of key_bytes per slot: written as bytes, read as uint64 words for Hamming distances
        self._keys = bytearray(cap * self.key_bytes)
        self._table = np.frombuffer(self._keys, dtype=np.uint64).reshape(cap, max(1, self.key_bytes // 8))
        self._live = bytearray(cap)  # 1 while the slot holds an entry
        self._valid = np.frombuffer(self._live, dtype=bool)
        self._gens = array.array("I", bytes(4 * cap))  # bumped when a slot gets a new key (radius index)
        self._gen = np.frombuffer(self._gens, dtype=np.uint32)
        self._class = array.array("i", bytes(4 * cap))
        self._stage = array.array("b", bytes(cap))
        self._conf = array.array("d", bytes(16 * cap))  # per slot: confidence, OOD score (NaN: none)
        self._probs: Optional[np.ndarray] = None  # (capacity, classes) float32, made at the first store
        # LRU order: a doubly linked list over slots; node `cap` is the head (its next is the oldest entry)
        self._prev = array.array("i", range(cap + 1))
        self._next = array.array("i", range(cap + 1))
        self._slot_of: Dict[bytes, int] = {}
        # exact pre-keys (edgeconf.hashing.prekey) of the stored inputs → slot: an exact repeat is found
        # without its dHash; each slot holds at most one pre-key, dropped when the slot is evicted
        self._pre: Dict[int, int] = {}
        self._pre_of = array.array("q", bytes(8 * cap))
        self._has_pre = bytearray(cap)
        # a short key's check per slot (CHECKED_BELOW_BITS): check_bytes bytes and a flag byte (0 where the entry
        # was stored without one); empty for other keys. (No more attributes here: above 30 instance attributes
        # CPython 3.11 stops sharing the instance dict's keys and every attribute read gets slower.)
        n = -(-(dhash_side(self.bits) - 1) * (dhash_side(self.bits) + 1) // 8) if 0 < self.bits < CHECKED_BELOW_BITS else 0
        self._checks = bytearray(cap * (n + 1) if n else 0)
        self._high = 0  # slots below this one hold entries (the cache fills up from slot 0, then evicts)
        self._fingerprint: Optional[str] = None
        self._index = _RadiusIndex(_byte_parts(self.key_bytes, self.radius + 1)) if self.radius else None

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def check_bytes(self) -> int:
        """Bytes of a stored key's check (0: this key kind has none)."""
        return len(self._checks) // self.capacity - 1 if self._checks else 0

    # -- keys ----------------------------------------------------------------------------------
    def key(self, image: np.ndarray) -> bytes:
        """The cache key of a raw input image: a 16-byte digest (exact) or the dHash's bytes."""
        return exact_digest(image) if self.bits == 0 else dhash_bytes(image, self.bits)

    def key_check(self, image: np.ndarray) -> Tuple[bytes, Optional[bytes]]:
        """(:meth:`key`, its check): a short dHash key's check (:data:`CHECKED_BELOW_BITS`) from the same grid,
        else None."""
        if self._checks:
            return dhash_check(image, self.bits)
        return self.key(image), None

    def _bytes(self, key: Key) -> bytes:
        if isinstance(key, bytes):
            kb = key
        else:  # dHash uint64 words as edgeconf.hashing.dhash returns them
            kb = np.asarray(key, dtype=np.uint64).astype(">u8").tobytes()
        if len(kb) != self.key_bytes:
            raise ConfigError("a %s memo key has %d bytes, got %d" % (self.kind, self.key_bytes, len(kb)))
        return kb

    def distance(self, a: Optional[bytes], b: Optional[bytes]) -> int:
        """Hamming distance of two keys of this cache (0 only for equal keys; large for a missing key)."""
        if a is None or b is None or len(a) != len(b):
            return 1 << 30
        if a == b:
            return 0
        if self.bits == 0:
            return 1 << 30  # exact keys are equal or not
        return int(hamming(np.frombuffer(a, np.uint64), np.frombuffer(b, np.uint64)[None, :])[0])

    # -- lookups -------------------------------------------------------------------------------
    def _check_fingerprint(self, fingerprint: str) -> None:
        if fingerprint != self._fingerprint:
            if self._slot_of:
                self.stats.invalidations += 1
            self._drop_all()
            self._fingerprint = fingerprint

    def _near(self, kb: bytes) -> Optional[int]:
        """The slot of a stored key within the radius of ``kb`` (radius index), or None."""
        if not self._slot_of:
            return None
        cands = self._index.candidates(kb)  # type: ignore[union-attr]
        if cands.size:
            cands = cands[self._valid[cands]]
        if not cands.size:
            return None
        dist = hamming(np.frombuffer(kb, np.uint64), self._table[cands])
        best = int(np.argmin(dist))
        return int(cands[best]) if dist[best] <= self.radius else None

    def _touch(self, slot: int) -> None:
        """Move ``slot`` to the most recent end of the LRU list."""
        prev, nxt, head = self._prev, self._next, self.capacity
        p, n = prev[slot], nxt[slot]
        nxt[p] = n
        prev[n] = p
        last = prev[head]
        nxt[last] = slot
        prev[slot] = last
        nxt[slot] = head
        prev[head] = slot

    def _hit(self, slot: int) -> Answer:
        """Count a hit on ``slot``, make it the most recent entry and return a copy of its answer."""
        self.stats.hits += 1
        self._touch(slot)
        probs = self._probs[slot].copy() if self._probs is not None else np.zeros(0, np.float32)
        conf = self._conf
        ood = conf[slot + slot + 1]
        return _new_answer(Answer, (self._class[slot], conf[slot + slot], self._stage[slot], probs,
                                    None if ood != ood else ood))

    def get(self, key: Key, fingerprint: str) -> Optional[Answer]:
        """The stored answer for ``key`` under ``fingerprint``, or None (counted as hit or miss)."""
        if fingerprint != self._fingerprint:
            self._check_fingerprint(fingerprint)
        slot = self._found(key if type(key) is bytes and len(key) == self.key_bytes else self._bytes(key))
        return None if slot is None else self._hit(slot)

    def _found(self, kb: bytes) -> Optional[int]:
        """The slot of key ``kb`` (exact, else within the radius), or None (counted as a miss)."""
        slot = self._slot_of.get(kb)
        if slot is None and self._index is not None:
            slot = self._near(kb)
        if slot is None:
            self.stats.misses += 1
        return slot

    def probe(self, pre: int, fingerprint: str) -> Optional[Answer]:
        """The stored answer of the input whose exact pre-key is ``pre``, or None; a hit is counted (a miss
        is not: the caller goes on to the key, or skips the input)."""
        if fingerprint != self._fingerprint:
            self._check_fingerprint(fingerprint)
        slot = self._pre.get(pre)
        return None if slot is None else self._hit(slot)

    def _lookup(self, image: np.ndarray, fingerprint: str
                ) -> Tuple[Optional[Answer], bool, int, Optional[bytes], Optional[bytes]]:
        """(stored answer or None, whether the hit is a repeat, pre-key, key, check): the pre-key first, the key
        (and a short key's check) only when it finds nothing."""
        pre = prekey(image)
        hit = self.probe(pre, fingerprint)
        if hit is not None:
            return hit, True, pre, None, None
        if self._checks:
            kb, check = self.key_check(image)
            slot = self._found(kb)
            if slot is None:
                return None, False, pre, kb, check
            return self._hit(slot), self._agrees(slot, check), pre, kb, check
        kb = self.key(image)  # (no check: the same calls as before checks existed, on the path every miss takes)
        return self.get(kb, fingerprint), True, pre, kb, None

    def _agrees(self, slot: int, check: Optional[bytes]) -> bool:
        """Whether an input with this check repeats the one stored in ``slot``: the checks agree within the
        cache's radius (True where either has no check)."""
        n = self.check_bytes + 1
        if check is None or not self._checks[slot * n + n - 1]:
            return True
        stored = self._checks[slot * n:slot * n + n - 1]
        if stored == check:
            return True
        return bool(self.radius) and bin(int.from_bytes(stored, "big") ^ int.from_bytes(check, "big")).count("1") <= self.radius

    def answer(self, image: np.ndarray, fingerprint: str, compute: Callable[[np.ndarray], Any]) -> Tuple[Optional[Answer], Any]:
        """``(hit, None)`` for a stored answer, else ``(None, compute(image))``, stored when it was looked up
        (unless it is a remote stage's fallback answer: ``remote_failure`` set).

        The batch-1 path of the cascade: the exact pre-key, then (when it finds nothing) the key and its
        lookup, and on a miss the cascade and a store; one lookup in eight is priced with :attr:`clock` for
        the adaptive sampling. While sampling, an input that is not looked up (:meth:`skip`) goes straight to
        ``compute`` and is not stored.
        """
        if self.skip(image):
            return None, compute(image)
        return self.lookup_answer(image, fingerprint, compute)

    def skip(self, image: np.ndarray) -> bool:
        """True when the sampling skips this input (counted as skipped): compute it, do not store it.
        Otherwise :meth:`lookup_answer` answers it (:meth:`answer` is the two in one call). While sampling,
        the choice depends on the input's content (:func:`edgeconf.hashing.sample_hash`), so the copies of a
        repeated input are all looked up or all skipped."""
        sampler = self._sampler
        return sampler is not None and not sampler.full and sampler.skips(image)

    def lookup_answer(self, image: np.ndarray, fingerprint: str, compute: Callable[[np.ndarray], Any]
                      ) -> Tuple[Optional[Answer], Any]:
        """:meth:`answer` for an input that :meth:`skip` let through."""
        sampler = self._sampler
        if sampler is None or not sampler.price():
            hit, repeat, pre, kb, check = self._lookup(image, fingerprint)
            if hit is not None:
                if sampler is not None:
                    sampler.count(repeat)
                return hit, None
            res = compute(image)
            if getattr(res, "remote_failure", None) is None:  # a fallback answer is never remembered
                self.put(kb, fingerprint, res, pre, check)
            if sampler is not None:
                sampler.count(False)
            return None, res
        clock = self.clock
        t0 = clock()
        hit, repeat, pre, kb, check = self._lookup(image, fingerprint)
        t1 = clock()
        if hit is not None:
            sampler.observe(int(repeat), t1 - t0)
            return hit, None
        res = compute(image)
        t2 = clock()
        if getattr(res, "remote_failure", None) is None:  # a fallback answer is never remembered
            self.put(kb, fingerprint, res, pre, check)
        t3 = clock()
        sampler.observe(0, t1 - t0, t2 - t1, t3 - t2)
        return None, res

    def lookup_batch(self, images: Sequence[np.ndarray], fingerprint: str) -> BatchLookup:
        """Look up a batch of raw inputs at once.

        An input whose key equals an earlier miss in the same batch is a repeat: it will be answered by that
        input, so it counts as a hit (the stream saw it before), while the first copy counts as a miss.
        Inputs the sampling skips are misses with key None.
        """
        keys: List[Optional[bytes]] = []
        checks: List[Optional[bytes]] = []
        prekeys: List[Optional[int]] = []
        hits: Dict[int, Answer] = {}
        repeats: Dict[int, int] = {}
        misses: List[int] = []
        first_of: Dict[bytes, int] = {}
        sampler = self._sampler
        looked_up = found = 0
        for i, image in enumerate(images):
            if sampler is not None and not sampler.full:
                if sampler.skips(image):
                    keys.append(None)
                    checks.append(None)
                    prekeys.append(None)
                    misses.append(i)
                    continue
            looked_up += 1
            pre = prekey(image)
            prekeys.append(pre)
            hit = self.probe(pre, fingerprint)
            if hit is not None:
                keys.append(None)
                checks.append(None)
                hits[i] = hit
                found += 1
                continue
            kb, check = self.key_check(image)
            keys.append(kb)
            checks.append(check)
            if kb in first_of:
                first = first_of[kb]
                repeats[i] = first
                self.stats.hits += 1
                found += check is None or check == checks[first]
                continue
            slot = self._found(kb)
            if slot is not None:
                hits[i] = self._hit(slot)
                found += self._agrees(slot, check)
            else:
                first_of[kb] = i
                misses.append(i)
        return BatchLookup(keys, hits, repeats, misses, prekeys, looked_up, found, checks)

    def observe_batch(self, looked_up: int, hits: int, lookup_s: float, misses: int, miss_s: float,
                      store_s: float) -> None:
        """Costs of one batch (totals) for the adaptive sampling: how many inputs were looked up, how many
        hit, and the seconds spent looking up, computing the misses and storing them."""
        if self._sampler is None or looked_up <= 0:
            return
        per_miss = miss_s / misses if misses else None
        per_store = store_s / misses if misses else None
        self._sampler.observe(hits, lookup_s / looked_up, per_miss, per_store, n=looked_up)

    # -- storing -------------------------------------------------------------------------------
    def put(self, key: Optional[Key], fingerprint: str, value: Any, pre: Optional[int] = None,
            check: Optional[bytes] = None) -> None:
        """Store ``value`` (anything with ``class_id``, ``confidence``, ``stage``, ``probs``, and optionally
        ``ood_score``) for ``key``;
        evicts the least recently used entry when full. A None key (an input sampling skipped) is ignored.
        ``pre``: the input's exact pre-key (:func:`edgeconf.hashing.prekey`), so that an exact repeat of this
        input is found without its key. ``check``: a short key's check (:func:`edgeconf.hashing.dhash_check`),
        so that a later hit on this entry counts as a repeat only when its input's check agrees."""
        if key is None:
            return
        if fingerprint != self._fingerprint:
            self._check_fingerprint(fingerprint)
        kb = key if type(key) is bytes and len(key) == self.key_bytes else self._bytes(key)
        if self._probs is None:
            self._probs = np.zeros((self.capacity, np.asarray(value.probs).reshape(-1).shape[0]), dtype=np.float32)
        slot = self._slot_of.get(kb)
        if slot is None:
            if self._high < self.capacity:
                slot = self._high
                self._high += 1
            else:
                slot = self._evict()
            self._slot_of[kb] = slot
            n = self.key_bytes
            self._keys[slot * n:slot * n + n] = kb
            self._live[slot] = 1
            gen = self._gens[slot] + 1
            self._gens[slot] = gen
            if self._index is not None:
                self._index.add(kb, slot, gen, self._gen)
            self.stats.size = len(self._slot_of)
        try:
            self._probs[slot] = value.probs
        except ValueError:
            raise ConfigError("memo answers must all have %d class probabilities, got shape %s"
                              % (self._probs.shape[1], np.shape(value.probs))) from None
        self._class[slot] = int(value.class_id)
        ood = getattr(value, "ood_score", None)
        self._conf[slot + slot] = float(value.confidence)
        self._conf[slot + slot + 1] = float("nan") if ood is None else float(ood)
        self._stage[slot] = int(value.stage)
        if pre is not None:
            self._set_pre(slot, pre)
        if self._checks:
            self._set_check(slot, check)
        self._touch(slot)

    def _set_check(self, slot: int, check: Optional[bytes]) -> None:
        n = self.check_bytes
        if check is not None and len(check) == n:
            self._checks[slot * (n + 1):slot * (n + 1) + n + 1] = check + b"\x01"
        else:
            self._checks[slot * (n + 1) + n] = 0

    def _set_pre(self, slot: int, pre: int) -> None:
        """``slot`` holds the answer of the input whose pre-key is ``pre`` (one pre-key per slot)."""
        if self._has_pre[slot]:
            if self._pre_of[slot] == pre:
                return
            self._drop_pre(slot)
        other = self._pre.get(pre)
        if other is not None:  # the same input stored under another key (only a caller's own keys do that)
            self._has_pre[other] = 0
        self._pre[pre] = slot
        self._pre_of[slot] = pre
        self._has_pre[slot] = 1

    def _drop_pre(self, slot: int) -> None:
        pre = self._pre_of[slot]
        if self._pre.get(pre) == slot:
            del self._pre[pre]
        self._has_pre[slot] = 0

    def _evict(self) -> int:
        oldest = self._next[self.capacity]
        n = self.key_bytes
        del self._slot_of[bytes(self._keys[oldest * n:oldest * n + n])]
        self._live[oldest] = 0
        if self._has_pre[oldest]:
            self._drop_pre(oldest)
        self.stats.evictions += 1
        return oldest

    def _drop_all(self) -> None:
        if not self._high:
            return
        cap = self.capacity
        self._slot_of.clear()
        self._live[:] = bytes(cap)
        self._pre.clear()
        self._has_pre[:] = bytes(cap)
        self._high = 0
        self._prev = array.array("i", range(cap + 1))  # an empty LRU list: every node points at itself
        self._next = array.array("i", range(cap + 1))
        if self._index is not None:
            self._index.clear()
        self.stats.size = 0

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._drop_all()

    def settings(self) -> dict:
        return {"key": self.kind, "radius": self.radius, "capacity": self.capacity,
                "sampling": self.sampling.to_json() if self.sampling is not None else None}

    def nbytes(self) -> int:
        """Bytes held in arrays (keys, pre-keys, short keys' checks, answers, LRU list, radius index); the key
        and pre-key dicts come on top."""
        arrays = [self._table, self._valid, self._gen] + ([self._probs] if self._probs is not None else [])
        # (_table, _valid and _gen are views of the bytearrays/arrays that hold the data: counted once)
        lists = [self._class, self._stage, self._conf, self._prev, self._next, self._pre_of]
        index = len(self._has_pre) + len(self._checks) + (
            self._index.nbytes() if self._index is not None else 0)
        return int(sum(a.nbytes for a in arrays) + sum(a.itemsize * len(a) for a in lists) + index)
