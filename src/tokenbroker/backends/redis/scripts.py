"""The Lua scripts of the Redis store: its compare-and-set writes.

Every script touches the keys it is given and nothing else, and those keys
share one hash tag, so each runs on one Cluster slot. Redis runs a script
atomically: the check and the write inside one cannot be interleaved.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, TypeAlias

__all__ = ["SCRIPTS", "ScriptName"]

ScriptName: TypeAlias = Literal["put_token", "replace_token", "delete_if_equal", "put_installation"]

# KEYS[1] token; ARGV: new obtained_at (µs), new value, PXAT (ms). The script
# refuses only a parseable stored token obtained later; Python re-checks a refusal.
_LUA_PUT_NEWER: Final = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'string' then
  local ok, stored = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if ok and type(stored) == 'table' and type(stored['obtained_at']) == 'number'
      and stored['obtained_at'] > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
"""

# KEYS[1] token; ARGV: the bytes Python judged, new value, PXAT (ms).
_LUA_REPLACE_SEEN: Final = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
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
}
