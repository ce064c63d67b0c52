//! Lua scripts: each runs atomically in Redis, so replicas cannot interleave
//! the commands of one invariant. Every key a script touches carries the
//! session's hash tag, so on a Cluster they all live on one node.

use redis::Script;

/// The Lua scripts behind the store's multi-command invariants.
pub(super) struct Scripts {
    pub(super) create: Script,
    pub(super) update: Script,
    pub(super) touch: Script,
    pub(super) delete: Script,
    pub(super) claim: Script,
    pub(super) add_stream: Script,
    pub(super) append: Script,
    pub(super) end_stream: Script,
    pub(super) take_stream: Script,
    pub(super) delivered: Script,
    pub(super) deregister: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            // KEYS session; ARGV idle ms, then field/value pairs.
            create: Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end \
                 redis.call('HSET', KEYS[1], unpack(ARGV, 2)) \
                 redis.call('PEXPIRE', KEYS[1], ARGV[1]) return 1",
            ),
            // KEYS session, subs; ARGV epoch, idle ms, op, field, value.
            // 0 gone, 1 applied, 2 fenced (the epoch moved on).
            update: Script::new(
                "local e = redis.call('HGET', KEYS[1], 'epoch') \
                 if not e then return 0 end \
                 if e ~= ARGV[1] then return 2 end \
                 local op = ARGV[3] \
                 if op == 'set' then redis.call('HSET', KEYS[1], ARGV[4], ARGV[5]) \
                 elseif op == 'del' then redis.call('HDEL', KEYS[1], ARGV[4]) \
                 elseif op == 'sadd' then redis.call('SADD', KEYS[2], ARGV[5]) \
                 elseif op == 'srem' then redis.call('SREM', KEYS[2], ARGV[5]) end \
                 redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
                 if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end \
                 return 1",
            ),
            // KEYS session, streams, delivered, open, subs; ARGV idle ms, log
            // key prefix. The session's keys and its open logs live on
            // together; finished logs keep their own retention.
            touch: Script::new(
                "if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end \
                 local ttl = tonumber(ARGV[1]) \
                 local function extend(k) local t = redis.call('PTTL', k) \
                   if t ~= -2 and t < ttl then redis.call('PEXPIRE', k, ttl) end end \
                 for i = 2, 5 do extend(KEYS[i]) end \
                 for _, id in ipairs(redis.call('HKEYS', KEYS[4])) do extend(ARGV[2] .. id) end \
                 return 1",
            ),
            // KEYS session, streams, delivered, open, subs; ARGV log key prefix.
            delete: Script::new(
                "local n = redis.call('DEL', KEYS[1]) \
                 for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('DEL', ARGV[1] .. id) end \
                 redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5]) return n",
            ),
            // KEYS session; ARGV epoch, new owner, its address ('' for none).
            // The new epoch, or 0 when another claim came first.
            claim: Script::new(
                "local e = redis.call('HGET', KEYS[1], 'epoch') \
                 if not e or e ~= ARGV[1] then return 0 end \
                 local n = redis.call('HINCRBY', KEYS[1], 'epoch', 1) \
                 redis.call('HSET', KEYS[1], 'owner', ARGV[2]) \
                 if ARGV[3] == '' then redis.call('HDEL', KEYS[1], 'owner_addr') \
                 else redis.call('HSET', KEYS[1], 'owner_addr', ARGV[3]) end return n",
            ),
            // KEYS streams, open, log; ARGV id, meta, writer, registry ttl
            // ms, idle ms: registers the stream as open under its writer.
            add_stream: Script::new(
                "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
                 redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) \
                 for i = 1, 2 do if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[4]) then \
                   redis.call('PEXPIRE', KEYS[i], ARGV[4]) end end \
                 if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end \
                 return 1",
            ),
            // KEYS log, open; ARGV id, writer, maxlen, idle ms, then per
            // event seq, type ('' for none), data. Only the writer appends;
            // an event at or below the stream's top (a retried batch whose
            // first reply was lost) is skipped, not an error.
            append: Script::new(
                "if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then \
                   return redis.error_reply('FENCED stream taken over') end \
                 for i = 5, #ARGV, 3 do \
                   local r \
                   if ARGV[i + 1] == '' then \
                     r = redis.pcall('XADD', KEYS[1], 'MAXLEN', ARGV[3], ARGV[i] .. '-0', 'd', ARGV[i + 2]) \
                   else \
                     r = redis.pcall('XADD', KEYS[1], 'MAXLEN', ARGV[3], ARGV[i] .. '-0', 'd', ARGV[i + 2], \
                       'e', ARGV[i + 1]) \
                   end \
                   if type(r) == 'table' and r.err and not string.find(r.err, 'equal or smaller') then \
                     return r end \
                 end \
                 local t = redis.call('PTTL', KEYS[1]) \
                 if t ~= -2 and t < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end \
                 return 1",
            ),
            // KEYS log, open; ARGV id, writer, retention ms: the end
            // marker, then the retention counts. Ending twice is a no-op.
            end_stream: Script::new(
                "local w = redis.call('HGET', KEYS[2], ARGV[1]) \
                 if not w then return 1 end \
                 if w ~= ARGV[2] then return redis.error_reply('FENCED stream taken over') end \
                 redis.call('XADD', KEYS[1], '*', 'end', 1) \
                 redis.call('PEXPIRE', KEYS[1], ARGV[3]) \
                 redis.call('HDEL', KEYS[2], ARGV[1]) return 1",
            ),
            // KEYS open; ARGV id, from, to.
            take_stream: Script::new(
                "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end \
                 redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1",
            ),
            // KEYS delivered; ARGV stream id, seq, ttl ms.
            delivered: Script::new(
                "local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') \
                 if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end \
                 if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end return 1",
            ),
            // KEYS replica; ARGV incarnation: only its own registration.
            deregister: Script::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if v and cjson.decode(v)['i'] == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
            ),
        }
    }
}
