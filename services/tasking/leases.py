"""Live leases in Redis, claimed and released by Lua scripts so that every check
and its write happen atomically, across threads and across tasking replicas.

Keys, all under ``<prefix>:`` (the topic prefix plus ``:tasking``):

- ``lease:<lease_id>``: hash (task, job, worker, gold, leased, expires, ttl) whose
  Redis TTL is the lease's remaining life, so an expired lease is simply gone;
- ``task-leases:<task_id>``: sorted set of the task's lease ids scored by expiry
  (epoch ms); members past their score are dead and ignored;
- ``leases``: every lease, member ``lease_id \\x1f task_id \\x1f job_id``, scored
  by expiry: for the sweeper (which cleans the per-task sets after the hash is
  gone) and for counting live leases;
- ``done:<task_id>``: answers counted by Redis when a lease is taken for an
  answer, kept for a minute. The claim trusts the larger of it and the
  caller's (possibly stale) database count, so the moment between taking the
  lease and committing the answer cannot free a slot twice.

Time is Redis's own clock (``TIME``), so replicas with skewed clocks agree.

:class:`MemoryLeaseStore` keeps the same leases in this process's memory, under one
lock: the embedded default (a single tasking process, no ``QUORUM_REDIS_URL``), where
an in-process Redis would interpret the scripts above at several times the cost.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis

from services.tasking.domain import IDLE_CAP_MS, Candidate, Lease

SEP = "\x1f"
DONE_TTL_S = 60

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: all-leases set, lease hash, then per candidate: task set, done counter.
# ARGV: lease id, worker id, then per candidate: task id, job id, wanted (-1: no limit),
# received, ttl ms, gold flag. Returns {index (0: none), now, expires, 1 if now full}.
_CLAIM = (
    _NOW
    + """
local n = (#KEYS - 2) / 2
for i = 0, n - 1 do
  local tz, dk = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local a = 3 + 6 * i
  local task, job = ARGV[a], ARGV[a + 1]
  local wanted, received, ttl = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local taken = 0
  local free = true
  if wanted >= 0 then
    local done = tonumber(redis.call('GET', dk) or '0')
    if done > received then received = done end
    -- Only members scored after now are live; the sweeper removes the rest.
    taken = received + redis.call('ZCOUNT', tz, '(' .. now, '+inf')
    free = taken < wanted
  end
  if free then
    local expires = now + ttl
    redis.call('ZADD', tz, expires, ARGV[1])
    redis.call('ZADD', KEYS[1], expires, ARGV[1] .. '\\31' .. task .. '\\31' .. job)
    redis.call('HSET', KEYS[2], 'task', task, 'job', job, 'worker', ARGV[2], 'gold', ARGV[a + 5],
               'leased', now, 'expires', expires, 'ttl', ttl, 'active', 0, 'last', now)
    redis.call('PEXPIRE', KEYS[2], ttl)
    local full = 0
    if wanted >= 0 and taken + 1 >= wanted then full = 1 end
    return {i + 1, now, expires, full}
  end
end
return {0, now, 0, 0}
"""
)

# KEYS: lease hash, all-leases set, task set, done counter.
# ARGV: lease id, worker id, '1' to count an answer, done ttl s. Returns {status}.
# The hash expires with the lease, so finding it means the lease is live.
_TAKE = """
local h = redis.call('HMGET', KEYS[1], 'worker', 'task', 'job')
if not h[1] then return {'missing'} end
if h[1] ~= ARGV[2] then return {'other'} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1] .. '\\31' .. h[2] .. '\\31' .. h[3])
if ARGV[3] == '1' then
  redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[4]))
end
return {'ok'}
"""

# Puts back a lease taken by _TAKE when what followed failed. Same KEYS; ARGV: lease id,
# worker, gold, leased, expires, ttl, '1' if the take counted an answer, task id, job id,
# active ms, last activity ms.
_RESTORE = (
    _NOW
    + """
local expires = tonumber(ARGV[5])
if ARGV[7] == '1' and tonumber(redis.call('GET', KEYS[4]) or '0') > 0 then redis.call('DECR', KEYS[4]) end
if expires <= now then return 0 end
redis.call('HSET', KEYS[1], 'task', ARGV[8], 'job', ARGV[9], 'worker', ARGV[2], 'gold', ARGV[3],
           'leased', ARGV[4], 'expires', expires, 'ttl', ARGV[6], 'active', ARGV[10], 'last', ARGV[11])
