-- CreateTicket, atomically and idempotently (see store.rs for the key layout).
-- KEYS[1] processed:{message_id}   KEYS[2] tombstone:{order_id}
-- KEYS[3] order_ticket:{order_id}  KEYS[4] ticket_seq
-- KEYS[5] tickets (hash id -> record JSON)  KEYS[6] ticket_states (hash id -> state)
-- ARGV[1] outcome TTL (s)  ARGV[2] the ticket record JSON (built and priced in Rust)
-- ARGV[3] its total in minor units
-- Returns the outcome JSON, the same for every delivery of one message id.
local stored = redis.call('GET', KEYS[1])
if stored then
  return stored
end

local outcome
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- RejectTicket came first (the saga gave up on this step): refuse, change nothing.
  outcome = cjson.encode({
    outcome = 'failure',
    code = 'TICKET_CANCELLED',
    message = 'the order was rejected before its ticket was created',
  })
else
  local existing = redis.call('GET', KEYS[3])
  if existing then
    -- Another command (another message id) already created this order's ticket.
    local raw = redis.call('HGET', KEYS[5], existing)
    if not raw then
      return redis.error_reply('ticket ' .. existing .. ' is indexed but has no record')
    end
    local record = cjson.decode(raw)
    outcome = cjson.encode({ outcome = 'success', ticket_id = tonumber(existing), total_minor = record.total_minor })
  else
    local id = redis.call('INCR', KEYS[4])
    redis.call('HSET', KEYS[5], id, ARGV[2])
    redis.call('HSET', KEYS[6], id, 'CREATE_PENDING')
    redis.call('SET', KEYS[3], id)
    outcome = cjson.encode({ outcome = 'success', ticket_id = id, total_minor = tonumber(ARGV[3]) })
  end
end
redis.call('SET', KEYS[1], outcome, 'EX', ARGV[1])
return outcome
