"""The Lua scripts: each batch operation that must be atomic is one script, one round trip.

Redis runs a script with nothing else interleaved, so two processes racing on a key see each
other's writes in one order, and the comparison and the write of ``set_if_newer`` can never be
separated. The rules are those of :func:`coalestra.cache._decisions.decide_write`.

Every script reads an entry's header with ``GETRANGE 0 127`` (the first line, see
``_entries``) rather than the whole value, so a large payload is never copied into Lua just to be
compared. Messages on the event channel are ``"<kind> <origin>\\n<name>\\n<name>..."`` with
kind ``w`` (written), ``i`` (invalidated), ``r`` (lease released) or ``c`` (cleared).
"""

from __future__ import annotations

from typing import final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# Shared Lua. peek: the rank and observed_at of an entry's first header line, or nil when there
# is no entry, or it is not ours, or its numbers are absurd (not finite, observed after ``bound``,
# a rank Lua cannot compare exactly): such an entry counts as absent, so any write replaces it.
# holder: who holds a lease, or false when nobody does; a lease that is not a string or has no
# expiry (foreign, or corrupt: nobody would ever renew or expire it) is deleted and counts as
# absent. The second result tells that it was such a bad lease. released: wakes the waiters of
# the named (released) leases, ARGV[1] being the channel and ARGV[2] the origin; returns how many.
_PRELUDE = """
local function peek(key, bound)
  local head = redis.pcall('GETRANGE', key, 0, 127)
  if type(head) ~= 'string' then return nil, nil end
  local rank, observed = string.match(head, '^c1 (%S+) (%S+) ')
  rank, observed = tonumber(rank), tonumber(observed)
  if not rank or not observed then return nil, nil end
  if observed ~= observed or observed > bound or observed < -bound then return nil, nil end
  if rank ~= rank or rank > 9007199254740992 or rank < -9007199254740992 then return nil, nil end
  return rank, observed
end
local function holder(key)
  local token = redis.pcall('GET', key)
  if type(token) == 'table' then
    redis.call('DEL', key)
    return false, true
  end
  if token and redis.call('PTTL', key) < 0 then
    redis.call('DEL', key)
    return false, true
  end
  return token, false
end
local function released(names)
  if #names > 0 then
    redis.call('PUBLISH', ARGV[1], 'r ' .. ARGV[2] .. '\\n' .. table.concat(names, '\\n'))
  end
  return #names
end
"""

WRITE = """
-- KEYS: value keys. ARGV: force, replace_equal, want_previous, channel, origin, prefix length,
-- bound, then per key: rank, observed_at, expiry (ms), entry. Returns per key {status, previous}.
local force, replace_equal = ARGV[1] == '1', ARGV[2] == '1'
local want_previous, plen, bound = ARGV[3] == '1', tonumber(ARGV[6]), tonumber(ARGV[7])
local out, stored = {}, {}
for i, key in ipairs(KEYS) do
  local b = 7 + (i - 1) * 4
  local rank, observed = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local previous = false
  if want_previous then
    previous = redis.pcall('GET', key)
    if type(previous) ~= 'string' then previous = false end
  end
  local status = 'S'
  if not force then
    local cur_rank, cur_observed = peek(key, bound)
    if cur_rank and cur_observed then
      if cur_rank > rank then status = 'A'
      elseif cur_rank == rank then
        if observed < cur_observed then status = 'O'
        elseif observed == cur_observed and not replace_equal then status = 'D' end
      end
    end
  end
  if status == 'S' then
    redis.call('SET', key, ARGV[b + 4], 'PX', ARGV[b + 3])
    stored[#stored + 1] = string.sub(key, plen + 1)
  end
  out[i] = {status, previous}
end
if #stored > 0 then
  redis.call('PUBLISH', ARGV[4], 'w ' .. ARGV[5] .. '\\n' .. table.concat(stored, '\\n'))
end
return out
"""

INVALIDATE = """
-- KEYS: value keys. ARGV: channel, origin, prefix length. Deletes them and tells every listener.
local plen, names = tonumber(ARGV[3]), {}
for i, key in ipairs(KEYS) do
  redis.call('DEL', key)
  names[i] = string.sub(key, plen + 1)
end
redis.call('PUBLISH', ARGV[1], 'i ' .. ARGV[2] .. '\\n' .. table.concat(names, '\\n'))
return #KEYS
"""

LEASE = """
-- KEYS: n lease keys, then the n value keys. ARGV: token (new for each request), lease ms,
-- bound, then per key a threshold: a value observed after it needs no fetch, so its lease is not
-- taken (the caller waits for it and is served at once). Returns {indexes held, bad leases}.
local n, token, px, bound = #KEYS / 2, ARGV[1], ARGV[2], tonumber(ARGV[3])
local held, bad = {}, 0
for i = 1, n do
  local current, was_bad = holder(KEYS[i])
  if was_bad then bad = bad + 1 end
  if not current then
    local _, observed = peek(KEYS[n + i], bound)
    if not (observed and observed > tonumber(ARGV[3 + i])) then
      redis.call('SET', KEYS[i], token, 'PX', px)
      held[#held + 1] = i
    end
  end
end
return {held, bad}
"""