redis.call('PEXPIRE', KEYS[1], expires - now)
redis.call('ZADD', KEYS[3], expires, ARGV[1])
redis.call('ZADD', KEYS[2], expires, ARGV[1] .. '\\31' .. ARGV[8] .. '\\31' .. ARGV[9])
return 1
"""
)

# KEYS: lease hash, all-leases set, task set. ARGV: lease id, worker id, idle cap ms.
# Returns {status, expires}. A heartbeat is an activity point: the gap since the last
# one counts as active time up to min(ttl, idle cap) (see domain.active_time_ms).
_EXTEND = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'worker', 'expires', 'task', 'job', 'ttl', 'active', 'last', 'leased')
if not h[1] then return {'missing', 0} end
if h[1] ~= ARGV[2] then return {'other', 0} end
if tonumber(h[2]) <= now then return {'missing', 0} end
local ttl = tonumber(h[5])
local expires = now + ttl
local last = tonumber(h[7] or h[8])
local gap = now - last
if gap < 0 then gap = 0 end
local cap = math.min(ttl, tonumber(ARGV[3]))
if gap > cap then gap = cap end
local active = tonumber(h[6] or '0') + gap
redis.call('HSET', KEYS[1], 'expires', expires, 'active', active, 'last', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], 'XX', expires, ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', expires, ARGV[1] .. '\\31' .. h[3] .. '\\31' .. h[4])
return {'ok', expires}
"""
)

# KEYS: task set, done counter. ARGV: wanted, received. Returns 1 when received (counting
# answers in flight) plus live leases reach wanted, as _CLAIM counts them.
_FULL = (
    _NOW
    + """
local received = tonumber(ARGV[2])
local done = tonumber(redis.call('GET', KEYS[2]) or '0')
if done > received then received = done end
if received + redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') >= tonumber(ARGV[1]) then return 1 end
return 0
"""
)

