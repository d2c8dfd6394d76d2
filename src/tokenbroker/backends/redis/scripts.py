"""The Lua scripts of the Redis store: its compare-and-set writes and its leases.

Every script touches the keys it is given and nothing else, and those keys
share one hash tag, so each runs on one Cluster slot. Redis runs a script
atomically: the check and the write inside one cannot be interleaved.

Leases are fenced (``tokenbroker.core.fencing``). A lease key holds its
owner, ``<random hex>:<fence>`` (the ``Lease.owner``, so the fence is part of
what a renewal and a release must match), with ``PX`` the lease's TTL; a
released lease leaves ``~:<fence>`` for ``RELEASED_KEEP_MS`` so that the next
lease gets a later fence. A lapsed lease's key is gone with its fence; the
next fence is then the server's ``TIME`` in microseconds, which is later
anyway unless the server's clock went back. A stored token document carries
``"fence"`` (appended by the scripts) once written under a fence; an unfenced
write keeps the fence the stored document had.

The scripts, by name (values as the store passes them):

* ``acquire_lease``: KEYS lease and, optionally, token; ARGV random owner part,
  TTL (ms). Returns the new lease's fence (above the released marker's and the
  token document's), or 0 when the key is held (or holds a foreign type).
* ``renew_lease``: KEYS lease; ARGV owner (``Lease.owner``), TTL (ms). Returns
  1 if the lease was still this one and is extended, else 0.
* ``release_lease``: KEYS lease; ARGV owner, how long to keep the released
  marker (ms). Returns 1 if it was this owner's lease, else 0.
* ``put_token``: KEYS token, lease; ARGV obtained_at (µs), the document
  without a fence, PXAT (ms), fence (0: unfenced). Returns 1 written; 0
  refused, a parseable stored token obtained later (Python re-checks); -1
  refused by the fence (the lease key's fence or the stored token's is later).
* ``replace_token``: KEYS token, lease; ARGV the bytes Python judged, the
  document, PXAT (ms), fence. Returns 1 replaced; 0 the bytes changed; -1
  refused by the fence.
* ``delete_if_equal``: KEYS token; ARGV the exact bytes to find before deleting.
* ``put_installation``: see its comment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

__all__ = ["RELEASED_KEEP_MS", "SCRIPTS", "ScriptName"]

ScriptName: TypeAlias = Literal[
    "put_token",
    "replace_token",
    "delete_if_equal",
    "put_installation",
    "acquire_lease",
    "renew_lease",
    "release_lease",
]

RELEASED_KEEP_MS: Final = 60_000
"""How long a released lease's key remembers its fence."""

# Shared by the token writes: the fence checks, and the document with its fence.
# Fences are microseconds (below 2^53: exact in Lua's doubles); '%.0f' prints
# them whole, where tostring would give "1.7e+15".
_LUA_FENCING: Final = """
local function lease_is_later(lease_key, fence)
  if fence <= 0 or redis.call('TYPE', lease_key)['ok'] ~= 'string' then return false end
  local held = tonumber(string.match(redis.call('GET', lease_key), ':(%d+)$'))
  return held ~= nil and held > fence
end
local function with_fence(value, fence)
  if fence <= 0 then return value end
  return string.sub(value, 1, -2) .. ',"fence":' .. string.format('%.0f', fence) .. '}'
end
"""

# KEYS: token, lease; ARGV: new obtained_at (µs), new value, PXAT (ms), fence. The
# script refuses a parseable stored token obtained later (Python re-checks that
# refusal) and a later fence (final).
_LUA_PUT_NEWER: Final = (
    _LUA_FENCING
    + """
local fence = tonumber(ARGV[4])
if lease_is_later(KEYS[2], fence) then return -1 end
local keep = 0
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  local ok, stored = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if ok and type(stored) == 'table' then
    if type(stored['fence']) == 'number' then
      if fence > 0 and stored['fence'] > fence then return -1 end
      keep = stored['fence']
    end
    if type(stored['obtained_at']) == 'number' and stored['obtained_at'] > tonumber(ARGV[1]) then
      return 0
    end
  end
end
if fence > 0 then keep = fence end
redis.call('SET', KEYS[1], with_fence(ARGV[2], keep), 'PXAT', ARGV[3])
return 1
"""
)

