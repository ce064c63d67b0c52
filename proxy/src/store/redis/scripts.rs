//! Lua scripts: each runs atomically in Redis, so replicas cannot interleave
//! the commands of one invariant.

use redis::Script;

/// The Lua scripts behind the store's multi-command invariants.
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) update: Script,
    pub(super) touch: Script,
    pub(super) delete: Script,
    pub(super) add_stream: Script,
    pub(super) end_stream: Script,
    pub(super) delivered: Script,
    pub(super) claim: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            // KEYS[1] session; ARGV[1] ttl ms, then field/value pairs.
            create: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
                 redis.call('HSET', KEYS[1], unpack(ARGV, 2)) \
                 redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1",
            ),
            update: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
                 redis.call('DEL', KEYS[1]) \
                 redis.call('HSET', KEYS[1], unpack(ARGV, 2)) \
                 redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1",
            ),
            // KEYS session, streams, delivered; ARGV[1] ttl ms.
            touch: Script::new(
                "if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end \
                 for i = 2, 3 do if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[1]) then \
                 redis.call('PEXPIRE', KEYS[i], ARGV[1]) end end return 1",
            ),
            // KEYS session, streams, delivered; ARGV[1] log key prefix.
            delete: Script::new(
                "local n = redis.call('DEL', KEYS[1]) \
                 for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('DEL', ARGV[1] .. id) end \
                 redis.call('DEL', KEYS[2], KEYS[3]) return n",
            ),
            // KEYS streams; ARGV stream id, kind, ttl ms: registers a log and
            // keeps the registry at least as long as the log.
            add_stream: Script::new(
                "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
                 local t = redis.call('PTTL', KEYS[1]) \
                 if t < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end return 1",
            ),
            // KEYS log, streams; ARGV stream id, ttl ms: the end marker, and
            // the registry entry flagged ended.
            end_stream: Script::new(
                "redis.call('XADD', KEYS[1], '*', 'end', 1) redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
                 local v = redis.call('HGET', KEYS[2], ARGV[1]) \
                 if v then local m = cjson.decode(v) m['e'] = true \
                 redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(m)) end return 1",
            ),
            // KEYS session; ARGV from, to.
            claim: Script::new(
                "if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end \
                 redis.call('HSET', KEYS[1], 'owner', ARGV[2]) return 1",
            ),
            // KEYS delivered; ARGV stream id, seq, ttl ms.
            delivered: Script::new(
                "local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') \
                 if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end \
                 if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end return 1",
            ),
        }
    }
}