RENEW = """
-- KEYS: lease keys. ARGV: lease ms, then per key the token it was taken with. Extends each
-- lease that still holds its token; returns the indexes of the others (lost: expired, taken over).
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.pcall('GET', key) == ARGV[1 + i] then
    redis.call('PEXPIRE', key, ARGV[1])
  else
    lost[#lost + 1] = i
  end
end
return lost
"""

RELEASE = """
-- KEYS: lease keys. ARGV: channel, origin, prefix length, then per key the token it was taken
-- with. Deletes only leases still holding their token (compare-and-delete: a lease that expired
-- and was taken over belongs to someone else now) and wakes their waiters. Returns how many.
local plen, names = tonumber(ARGV[3]), {}
for i, key in ipairs(KEYS) do
  if redis.pcall('GET', key) == ARGV[3 + i] then
    redis.call('DEL', key)
    names[#names + 1] = string.sub(key, plen + 1)
  end
end
return released(names)
"""

DROP_LEASES = """
-- KEYS: lease keys. ARGV: channel, origin, prefix length. Deletes them whoever holds them and
-- wakes their waiters (an administrative clear). Returns how many existed.
local plen, names = tonumber(ARGV[3]), {}
for _, key in ipairs(KEYS) do
  if redis.call('DEL', key) == 1 then names[#names + 1] = string.sub(key, plen + 1) end
end
return released(names)
"""

LEASE_INFO = """
-- KEYS: lease keys. Per key {holder or false, ms left (-1: no expiry, -2: gone)}.
local out = {}
for i, key in ipairs(KEYS) do
  local token = redis.pcall('GET', key)
  if type(token) ~= 'string' then token = false end
  out[i] = {token, redis.call('PTTL', key)}
end
return out
"""

POLL = """
-- KEYS: n value keys, then the n lease keys. ARGV: token (new for each request), lease ms,
-- bound, then per key a threshold. Per key: {'v', entry} when the value was observed after the
-- threshold (it arrived); else {'t'} when nobody holds the lease (it is taken for the caller,
-- who fetches); else {'w', ms left on the holder's lease}. Returns {per key, bad leases}.
local n, token, px, bound = #KEYS / 2, ARGV[1], ARGV[2], tonumber(ARGV[3])
local out, bad = {}, 0
for i = 1, n do
  local _, observed = peek(KEYS[i], bound)
  if observed and observed > tonumber(ARGV[3 + i]) then
    out[i] = {'v', redis.call('GET', KEYS[i])}
  else
    local current, was_bad = holder(KEYS[n + i])
    if was_bad then bad = bad + 1 end
    if not current then
      redis.call('SET', KEYS[n + i], token, 'PX', px)
      out[i] = {'t'}
    else
      out[i] = {'w', redis.call('PTTL', KEYS[n + i])}
    end
  end
end
return {out, bad}
"""

DROP_IF_VERSION = """
-- KEYS: value keys. ARGV: the (escaped) version each must still have to be deleted: a derived
-- value found invalid is dropped unless it was rewritten meanwhile.
local dropped = 0
for i, key in ipairs(KEYS) do
  local head = redis.pcall('GETRANGE', key, 0, 127)
  if type(head) == 'string' and string.match(head, '^c1 %S+ %S+ (%S+) ') == ARGV[i] then
    redis.call('DEL', key)
    dropped = dropped + 1
  end
end
return dropped
"""

DROP_IF_HEAD = """
-- KEYS: value keys. ARGV: the first 128 bytes each must still start with to be deleted: an
-- entry refused on read (corrupt, foreign, absurd) is dropped unless it was rewritten meanwhile.
local dropped = 0
for i, key in ipairs(KEYS) do
  if redis.pcall('GETRANGE', key, 0, 127) == ARGV[i] then
    redis.call('DEL', key)
    dropped = dropped + 1
  end
end
return dropped
"""


@final
class Scripts:
    """The scripts registered on one client (``EVALSHA``, reloaded after a server restart)."""

    __slots__ = (
        "drop_if_head",
        "drop_if_version",
        "drop_leases",
        "invalidate",
        "lease",
        "lease_info",
        "poll",
        "release",
        "renew",
        "write",
    )

    def __init__(self, client: Redis) -> None:
        def load(source: str) -> AsyncScript:
            return client.register_script(_PRELUDE + source)

        self.write = load(WRITE)
        self.invalidate = load(INVALIDATE)
        self.lease = load(LEASE)
        self.renew = load(RENEW)
        self.release = load(RELEASE)
        self.drop_leases = load(DROP_LEASES)
        self.lease_info = load(LEASE_INFO)
        self.poll = load(POLL)
        self.drop_if_version = load(DROP_IF_VERSION)
        self.drop_if_head = load(DROP_IF_HEAD)
