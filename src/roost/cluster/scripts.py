"""The Lua scripts a node runs in Redis: each one is atomic, and touches keys of one hash
tag only, so that it runs on a Redis Cluster too."""

# Claims the node id, or renews the claim: the heartbeat record is written only while its
# token is ours. Returns the token of the live node that holds the id, or '' if the record
# had expired (or never was), or nil if it was renewed.
BEAT = """
local current = redis.call('HGET', KEYS[1], 'token')
if current and current ~= ARGV[1] then return current end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'address', ARGV[3], 'connections', ARGV[4],
  'version', ARGV[5], 'started', ARGV[6], 'beat', ARGV[7], 'routes', ARGV[8],
  'redirect', ARGV[9], 'at', ARGV[10], 'http', ARGV[11])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if current then return false end
return ''
"""

# Applies changes to a node's route set ("+filter", "-filter", "=" to empty it), moves its
# version on and announces version and changes, NUL-separated (NUL is in no topic filter).
CHANGE_ROUTES = """
for i = 2, #ARGV do
  local op = string.sub(ARGV[i], 1, 1)
  local topic_filter = string.sub(ARGV[i], 2)
  if op == '+' then redis.call('SADD', KEYS[1], topic_filter)
  elseif op == '-' then redis.call('SREM', KEYS[1], topic_filter)
  else redis.call('DEL', KEYS[1]) end
end
local version = redis.call('INCR', KEYS[2])
redis.call('SPUBLISH', ARGV[1], version .. '\\0' .. table.concat(ARGV, '\\0', 2))
return version
"""

# Makes a node the owner of a client id if the owner is still the one it read (ARGV[2],
# '' for none), keeping the will to publish if the node dies (for a session that is not
# stored; '' otherwise). Every claim moves the epoch on; a claim from another node leaves
# that node's claim as ``handover`` (NODE:EPOCH), so that it can still write what it has
# of the session until the new owner ends the hand-over (END_HANDOVER). Returns the new
# epoch and the owner it found, or 0 and the owner it found if that is not ARGV[2].
CLAIM_CLIENT = """
local owner = redis.call('HMGET', KEYS[1], 'node', 'epoch')
local previous = owner[1] or ''
if previous ~= ARGV[2] then return {0, previous} end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'will', ARGV[3])
if previous ~= '' and previous ~= ARGV[1] then
  redis.call('HSET', KEYS[1], 'handover', previous .. ':' .. owner[2])
else
  redis.call('HDEL', KEYS[1], 'handover')
end
return {epoch, previous}
"""

# Ends the hand-over of a claim (ARGV: owner node, epoch): the previous owner may no
# longer write the client's keys.
END_HANDOVER = """
local owner = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if owner[1] == ARGV[1] and owner[2] == ARGV[2] then redis.call('HDEL', KEYS[1], 'handover') end
return 0
"""

# Writes the keys of a client id (KEYS[2..]) only while the writer owns it (fencing: a
# node that lost the client id, having been cut off or frozen, cannot overwrite what the
# new owner has). ARGV[1] and ARGV[2] are the writer's node id and the epoch of its claim;
# it owns the client id under that claim or a later one of its own, or while it hands the
# session over from that claim. Then come the commands, each as its argument count and its
# arguments; RELEASE forgets the owner record (KEYS[1]) if the claim is still that one.
# Returns 1, or 0 if the writer owns the client id no longer and a write was refused (a
# RELEASE alone has nothing to do then: the owner record is another node's).
FENCED_WRITE = """
local owner = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'handover')
local mine = owner[1] == ARGV[1] and tonumber(owner[2]) >= tonumber(ARGV[2])
local i = 3
if not mine and owner[3] ~= ARGV[1] .. ':' .. ARGV[2] then
  while i <= #ARGV do
    if ARGV[i + 1] ~= 'RELEASE' then return 0 end
    i = i + tonumber(ARGV[i]) + 1
  end
  return 1
end
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if ARGV[i + 1] == 'RELEASE' then
    if owner[1] == ARGV[1] and owner[2] == ARGV[2] then redis.call('DEL', KEYS[1]) end
  else
    redis.call(unpack(ARGV, i + 1, i + n))
  end
  i = i + n + 1
end
return 1
"""

# Takes a client id over from a dead node, if that node still owns it; returns the new
# epoch and the will kept with the claim, or nil. A hand-over from a live node to the dead
# one stays open: that node may still be writing what it had of the session.
ADOPT_CLIENT = """
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then return false end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'node', ARGV[2])
return {epoch, redis.call('HGET', KEYS[1], 'will') or ''}
"""

# Forgets the owner of a client id if it is still this node under this epoch.
RELEASE_CLIENT = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1]
  and redis.call('HGET', KEYS[1], 'epoch') == ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Takes the adoption lock KEYS[1] for node ARGV[1], for ARGV[2] ms, if it is free or held
# under ARGV[1] already: by a former run of that node id, which is gone (one run of a node
# id is alive at a time) and left it when it stopped or died in an adoption. 1 if taken.
TAKE_ADOPTION = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Lets go of the lock KEYS[1] if node ARGV[1] holds it; returns 1 if it did.
RELEASE_ADOPTION = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# Moves a field of a hash from one value to another (a pending transaction from a dead node
# to its adopter) if it still has the first; returns 1 if it did.
MOVE_FIELD = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# Reads what the commands in ARGV (one argument each: HGETALL, SMEMBERS, GET) return for
# the keys in KEYS, at one moment: the keys of one hash tag read together (a MULTI does
# the same on one server, but not through every Redis Cluster client).
READ_TOGETHER = """
local replies = {}
for i = 1, #KEYS do replies[i] = redis.call(ARGV[i], KEYS[i]) end
return replies
"""