# KEYS: all-leases set. ARGV: batch size. Removes and returns expired members; each
# expired lease is returned to exactly one sweeper.
_SWEEP = (
    _NOW
    + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
return gone
"""
)


@dataclass(frozen=True)
class Claim:
    lease: Lease
    # The lease took the task's last free slot.
    filled: bool


class LeaseStatus(enum.Enum):
    OK = "ok"
    # Expired, never granted, or already taken.
    MISSING = "missing"
    # Granted to another worker.
    OTHER_WORKER = "other"


class Leases(Protocol):
    """Where live leases are kept: :class:`LeaseStore` (Redis, shared by replicas) or
    :class:`MemoryLeaseStore` (one process). Both behave alike; see LeaseStore."""

    def claim(self, lease_id: str, worker_id: str, candidates: Sequence[Candidate]) -> Claim | None: ...

    def get(self, lease_id: str) -> Lease | None: ...

    def live(self, lease_ids: Sequence[str]) -> set[str]: ...

    def take(self, lease: Lease, worker_id: str, count_answer: bool) -> LeaseStatus: ...

    def restore(self, lease: Lease, counted_answer: bool) -> None: ...

    def extend(self, lease: Lease, worker_id: str) -> tuple[LeaseStatus, int]: ...

    def sweep(self, limit: int = 500) -> list[tuple[str, str, str]]: ...

    def drop_job(self, job_id: str) -> int: ...

    def active(self, job_id: str | None = None) -> int: ...

    def full(self, task_id: str, answers_wanted: int, answers_received: int) -> bool: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


class LeaseStore:
    """Leases of one deployment (``prefix``) in one Redis. Thread-safe; each call is one
    or two round trips."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._all = f"{prefix}:leases"
        self._claim = client.register_script(_CLAIM)
        self._take = client.register_script(_TAKE)
        self._restore = client.register_script(_RESTORE)
        self._extend = client.register_script(_EXTEND)
        self._sweep = client.register_script(_SWEEP)
        self._full = client.register_script(_FULL)

    def _lease_keys(self, lease: Lease) -> list[str]:
        p = self._prefix
        return [
            f"{p}:lease:{lease.lease_id}",
            self._all,
            f"{p}:task-leases:{lease.task_id}",
            f"{p}:done:{lease.task_id}",
        ]

    def claim(self, lease_id: str, worker_id: str, candidates: Sequence[Candidate]) -> Claim | None:
        """Leases ``worker_id`` the first candidate with a free slot (received, counting
        answers in flight, plus live leases below wanted; gold always has one), under
        ``lease_id``. Returns the lease, and whether it took the task's last free slot,
        or None when every candidate is full.
        Atomic: concurrent claims never put more live leases on a task than it has room
        for. One round trip; O(candidates) in Redis."""
        if not candidates:
            return None
        p = self._prefix
        keys = [self._all, f"{p}:lease:{lease_id}"]
        args: list[str | int] = [lease_id, worker_id]
        for c in candidates:
            keys += [f"{p}:task-leases:{c.task_id}", f"{p}:done:{c.task_id}"]
            args += [
                c.task_id,
                c.job_id,
                -1 if c.gold else c.answers_wanted,
                c.answers_received,
                c.lease_seconds * 1000,
                "1" if c.gold else "0",
            ]
        index, now, expires, full = (int(v) for v in self._claim(keys=keys, args=args))
        if index == 0:
            return None
        chosen = candidates[index - 1]
        lease = Lease(
            lease_id, chosen.task_id, chosen.job_id, worker_id, chosen.gold, now, expires, expires - now, 0, now
        )
        return Claim(lease=lease, filled=bool(full))

    def get(self, lease_id: str) -> Lease | None:
        """The live lease ``lease_id``, or None. One round trip."""
        fields: dict[str, str] = self._redis.hgetall(f"{self._prefix}:lease:{lease_id}")  # type: ignore[assignment]
        if not fields:
            return None
        # The hash's Redis TTL is the lease's life: if it is here, the lease is live.
        return Lease(
            lease_id=lease_id,
            task_id=fields["task"],
            job_id=fields["job"],
            worker_id=fields["worker"],
            gold=fields["gold"] == "1",
            leased_at_ms=int(fields["leased"]),
            expires_at_ms=int(fields["expires"]),
            term_ms=int(fields["ttl"]),
            active_ms=int(fields.get("active", 0)),
            last_active_ms=int(fields.get("last") or fields["leased"]),
        )

    def live(self, lease_ids: Sequence[str]) -> set[str]:
        """Which of ``lease_ids`` are live leases. One round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for lease_id in lease_ids:
            pipe.exists(f"{self._prefix}:lease:{lease_id}")
        return {lease_id for lease_id, found in zip(lease_ids, pipe.execute(), strict=True) if found}

    def take(self, lease: Lease, worker_id: str, count_answer: bool) -> LeaseStatus:
        """Ends ``lease`` if it is still live and ``worker_id``'s; ``count_answer`` records an
        answer in flight for the claim (see the module docstring). One round trip."""
        args = [lease.lease_id, worker_id, "1" if count_answer else "0", DONE_TTL_S]
        (status,) = self._take(keys=self._lease_keys(lease), args=args)
        return LeaseStatus(status)

    def restore(self, lease: Lease, counted_answer: bool) -> None:
        """Undoes :meth:`take` after the work that followed it failed; a lease that has
        expired meanwhile stays gone. One round trip."""
        self._restore(
            keys=self._lease_keys(lease),
            args=[
                lease.lease_id,
                lease.worker_id,
                "1" if lease.gold else "0",
                lease.leased_at_ms,
                lease.expires_at_ms,
                lease.term_ms,
                "1" if counted_answer else "0",
                lease.task_id,
                lease.job_id,
                lease.active_ms,
                lease.last_active_ms or lease.leased_at_ms,
            ],
        )

    def extend(self, lease: Lease, worker_id: str) -> tuple[LeaseStatus, int]:
        """Restarts a live lease's full term from now. Returns the status and the new expiry
        (epoch ms, 0 unless OK). One round trip."""
        status, expires = self._extend(keys=self._lease_keys(lease)[:3], args=[lease.lease_id, worker_id, IDLE_CAP_MS])
        return LeaseStatus(status), int(expires)

    def sweep(self, limit: int = 500) -> list[tuple[str, str, str]]:
        """Removes up to ``limit`` expired leases from every index. Returns their
        (lease_id, task_id, job_id). Two round trips."""
        gone: list[str] = self._sweep(keys=[self._all], args=[limit])
        expired = [(lease_id, task_id, job_id) for lease_id, task_id, job_id in (m.split(SEP, 2) for m in gone)]
        if expired:
            pipe = self._redis.pipeline(transaction=False)
            for lease_id, task_id, _ in expired:
                pipe.zrem(f"{self._prefix}:task-leases:{task_id}", lease_id)
            pipe.execute()
        return expired

    def drop_job(self, job_id: str) -> int:
        """Ends every lease of a job, live or expired, whoever holds it: their answers will
        be refused. Returns how many. Not atomic with claims, which is harmless for a job
        whose tasks are gone from the database. Two round trips; O(leases) in Redis."""
        members: list[str] = self._redis.zrange(self._all, 0, -1)  # type: ignore[assignment]
        dropped = [m.split(SEP, 2) for m in members if m.split(SEP, 2)[2] == job_id]
        if not dropped:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for lease_id, task_id, _ in dropped:
            pipe.delete(f"{self._prefix}:lease:{lease_id}")
            pipe.zrem(f"{self._prefix}:task-leases:{task_id}", lease_id)
            pipe.zrem(self._all, SEP.join((lease_id, task_id, job_id)))
        pipe.execute()
        return len(dropped)

    def active(self, job_id: str | None = None) -> int:
        """Live leases, of one job or all. One round trip; O(live leases) with a job."""
        since = f"({int(time.time() * 1000)}"
        if job_id is None:
            return int(self._redis.zcount(self._all, since, "+inf"))
        members: list[str] = self._redis.zrangebyscore(self._all, since, "+inf")  # type: ignore[assignment]
        return sum(1 for member in members if member.split(SEP, 2)[2] == job_id)

    def full(self, task_id: str, answers_wanted: int, answers_received: int) -> bool:
        """Whether every slot of the task is taken now, counted as :meth:`claim` counts
        them. One round trip."""
        p = self._prefix
        keys = [f"{p}:task-leases:{task_id}", f"{p}:done:{task_id}"]
        return bool(int(self._full(keys=keys, args=[answers_wanted, answers_received])))


class MemoryLeaseStore:
    """The leases of a single tasking process, in its memory: what :class:`LeaseStore`
    does with Redis scripts, done under one lock, so every check and its write are as
    atomic across the process's threads as a script is across replicas. Nothing is
    shared with another process and nothing survives a restart (a restarted service
    refuses answers to the leases it forgot, and hands their tasks out again).
    Each call is O(candidates) or O(live leases of a task), except sweep, drop_job
    and active, which are O(live leases)."""

    def __init__(self, clock: Callable[[], int] = _now_ms) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        # task id -> {lease id: expiry ms}; entries past their expiry are dead.
        self._by_task: dict[str, dict[str, int]] = {}
        # lease id -> (task id, job id, expiry ms): the sweeper's index.
        self._all: dict[str, tuple[str, str, int]] = {}
        # task id -> (answers in flight, forgotten after this ms).
        self._done: dict[str, tuple[int, int]] = {}

    def _live(self, lease_id: str, now: int) -> Lease | None:
        lease = self._leases.get(lease_id)
        return lease if lease is not None and lease.expires_at_ms > now else None

    def _index(self, lease: Lease) -> None:
        self._leases[lease.lease_id] = lease
        self._by_task.setdefault(lease.task_id, {})[lease.lease_id] = lease.expires_at_ms
        self._all[lease.lease_id] = (lease.task_id, lease.job_id, lease.expires_at_ms)

    def _unindex(self, lease_id: str, task_id: str) -> None:
        self._leases.pop(lease_id, None)
        self._all.pop(lease_id, None)
        holders = self._by_task.get(task_id)
        if holders is not None:
            holders.pop(lease_id, None)
            if not holders:
                del self._by_task[task_id]

    def _in_flight(self, task_id: str, now: int) -> int:
        count, until = self._done.get(task_id, (0, 0))
        return count if until > now else 0

    def claim(self, lease_id: str, worker_id: str, candidates: Sequence[Candidate]) -> Claim | None:
        """See :meth:`LeaseStore.claim`."""
        with self._lock:
            now = self._clock()
            for c in candidates:
                taken = 0
                if not c.gold:
                    received = max(c.answers_received, self._in_flight(c.task_id, now))
                    holders = self._by_task.get(c.task_id, {})
                    taken = received + sum(1 for expires in holders.values() if expires > now)
                    if taken >= c.answers_wanted:
                        continue
                ttl = c.lease_seconds * 1000
                lease = Lease(lease_id, c.task_id, c.job_id, worker_id, c.gold, now, now + ttl, ttl, 0, now)
                self._index(lease)
                return Claim(lease=lease, filled=not c.gold and taken + 1 >= c.answers_wanted)
        return None

    def get(self, lease_id: str) -> Lease | None:
        """See :meth:`LeaseStore.get`."""
        with self._lock:
            return self._live(lease_id, self._clock())

    def live(self, lease_ids: Sequence[str]) -> set[str]:
        """See :meth:`LeaseStore.live`."""
        with self._lock:
            now = self._clock()
            return {lease_id for lease_id in lease_ids if self._live(lease_id, now) is not None}

    def take(self, lease: Lease, worker_id: str, count_answer: bool) -> LeaseStatus:
        """See :meth:`LeaseStore.take`."""
        with self._lock:
            now = self._clock()
            held = self._live(lease.lease_id, now)
            if held is None:
                return LeaseStatus.MISSING
            if held.worker_id != worker_id:
                return LeaseStatus.OTHER_WORKER
            self._unindex(held.lease_id, held.task_id)
            if count_answer:
                self._done[held.task_id] = (self._in_flight(held.task_id, now) + 1, now + DONE_TTL_S * 1000)
            return LeaseStatus.OK

    def restore(self, lease: Lease, counted_answer: bool) -> None:
        """See :meth:`LeaseStore.restore`."""
        with self._lock:
            now = self._clock()
            in_flight = self._in_flight(lease.task_id, now)
            if counted_answer and in_flight > 0:
                self._done[lease.task_id] = (in_flight - 1, self._done[lease.task_id][1])
            if lease.expires_at_ms > now:
                self._index(lease)

    def extend(self, lease: Lease, worker_id: str) -> tuple[LeaseStatus, int]:
        """See :meth:`LeaseStore.extend`."""
        with self._lock:
            now = self._clock()
            held = self._live(lease.lease_id, now)
            if held is None:
                return LeaseStatus.MISSING, 0
            if held.worker_id != worker_id:
                return LeaseStatus.OTHER_WORKER, 0
            gap = min(max(now - (held.last_active_ms or held.leased_at_ms), 0), min(held.term_ms, IDLE_CAP_MS))
            extended = dataclasses.replace(
                held, expires_at_ms=now + held.term_ms, active_ms=held.active_ms + gap, last_active_ms=now
            )
            self._index(extended)
            return LeaseStatus.OK, extended.expires_at_ms

    def sweep(self, limit: int = 500) -> list[tuple[str, str, str]]:
        """See :meth:`LeaseStore.sweep`; also forgets answers in flight past their minute."""
        with self._lock:
            now = self._clock()
            gone = sorted((expires, lease_id) for lease_id, (_, _, expires) in self._all.items() if expires <= now)
            expired = []
            for _, lease_id in gone[:limit]:
                task_id, job_id, _ = self._all[lease_id]
                self._unindex(lease_id, task_id)
                expired.append((lease_id, task_id, job_id))
            for task_id in [task_id for task_id, (_, until) in self._done.items() if until <= now]:
                del self._done[task_id]
            return expired

    def drop_job(self, job_id: str) -> int:
        """See :meth:`LeaseStore.drop_job`."""
        with self._lock:
            dropped = [(lease_id, task_id) for lease_id, (task_id, job, _) in self._all.items() if job == job_id]
            for lease_id, task_id in dropped:
                self._unindex(lease_id, task_id)
            return len(dropped)

    def active(self, job_id: str | None = None) -> int:
        """See :meth:`LeaseStore.active`."""
        with self._lock:
            now = self._clock()
            return sum(1 for _, job, expires in self._all.values() if expires > now and job_id in (None, job))

    def full(self, task_id: str, answers_wanted: int, answers_received: int) -> bool:
        """See :meth:`LeaseStore.full`."""
        with self._lock:
            now = self._clock()
            received = max(answers_received, self._in_flight(task_id, now))
            live = sum(1 for expires in self._by_task.get(task_id, {}).values() if expires > now)
            return received + live >= answers_wanted