# KEYS: token, lease; ARGV: the bytes Python judged, new value, PXAT (ms), fence.
_LUA_REPLACE_SEEN: Final = (
    _LUA_FENCING
    + """
local fence = tonumber(ARGV[4])
if lease_is_later(KEYS[2], fence) then return -1 end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local keep = fence
local ok, stored = pcall(cjson.decode, ARGV[1])
if ok and type(stored) == 'table' and type(stored['fence']) == 'number' then
  if fence > 0 and stored['fence'] > fence then return -1 end
  if fence <= 0 then keep = stored['fence'] end
end
redis.call('SET', KEYS[1], with_fence(ARGV[2], keep), 'PXAT', ARGV[3])
return 1
"""
)

# KEYS: lease[, token]; ARGV: random owner part, TTL (ms). A released marker
# ("~:<fence>") is free; anything else there is a live lease (or a foreign value:
# never ours). The token's fence outlives a lapsed lease key: stay above it too.
_LUA_ACQUIRE_LEASE: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
local previous = 0
if kind == 'string' then
  local value = redis.call('GET', KEYS[1])
  if string.sub(value, 1, 2) ~= '~:' then return 0 end
  previous = tonumber(string.match(value, ':(%d+)$')) or 0
elseif kind ~= 'none' then
  return 0
end
if KEYS[2] and redis.call('TYPE', KEYS[2])['ok'] == 'string' then
  local ok, stored = pcall(cjson.decode, redis.call('GET', KEYS[2]))
  if ok and type(stored) == 'table' and type(stored['fence']) == 'number' then
    previous = math.max(previous, stored['fence'])
  end
end
local now = redis.call('TIME')
local fence = math.max(previous + 1, tonumber(now[1]) * 1000000 + tonumber(now[2]))
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%.0f', fence), 'PX', ARGV[2])
return fence
"""

# KEYS: lease; ARGV: owner, TTL (ms). The owner holds the fence, so it must match too.
_LUA_RENEW_LEASE: Final = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease; ARGV: owner, how long the released marker stays (ms).
_LUA_RELEASE_LEASE: Final = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  local fence = string.match(ARGV[1], ':(%d+)$') or '0'
  redis.call('SET', KEYS[1], '~:' .. fence, 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] token or lease; ARGV[1]: the exact value to find there before deleting.
_LUA_DELETE_IF_EQUAL: Final = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: record, index; ARGV: what Python read ('none' | 'string' | 'other'),
# the bytes it read, the new value, the index member.
_LUA_PUT_INSTALLATION: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if ARGV[1] == 'string' then
  if kind ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
elseif ARGV[1] == 'none' then
  if kind ~= 'none' then return 0 end
elseif kind == 'none' or kind == 'string' then
  return 0
end
local index = redis.call('TYPE', KEYS[2])['ok']
if index ~= 'zset' and index ~= 'none' then
  return redis.error_reply('the installation index ' .. KEYS[2] .. ' is not a sorted set')
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[4])
return 1
"""


SCRIPTS: Final[Mapping[ScriptName, str]] = {
    "put_token": _LUA_PUT_NEWER,
    "replace_token": _LUA_REPLACE_SEEN,
    "delete_if_equal": _LUA_DELETE_IF_EQUAL,
    "put_installation": _LUA_PUT_INSTALLATION,
    "acquire_lease": _LUA_ACQUIRE_LEASE,
    "renew_lease": _LUA_RENEW_LEASE,
    "release_lease": _LUA_RELEASE_LEASE,
}
