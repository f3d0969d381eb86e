"""The Lua scripts of the Redis value cache (docs/mongo.md, "The Redis value cache").

A cache entry is one Redis string under the record's key (:func:`persist_mongo._cache.cache_key`):

- ``R1|<version>|<when>|<removed>|<payload>``: a record and the version of its document (a value);
- ``W|<token>|<floor>``: a writer is writing the key (its marker, with the lock lease as its expiry); ``floor``
  is the newest version another writer's commit met it with (writers overlap only when a flush or an eviction
  took a marker away): this writer stores its copy only if its version is above it;
- ``D|``: the key was deleted (a tombstone, expiring like a marker): a writer that was writing it meanwhile must
  not store its record over it.

Each key also has a *stamp*, one of 1,024 per database (``<database>:stamp:<n>``, no expiry): a random token
that every writer replaces when it begins and when it commits. A reader that misses notes the stamp, reads
MongoDB, and fills the entry only if the stamp is unchanged, so that no value read before or during a write can
land after it, even if the entry was flushed, evicted or expired meanwhile. Every script runs atomically in Redis: a
compare-and-set in one round trip.
"""

from __future__ import annotations

__all__ = ["BEGIN", "COMMIT", "FILL", "FORGET", "READ", "RELEASE", "SEED", "TOMBSTONE"]

# Shared: whether the string entry ``cur`` may be replaced by a value of version ``v`` (not a marker or a
# tombstone, and not a value as new or newer); and storing ``entry`` where ``allowed`` says so of the string
# there (a key of another type is not ours and is replaced).
_STORE = """
local function replaceable(cur, v)
  local tag = string.sub(cur, 1, 2)
  if tag == 'W|' or tag == 'D|' then return false end
  local have = tonumber(string.match(cur, '^R1|(%d+)|'))
  return not (have and have >= v)
end
local function store(key, entry, ttl, allowed)
  local t = redis.call('TYPE', key).ok
  if t == 'string' then
    if not allowed(redis.call('GET', key)) then return 0 end
  elseif t ~= 'none' then
    redis.call('DEL', key)
  end
  redis.call('SET', key, entry, 'PX', ttl)
  return 1
end
"""

#: KEYS: entry, stamp. ARGV: a fresh token. A value (a hit), else ``{stamp, kind}``: 0 missing, 1 marker or
#: tombstone (do not fill), 2 a key of another type, 3 a string that is not ours. The stamp is created if absent.
READ = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' and string.sub(cur, 1, 3) == 'R1|' then return cur end
local stamp = redis.call('GET', KEYS[2])
if not stamp then
  redis.call('SET', KEYS[2], ARGV[1])
  stamp = ARGV[1]
end
local kind = 0
if type(cur) == 'table' then kind = 2
elseif type(cur) == 'string' then
  local tag = string.sub(cur, 1, 2)
  if tag == 'W|' or tag == 'D|' then kind = 1 else kind = 3 end
end
return {stamp, kind}
"""

#: KEYS: entry, stamp. ARGV: the stamp seen at the miss, version, entry, ttl ms. 1 if stored.
FILL = (
    _STORE
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
return store(KEYS[1], ARGV[3], ARGV[4], function(cur) return replaceable(cur, tonumber(ARGV[2])) end)
"""
)

#: KEYS: entry, stamp. ARGV: token, lease ms. 0 if the marker is ours now, else the ms left on another writer's.
BEGIN = """
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then
  local cur = redis.call('GET', KEYS[1])
  if string.sub(cur, 1, 2) == 'W|' then
    local left = redis.call('PTTL', KEYS[1])
    if left > 0 then return left end
    return 1
  end
elseif t ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], 'W|' .. ARGV[1] .. '|0', 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return 0
"""

#: KEYS: entry, stamp. ARGV: token ('' if the write could not begin in Redis), version, entry, ttl ms, a new
#: token. 1 if stored: over our own marker if our version is above its floor (else the marker goes: a newer write
#: overlapped ours), or over an older copy. Over another writer's marker, raise its floor to our version. Never
#: over nothing (a flush since our begin: a newer write may have been stored and flushed since) or a tombstone.
#: The stamp is replaced either way, so that no miss that began during the write fills what it read.
COMMIT = (
    _STORE
    + """
local v = tonumber(ARGV[2])
local result = 0
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' and string.sub(cur, 1, 2) == 'W|' then
  local token, floor = string.match(cur, '^W|([^|]*)|(%d+)$')
  floor = tonumber(floor) or 0
  if token == ARGV[1] then
    if v > floor then
      redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
      result = 1
    else
      redis.call('DEL', KEYS[1])
    end
  elseif v > floor then
    redis.call('SET', KEYS[1], 'W|' .. (token or '') .. '|' .. v, 'KEEPTTL')
  end
elseif cur then
  result = store(KEYS[1], ARGV[3], ARGV[4], function(c) return replaceable(c, v) end)
end
redis.call('SET', KEYS[2], ARGV[5])
return result
"""
)

#: KEYS: entry. ARGV: token. Delete our marker (a write that failed), leaving anything else.
RELEASE = """
local cur = redis.pcall('GET', KEYS[1])
if type(cur) == 'string' and string.match(cur, '^W|([^|]*)|') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

#: KEYS: entry, stamp, entry, stamp, ... ARGV: token, lease ms. Tombstone every entry and replace its stamp.
TOMBSTONE = """
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i], 'D|', 'PX', ARGV[2])
  redis.call('SET', KEYS[i + 1], ARGV[1])
end
return 0
"""

#: KEYS: entry, stamp, entry, stamp, ... ARGV: a fresh stamp, then for each key ``,<token>,<token>,``: this
#: process's markers that may have reached it. Keys written while Redis could not be told: delete the copy or a
#: marker of ours (its write is over), not another writer's marker, and replace the stamp, so that no copy read
#: before can be stored.
FORGET = """
for i = 1, #KEYS, 2 do
  local cur = redis.pcall('GET', KEYS[i])
  local theirs = type(cur) == 'string' and string.sub(cur, 1, 2) == 'W|'
  local token = theirs and string.match(cur, '^W|([^|]*)|') or ''
  if theirs and string.find(ARGV[(i + 1) / 2 + 1], ',' .. token .. ',', 1, true) then theirs = false end
  if not theirs then
    redis.call('DEL', KEYS[i])
  end
  redis.call('SET', KEYS[i + 1], ARGV[1])
end
return 0
"""

#: KEYS: entries. ARGV: ttl ms, then one entry per key. First-write-wins records never change: store each only
#: where nothing is (not over a marker or a tombstone).
SEED = """
local n = 0
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'PX', ARGV[1]) then n = n + 1 end
end
return n
"""
