"""The Lua scripts: each batch operation that must be atomic is one script, one round trip.

Redis runs a script with nothing else interleaved, so two processes racing on a key see each
other's writes in one order, and the comparison and the write of ``set_if_newer`` can never be
separated. The rules are those of :func:`coalestra.cache._store.decide_write`.

Every script reads an entry's header with ``GETRANGE 0 127`` (the first line, see
``_entries``) rather than the whole value, so a large payload is never copied into Lua just to be
compared. Messages on the event channel are ``"<kind> <origin>\\n<name>\\n<name>..."`` with
kind ``w`` (written), ``i`` (invalidated), ``r`` (lease released) or ``c`` (cleared).
"""

from __future__ import annotations

from typing import final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# Shared Lua: the rank and observed_at of an entry's first header line, or nil.
_PEEK = """
local function peek(key)
  local head = redis.call('GETRANGE', key, 0, 127)
  local rank, observed = string.match(head, '^c1 (%S+) (%S+) ')
  return tonumber(rank), tonumber(observed)
end
"""

WRITE = """
-- KEYS: value keys. ARGV: force, replace_equal, want_previous, channel, origin, prefix length,
-- then per key: rank, observed_at, expiry (ms), entry. Returns per key {status, previous}.
local force, replace_equal = ARGV[1] == '1', ARGV[2] == '1'
local want_previous, plen = ARGV[3] == '1', tonumber(ARGV[6])
local out, stored = {}, {}
for i, key in ipairs(KEYS) do
  local b = 6 + (i - 1) * 4
  local rank, observed = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local previous = false
  if want_previous then previous = redis.call('GET', key) end
  local status = 'S'
  if not force then
    local cur_rank, cur_observed = peek(key)
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
-- KEYS: n lease keys, then the n value keys. ARGV: token, lease ms, then per key a threshold:
-- a value observed after it needs no fetch, so its lease is not taken (the caller waits for it
-- and is served at once). A lease we already hold is extended. Returns the indexes held.
local n, token, px = #KEYS / 2, ARGV[1], ARGV[2]
local held = {}
for i = 1, n do
  local holder = redis.call('GET', KEYS[i])
  if holder == token then
    redis.call('PEXPIRE', KEYS[i], px)
    held[#held + 1] = i
  elseif not holder then
    local _, observed = peek(KEYS[n + i])
    if not (observed and observed > tonumber(ARGV[2 + i])) then
      redis.call('SET', KEYS[i], token, 'PX', px)
      held[#held + 1] = i
    end
  end
end
return held
"""

RELEASE = """
-- KEYS: lease keys. ARGV: token, channel, prefix length. Deletes only leases holding token
-- (a lease that expired and was taken over belongs to someone else now) and wakes waiters.
local plen, names = tonumber(ARGV[3]), {}
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    names[#names + 1] = string.sub(key, plen + 1)
  end
end
if #names > 0 then
  redis.call('PUBLISH', ARGV[2], 'r ' .. ARGV[1] .. '\\n' .. table.concat(names, '\\n'))
end
return #names
"""

POLL = """
-- KEYS: n value keys, then the n lease keys. ARGV: token, lease ms, then per key a threshold.
-- Per key: {'v', entry} when the value was observed after the threshold (it arrived);
-- else {'t'} when nobody holds the lease (it is taken for the caller, who fetches);
-- else {'w', ms left on the holder's lease}.
local n, token, px = #KEYS / 2, ARGV[1], ARGV[2]
local out = {}
for i = 1, n do
  local _, observed = peek(KEYS[i])
  if observed and observed > tonumber(ARGV[2 + i]) then
    out[i] = {'v', redis.call('GET', KEYS[i])}
  else
    local holder = redis.call('GET', KEYS[n + i])
    if not holder or holder == token then
      redis.call('SET', KEYS[n + i], token, 'PX', px)
      out[i] = {'t'}
    else
      out[i] = {'w', redis.call('PTTL', KEYS[n + i])}
    end
  end
end
return out
"""

DROP_IF_VERSION = """
-- KEYS: value keys. ARGV: the (escaped) version each must still have to be deleted: a derived
-- value found invalid is dropped unless it was rewritten meanwhile.
local dropped = 0
for i, key in ipairs(KEYS) do
  local head = redis.call('GETRANGE', key, 0, 127)
  if string.match(head, '^c1 %S+ %S+ (%S+) ') == ARGV[i] then
    redis.call('DEL', key)
    dropped = dropped + 1
  end
end
return dropped
"""


@final
class Scripts:
    """The scripts registered on one client (``EVALSHA``, reloaded after a server restart)."""

    __slots__ = ("drop_if_version", "invalidate", "lease", "poll", "release", "write")

    def __init__(self, client: Redis) -> None:
        def load(source: str) -> AsyncScript:
            return client.register_script(_PEEK + source)

        self.write = load(WRITE)
        self.invalidate = load(INVALIDATE)
        self.lease = load(LEASE)
        self.release = load(RELEASE)
        self.poll = load(POLL)
        self.drop_if_version = load(DROP_IF_VERSION)
