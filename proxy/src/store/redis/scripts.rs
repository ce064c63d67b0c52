//! Lua scripts: each runs atomically in Redis, so replicas cannot interleave
//! the commands of one invariant. Every key a script touches carries the
//! session's hash tag, so on a Cluster they all live on one node.

use redis::Script;

// The writes to a stream's log share one layout. KEYS log, open, streams,
// finished; ARGV id, writer, maxlen, idle ms, standalone retention ms,
// response retention ms, then per event seq, type ('' for none), data.

/// Only the stream's writer may write it.
const WRITER_ONLY: &str = "if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then \
    return redis.error_reply('FENCED stream taken over') end";

/// Ending twice (a retry whose first reply was lost) is a no-op; else only
/// the writer may end it.
const UNLESS_ENDED: &str = "local w = redis.call('HGET', KEYS[2], ARGV[1]) \
    if not w then return 1 end \
    if w ~= ARGV[2] then return redis.error_reply('FENCED stream taken over') end";

/// Adds the events; one at or below the stream's top (a retried batch whose
/// first reply was lost) is skipped, not an error.
const APPEND: &str = "for i = 7, #ARGV, 3 do \
      local r \
      if ARGV[i + 1] == '' then \
        r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[i] .. '-0', 'd', ARGV[i + 2]) \
      else \
        r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[i] .. '-0', 'd', ARGV[i + 2], \
          'e', ARGV[i + 1]) \
      end \
      if type(r) == 'table' and r.err and not string.find(r.err, 'equal or smaller') then \
        return r end \
    end";

/// An open stream's log lives as long as its session.
const KEEP_WHILE_OPEN: &str = "local t = redis.call('PTTL', KEYS[1]) \
    if t ~= -2 and t < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end";

/// The end marker, then the retention of the stream's kind counts. A
/// response stream leaves the registry for the finished index (scored by
/// expiry, pruned as streams end), so neither grows with the session's
/// history.
const END: &str = "redis.call('XADD', KEYS[1], '*', 'end', 1) \
    redis.call('HDEL', KEYS[2], ARGV[1]) \
    local meta = redis.call('HGET', KEYS[3], ARGV[1]) \
    if meta and cjson.decode(meta)['k'] == 'standalone' then \
      redis.call('PEXPIRE', KEYS[1], ARGV[5]) return 1 end \
    redis.call('HDEL', KEYS[3], ARGV[1]) \
    local now = redis.call('TIME') \
    now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) \
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now) \
    redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), ARGV[1]) \
    redis.call('PEXPIRE', KEYS[4], ARGV[6]) \
    redis.call('PEXPIRE', KEYS[1], ARGV[6])";

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
    pub(super) finish: Script,
    pub(super) take_stream: Script,
    pub(super) delivered: Script,
    pub(super) deregister: Script,
    pub(super) take_token: Script,
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
            // KEYS session, streams, delivered, open, subs; ARGV log key
            // prefix. The registry holds only open streams and the
            // standalone one, so this is short whatever the session's
            // history; finished response logs are dropped after, in batches.
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
            // KEYS streams, open, log, session; ARGV id, meta, writer,
            // registry ttl ms, idle ms: registers the stream as open under
            // its writer, unless the session is gone (a late opener must not
            // leave keys behind a delete).
            // The registry ttl is the longest any key of a session gets, so
            // setting it never shortens one; a log that exists already (a
            // standalone stream going on) lives with the session again.
            add_stream: Script::new(
                "if redis.call('EXISTS', KEYS[4]) == 0 then \
                   return redis.error_reply('FENCED session gone') end \
                 redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
                 redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) \
                 redis.call('PEXPIRE', KEYS[1], ARGV[4]) \
                 redis.call('PEXPIRE', KEYS[2], ARGV[4]) \
                 redis.call('PEXPIRE', KEYS[3], ARGV[5]) return 1",
            ),
            append: Script::new(&format!("{WRITER_ONLY} {APPEND} {KEEP_WHILE_OPEN} return 1")),
            end_stream: Script::new(&format!("{UNLESS_ENDED} {END} return 1")),
            finish: Script::new(&format!("{UNLESS_ENDED} {APPEND} {END} return 1")),
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
            // KEYS bucket; ARGV burst, tokens per ms. 0 when a token was
            // taken, else ms until one is back. Redis's clock, so replicas'
            // clocks need not agree.
            take_token: Script::new(
                "local burst = tonumber(ARGV[1]) local rate = tonumber(ARGV[2]) \
                 local t = redis.call('TIME') \
                 local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
                 local b = redis.call('HMGET', KEYS[1], 't', 'at') \
                 local tokens = tonumber(b[1]) or burst local at = tonumber(b[2]) or now \
                 if now > at then tokens = math.min(burst, tokens + (now - at) * rate) else now = at end \
                 local wait = 0 \
                 if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate) end \
                 redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(now)) \
                 redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000) \
                 return wait",
            ),
            deregister: Script::new(
                "local v = redis.call('GET', KEYS[1]) \
                 if v and cjson.decode(v)['i'] == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
            ),
        }
    }
}
