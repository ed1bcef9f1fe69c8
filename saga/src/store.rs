//! Sagas in Redis.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{p}saga:{<id>}` | hash | `v` version, `s` state (JSON), `label` (e.g. the order state), `e` the id of its last event, `u` whether the indexes hold it as unfinished (`1`/`0`), `w` who watches it, set by the first watch ([`SagaStore::watch_and_load`]): the one replica that does, or `*` for several (or for a store without [`LocalWatchers`]) |
//! | `{p}saga:{<id>}:events` | stream | one entry per event, its one field `event` a JSON object ([`StoredEvent`]); watchers replay and tail it |
//! | `{p}sagas:wake` | sorted set | saga id by the time the sweeper must look at it |
//! | `{p}sagas:unfinished` | sorted set | running, compensating or parked sagas by creation time (stuck = unfinished too long) |
//! | `{p}sagas:all`, `{p}sagas:label:<label>` | sorted sets | ids for listing (UUIDv7 ids sort by time) |
//! | `{p}sagas:finished` | sorted set | finished sagas by the time they finished: what [`SagaStore::prune`] deletes after the retention |
//! | `{p}sagas:events` | pub/sub channel | every save that stores events of a saga watched through several replicas (`w` is `*`) publishes the saga's id and those events ([`EventsNotice`]): watchers follow it instead of each blocking a connection on its stream, and sagas nobody watches cost no message to every replica |
//! | `{p}sagas:events:<replica>` | pub/sub channel | the same, for a saga watched through that replica alone, when another replica saves it: only the watching replica receives it. A save by the watching replica itself publishes nothing: it hands the events to its own watchers ([`LocalWatchers`]) |
//!
//! A finished saga is kept for a retention period, then [`SagaStore::prune`] deletes
//! its hash, its event stream, its index entries and the key that pointed at it
//! when it was created (the order's idempotency key), all in one script, so no
//! index ever names a deleted saga and a retried request cannot revive its id.
//! Every change goes through one Lua script that compares the version, writes the
//! state, appends the events and moves the saga in the indexes, atomically and in
//! one round trip. WATCH/MULTI would not do: on a multiplexed connection other
//! tasks' commands interleave and the optimistic lock silently means nothing.
//!
//! The two keys of one saga share the hash tag `{<id>}`. The shared indexes live in
//! other slots, so on Redis Cluster the script would need the indexes sharded by
//! the same tag; this single-node layout is what the project runs today.

use std::borrow::Cow;

use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    SagaDefinition,
    machine::{Event, SagaState},
};

/// A Redis failure or a stored state that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored saga {id} does not decode: {source}")]
    Corrupt { id: String, source: serde_json::Error },
    #[error("saga state does not encode: {0}")]
    Encode(serde_json::Error),
    #[error("the save script answered {0:?}, not a version")]
    Reply(Vec<String>),
}

/// The result of a compare-and-set write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// Written; the state's new version.
    Saved(u64),
    /// Someone else changed the saga first: reload and decide again.
    Conflict,
    /// Creating, but a saga with this id exists (an idempotent retry).
    AlreadyExists,
}

/// This replica's own watchers, for [`SagaStore::with_local_watchers`].
///
/// The decision a reader must know: a save hands its events to `sink` instead of
/// publishing them only when the saga's `w` names `replica` alone, i.e. when every
/// watch of the saga so far went through this replica. A save by another replica
/// publishes them on this replica's own channel
/// ([`SagaStore::replica_events_channel`], which the replica must subscribe to
/// besides [`SagaStore::events_channel`]), so only this replica receives them. A
/// second replica's watch turns `w` into `*` for good, and from then on every save
/// publishes on the shared channel. So the common deployment, one replica that
/// both saves and serves the watch, sends no notice through Redis; with several,
/// a notice goes to the replicas that watch its saga, not to all of them; and no
/// watcher can miss one.
#[derive(Clone)]
pub struct LocalWatchers {
    /// This replica's id, unique among the replicas of a namespace and over
    /// restarts (a watcher does not outlive its process, its mark does); not `*`
    /// or `1`, which marks mean something else.
    pub replica: String,
    /// Called with the saga's id and the notice, as a subscriber would receive it,
    /// right after the save that stored the events.
    pub sink: NoticeSink,
}

/// Where [`LocalWatchers`] hand a notice: the saga's id and the notice.
pub type NoticeSink = std::sync::Arc<dyn Fn(&str, EventsNotice) + Send + Sync>;

/// Fields of every stored event: `kind`, `step`, `attempt`, `code`, `message`,
/// `status`, `label`, `at`.
const EVENT_FIELDS: usize = 8;

/// The names of [`EVENT_FIELDS`], in stored order.
const EVENT_FIELD_NAMES: [&str; EVENT_FIELDS] = ["kind", "step", "attempt", "code", "message", "status", "label", "at"];

/// The one field of a stream entry in the current format: the event as a JSON
/// object.
const EVENT_ENTRY_FIELD: &str = "event";

/// A field name as a [`StoredEvent`] keeps it: borrowed when it is one of the
/// known names (all of them, in practice), so reading an event allocates only its
/// non-empty values.
fn field_name(name: &str) -> Cow<'static, str> {
    EVENT_FIELD_NAMES
        .iter()
        .find(|known| **known == name)
        .map_or_else(|| Cow::Owned(name.to_owned()), |known| Cow::Borrowed(*known))
}

/// `[field, value, field, value, …]` as pairs; a last field without a value is
/// dropped.
fn paired<S: AsRef<str> + Into<String>>(flat: impl IntoIterator<Item = S>) -> Vec<(Cow<'static, str>, String)> {
    let mut flat = flat.into_iter();
    let mut fields = Vec::with_capacity(EVENT_FIELDS);
    while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
        fields.push((field_name(field.as_ref()), value.into()));
    }
    fields
}

/// One event as a save stores it: the value of its stream entry's one field
/// (`event`) and, unchanged, an element of its notice's `events`. Empty `code`
/// and `message` are left out.
///
/// The decision a reader must know: one JSON value per event, not a stream field
/// per event field. Redis converts every script argument and every argument of a
/// command a script calls, and a client parses every element of a reply, so eight
/// field/value pairs cost sixteen of each; an event is written once and read by
/// every watch. Streams written before this format (sixteen fields an entry) are
/// still read ([`StoredEvent::from_entry`]).
#[derive(serde::Serialize)]
struct EventRecord<'a> {
    kind: &'a str,
    step: &'a str,
    attempt: u32,
    #[serde(skip_serializing_if = "str::is_empty")]
    code: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    status: &'a str,
    label: &'a str,
    at: i64,
}

impl EventRecord<'_> {
    /// The event with its stream id, field for field as a subscriber parses it
    /// from the notice: what a save hands to this replica's own watchers.
    fn stored(&self, id: String) -> StoredEvent {
        let [kind, step, attempt, code, message, status, label, at] = EVENT_FIELD_NAMES;
        let mut fields = Vec::with_capacity(EVENT_FIELDS);
        fields.push((Cow::Borrowed(kind), self.kind.to_owned()));
        fields.push((Cow::Borrowed(step), self.step.to_owned()));
        fields.push((Cow::Borrowed(attempt), self.attempt.to_string()));
        if !self.code.is_empty() {
            fields.push((Cow::Borrowed(code), self.code.to_owned()));
        }
        if !self.message.is_empty() {
            fields.push((Cow::Borrowed(message), self.message.to_owned()));
        }
        fields.push((Cow::Borrowed(status), self.status.to_owned()));
        fields.push((Cow::Borrowed(label), self.label.to_owned()));
        fields.push((Cow::Borrowed(at), self.at.to_string()));
        StoredEvent { id, fields }
    }
}

/// One event as stored in a saga's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// The stream entry id, e.g. `1732632000000-0`.
    pub id: String,
    /// Field and value, in stored order; numbers as their decimal text. A list,
    /// not a map: an event has eight fields, and every event a watch sends is
    /// parsed once, so hashing and a table per event cost more than the scan.
    pub fields: Vec<(Cow<'static, str>, String)>,
}

impl StoredEvent {
    /// An event from a flat `[field, value, field, value, …]` list (a stream
    /// entry or a notice's event in the format before `EventRecord`); a last
    /// field without a value is dropped.
    pub fn from_flat<S: AsRef<str> + Into<String>>(id: String, flat: impl IntoIterator<Item = S>) -> Self {
        Self { id, fields: paired(flat) }
    }

    /// An event from a stream entry's fields, in either format: the one field
    /// `event` holding its JSON object, or the older field/value pairs. An `event`
    /// that is not a JSON object is kept as it is, under that name, so a watcher
    /// still sees an event with that id rather than a failed stream.
    pub fn from_entry(id: String, mut flat: Vec<String>) -> Self {
        if flat.len() == 2 && flat[0] == EVENT_ENTRY_FIELD {
            let json = flat.pop().unwrap_or_default();
            return match serde_json::from_str::<EventFields>(&json) {
                Ok(EventFields(fields)) => Self { id, fields },
                Err(_) => Self { id, fields: vec![(Cow::Borrowed(EVENT_ENTRY_FIELD), json)] },
            };
        }
        Self::from_flat(id, flat)
    }

    /// The value of `name`, or `""`.
    pub fn field(&self, name: &str) -> &str {
        self.fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str()).unwrap_or("")
    }
}

/// What a save that stored events publishes on [`SagaStore::events_channel`]:
/// `<saga id>\n<JSON>`, the JSON holding the new events with their stream ids and
/// the id of the entry before them.
///
/// The decision a reader must know: `prev` lets a watcher that has seen the stream
/// up to some id take these events as they are only when they follow that id
/// directly; otherwise (a lost message, a watcher that joined between two saves, a
/// saga saved before notices carried events) it reads the stream. Pub/sub is at
/// most once; the stream stays the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsNotice {
    /// The stream id of the event before these; empty when the saga had none (or
    /// none recorded: it was saved before the last id was kept).
    pub prev: String,
    pub events: Vec<StoredEvent>,
}

/// The JSON part of a notice, as the save script writes it, read in place: its
/// strings borrow from the message unless they hold escapes.
#[derive(serde::Deserialize)]
struct NoticeJson<'a> {
    #[serde(borrow)]
    prev: JsonStr<'a>,
    #[serde(borrow)]
    ids: Vec<JsonStr<'a>>,
    events: Vec<EventFields>,
}

/// A JSON string borrowed from the input when it has no escapes, copied
/// otherwise (serde's own `Cow<str>` always copies inside a `Vec`); a number,
/// as its decimal text, and `null`, as empty, for an event's values.
struct JsonStr<'a>(Cow<'a, str>);

impl AsRef<str> for JsonStr<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<JsonStr<'_>> for String {
    fn from(value: JsonStr<'_>) -> Self {
        value.0.into_owned()
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonStr<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_string())))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_string())))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_string())))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed("")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// One event's fields as JSON: an object (the current format, [`EventRecord`])
/// or a flat `[field, value, …]` array (notices before it). Names and values are
/// read in place; numbers become their decimal text.
struct EventFields(Vec<(Cow<'static, str>, String)>);

impl<'de> serde::Deserialize<'de> for EventFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EventFields;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event: a JSON object, or a flat array of field names and values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(EVENT_FIELDS);
                while let Some(name) = map.next_key::<JsonStr<'de>>()? {
                    let value: JsonStr<'de> = map.next_value()?;
                    fields.push((field_name(name.as_ref()), value.into()));
                }
                Ok(EventFields(fields))
            }

            // The format before objects, only in notices from older replicas.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut flat = Vec::with_capacity(EVENT_FIELDS * 2);
                while let Some(item) = seq.next_element::<JsonStr<'de>>()? {
                    flat.push(item);
                }
                Ok(EventFields(paired(flat)))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl EventsNotice {
    /// Splits a message of the events channel into the saga's id and the notice,
    /// still unparsed: a replica parses only the notices of sagas it has watchers
    /// of. A message of only an id (from a replica older than notices) has none.
    pub fn split(message: &str) -> (&str, Option<&str>) {
        match message.split_once('\n') {
            Some((id, notice)) => (id, Some(notice)),
            None => (message, None),
        }
    }

    /// Parses the JSON part of a message ([`Self::split`]).
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let notice: NoticeJson<'_> = serde_json::from_str(json)?;
        let events = notice
            .ids
            .into_iter()
            .zip(notice.events)
            .map(|(id, EventFields(fields))| StoredEvent { id: id.into(), fields })
            .collect();
        Ok(Self { prev: notice.prev.into(), events })
    }

    /// The stream id of the last event in the notice.
    pub fn last_id(&self) -> Option<&str> {
        self.events.last().map(|e| e.id.as_str())
    }
}

/// Orders two stream entry ids (`<ms>-<seq>`) as Redis does; an id that does not
/// parse sorts first.
pub fn stream_id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(id: &str) -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
    parts(a).cmp(&parts(b))
}

const SAVE: &str = r#"
-- KEYS: 1 state, 2 events, 3 wake, 4 active, 5 all, 6 old label index, 7 new label index, 8 finished
-- ARGV: 1 expected version (0: create), 2 state json, 3 wake-at ms or '', 4 saga id,
--       5 created-at ms, 6 unfinished '1'/'0', 7 label, 8 updated-at ms, 9 linked key or '',
--       10 events channel, 11 this replica's id or '' (no local watchers),
--       12.. the events, one JSON object each
-- Returns {version} or, when this replica alone watches the saga, {version, the id
-- of the entry before the events, the events' ids}: the caller hands them to its
-- own watchers. {'-1'}: it exists already (create); {'0'}: the version moved.
-- The hash's 'u' is the unfinished flag the indexes were last moved for: a save that
-- does not change it (most do not) leaves the unfinished and finished indexes alone.
-- 'w' is set once a watch started: only then is there anyone to notify.
-- Every redis.call costs Redis far more than the command itself, so a create
-- removes nothing from indexes that cannot hold a new id.
local stored = redis.call('HMGET', KEYS[1], 'v', 'e', 'u', 'w')
local current = stored[1]
local creating = ARGV[1] == '0'
if creating then
  if current then return { '-1' } end
elseif current ~= ARGV[1] then
  return { '0' }
end
local version = (tonumber(current) or 0) + 1
local ids = {}
for i = 12, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[2], '*', 'event', ARGV[i])
end
local hash = { 'v', version, 's', ARGV[2], 'label', ARGV[7] }
if #ids > 0 then
  hash[#hash + 1] = 'e'
  hash[#hash + 1] = ids[#ids]
end
local moved = stored[3] ~= ARGV[6]
if moved then
  hash[#hash + 1] = 'u'
  hash[#hash + 1] = ARGV[6]
end
if ARGV[9] ~= '' then
  hash[#hash + 1] = 'linked'
  hash[#hash + 1] = ARGV[9]
end
redis.call('HSET', KEYS[1], unpack(hash))
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
elseif not creating then
  redis.call('ZREM', KEYS[3], ARGV[4])
end
if moved then
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
    if not creating then redis.call('ZREM', KEYS[8], ARGV[4]) end
  else
    if not creating then redis.call('ZREM', KEYS[4], ARGV[4]) end
    -- NX: the retention counts from the first time the saga finished.
    redis.call('ZADD', KEYS[8], 'NX', ARGV[8], ARGV[4])
  end
end
if creating then
  redis.call('ZADD', KEYS[5], 0, ARGV[4])
  redis.call('ZADD', KEYS[7], 0, ARGV[4])
elseif KEYS[6] ~= KEYS[7] then
  redis.call('ZREM', KEYS[6], ARGV[4])
  redis.call('ZADD', KEYS[7], 0, ARGV[4])
end
if #ids > 0 and stored[4] then
  local prev = stored[2] or ''
  if ARGV[11] ~= '' and stored[4] == ARGV[11] then
    local reply = { tostring(version), prev }
    for i = 1, #ids do reply[#reply + 1] = ids[i] end
    return reply
  end
  -- Watched through one replica alone: its own channel. Several ('*'), or marked
  -- by a version before replica ids ('1'): the channel every replica follows.
  local channel = ARGV[10]
  if stored[4] ~= '*' and stored[4] ~= '1' then channel = ARGV[10] .. ':' .. stored[4] end
  -- "<saga id>\n<JSON>": the events themselves, so a watcher needs no read of the
  -- stream, and the id of the entry before them, so it can tell it missed none.
  -- The events are the arguments as they came: Lua never decodes them.
  redis.call('PUBLISH', channel, ARGV[4] .. '\n{"prev":' .. cjson.encode(prev) ..
    ',"ids":' .. cjson.encode(ids) .. ',"events":[' .. table.concat(ARGV, ',', 12) .. ']}')
end
return { tostring(version) }
"#;

/// Marks the saga watched, only if it exists: `w` becomes ARGV[1] (this replica's
/// id, or `*`) when unset, and `*` when it names another replica.
const MARK_WATCHED: &str = "if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('HSETNX', KEYS[1], 'w', ARGV[1]) == 0 \
     and redis.call('HGET', KEYS[1], 'w') ~= ARGV[1] then redis.call('HSET', KEYS[1], 'w', '*') end return 0";

/// Deletes up to ARGV[2] sagas that finished at or before ARGV[1], with their
/// events, index entries and linked key (deleted only while it still names the
/// saga). Returns how many were deleted.
const PRUNE: &str = r#"
-- KEYS: 1 finished, 2 all, 3 wake, 4 unfinished; ARGV: 1 cutoff ms, 2 limit, 3 key prefix
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local state = ARGV[3] .. 'saga:{' .. id .. '}'
  local fields = redis.call('HMGET', state, 'label', 'linked')
  if fields[1] then redis.call('ZREM', ARGV[3] .. 'sagas:label:' .. fields[1], id) end
  if fields[2] and redis.call('GET', fields[2]) == id then redis.call('DEL', fields[2]) end
  redis.call('DEL', state, state .. ':events')
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"#;

/// Claims a due saga for one sweeper: pushes its wake time forward by a lease, so
/// other replicas skip it; if this sweeper dies, the lease runs out and another
/// replica takes it.
const CLAIM: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"#;

/// The saga store of one namespace.
#[derive(Clone)]
pub struct SagaStore {
    conn: ConnectionManager,
    prefix: String,
    /// The namespace's shared keys, built once: a save names all of them.
    keys: std::sync::Arc<SharedKeys>,
    save: std::sync::Arc<redis::Script>,
    claim: std::sync::Arc<redis::Script>,
    prune: std::sync::Arc<redis::Script>,
    local: Option<LocalWatchers>,
}

/// The keys every saga of a namespace shares.
struct SharedKeys {
    wake: String,
    unfinished: String,
    all: String,
    finished: String,
    events_channel: String,
}

impl SagaStore {
    /// `prefix` ends with `:` (e.g. `order:`).
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let keys = std::sync::Arc::new(SharedKeys {
            wake: format!("{prefix}sagas:wake"),
            unfinished: format!("{prefix}sagas:unfinished"),
            all: format!("{prefix}sagas:all"),
            finished: format!("{prefix}sagas:finished"),
            events_channel: format!("{prefix}sagas:events"),
        });
        Self {
            conn,
            prefix,
            keys,
            save: std::sync::Arc::new(redis::Script::new(SAVE)),
            claim: std::sync::Arc::new(redis::Script::new(CLAIM)),
            prune: std::sync::Arc::new(redis::Script::new(PRUNE)),
            local: None,
        }
    }

    /// Makes this store a replica with watchers of its own: its watches mark sagas
    /// with `local.replica`, and its saves of sagas watched only through it hand
    /// their events to `local.sink` instead of publishing them ([`LocalWatchers`]).
    /// Without it, a watch marks a saga `*` and every save of a watched saga
    /// publishes.
    pub fn with_local_watchers(mut self, local: LocalWatchers) -> Self {
        self.local = Some(local);
        self
    }

    /// The id a watch marks a saga with, and a save compares with its mark; empty
    /// without local watchers. `*` (several replicas) and `1` (the mark of a
    /// version before replica ids) are no replica's id: a store given one of them
    /// has no local watchers.
    fn replica(&self) -> &str {
        match self.local.as_ref().map(|local| local.replica.as_str()) {
            Some("*" | "1") | None => "",
            Some(replica) => replica,
        }
    }

    pub fn state_key(&self, id: &str) -> String {
        self.state_key_arg(id).to_string()
    }

    pub fn events_key(&self, id: &str) -> String {
        self.events_key_arg(id).to_string()
    }

    /// The per-saga keys as command arguments: the one spelling of their layout,
    /// which a save writes straight into its command and the rest format.
    fn state_key_arg<'a>(&'a self, id: &'a str) -> Joined<'a, 4> {
        Joined([&self.prefix, "saga:{", id, "}"])
    }

    fn events_key_arg<'a>(&'a self, id: &'a str) -> Joined<'a, 4> {
        Joined([&self.prefix, "saga:{", id, "}:events"])
    }

    fn label_key_arg<'a>(&'a self, label: &'a str) -> Joined<'a, 3> {
        Joined([&self.prefix, "sagas:label:", label])
    }

    fn wake_key(&self) -> &str {
        &self.keys.wake
    }

    fn unfinished_key(&self) -> &str {
        &self.keys.unfinished
    }

    fn all_key(&self) -> &str {
        &self.keys.all
    }

    fn finished_key(&self) -> &str {
        &self.keys.finished
    }

    fn label_key(&self, label: &str) -> String {
        self.label_key_arg(label).to_string()
    }

    /// Loads a saga with its version, or `None`.
    pub async fn load<D: DeserializeOwned>(&self, id: &str) -> Result<Option<SagaState<D>>, StoreError> {
        let mut conn = self.conn.clone();
        let stored: (Option<u64>, Option<String>) =
            redis::cmd("HMGET").arg(self.state_key(id)).arg("v").arg("s").query_async(&mut conn).await?;
        decode_state(id, stored)
    }

    /// What a watch needs to start, in one round trip: marks the saga watched (if
    /// it exists), so that from now on every save that stores events publishes
    /// them on [`Self::events_channel`], then loads it and its events after `after`
    /// (exclusive; `None` for all, up to `count`). Subscribe to the notices before
    /// calling this: a save before the mark is in the events read here, a save
    /// after it is in a notice. The three commands are pipelined, not atomic; a save
    /// between them shows as events newer than the state, and possibly also as a
    /// notice of events already read, which a watcher recognises by their ids.
    pub async fn watch_and_load<D: DeserializeOwned>(
        &self,
        id: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<(Option<SagaState<D>>, Vec<StoredEvent>), StoreError> {
        let mut conn = self.conn.clone();
        let state_key = self.state_key(id);
        let (stored, events): ((Option<u64>, Option<String>), StreamEntries) = redis::pipe()
            // Only an existing saga: a watch of an unknown id must not leave a key.
            .cmd("EVAL")
            .arg(MARK_WATCHED)
            .arg(1)
            .arg(&state_key)
            .arg(match self.replica() {
                "" => "*",
                replica => replica,
            })
            .ignore()
            .cmd("HMGET")
            .arg(&state_key)
            .arg("v")
            .arg("s")
            .cmd("XRANGE")
            .arg(self.events_key(id))
            .arg(range_start(after))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok((decode_state(id, stored)?, stored_events(events)))
    }

    /// Writes `state` if its stored version is still `state.version` (0: create it,
    /// if no saga with its id exists), appends `events`, and updates the indexes.
    /// `old_label` is the label of the state as loaded; `label` the new one.
    /// `linked_key` (on creation) names a key that points at this saga, such as an
    /// idempotency key: pruning the saga deletes it too.
    pub async fn save<D: Serialize>(
        &self,
        definition: &SagaDefinition,
        state: &SagaState<D>,
        events: &[Event],
        old_label: Option<&str>,
        label: &str,
        linked_key: Option<&str>,
    ) -> Result<SaveOutcome, StoreError> {
        let json = serde_json::to_string(state).map_err(StoreError::Encode)?;
        let status = state.status.as_str();
        // Each event is one JSON object: the value of its stream entry and, as Lua
        // concatenates them, the notice's events.
        let event_records: Vec<EventRecord<'_>> = events
            .iter()
            .map(|e| EventRecord {
                kind: e.kind.as_str(),
                step: definition.step_name(e.step),
                attempt: e.attempt,
                code: &e.code,
                message: &e.message,
                status,
                label,
                at: state.updated_at_ms,
            })
            .collect();
        let records = event_records
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::Encode)?;
        let id = &state.saga_id;
        // EVALSHA built as one command, not through `Script::key`/`arg`: those keep
        // every argument in a `Vec` of its own, and the keys are written straight
        // into the command's buffer rather than formatted into strings first.
        let events_len: usize = records.iter().map(String::len).sum();
        let mut cmd = redis::Cmd::with_capacity(22 + records.len(), 512 + json.len() + events_len);
        cmd.arg("EVALSHA")
            .arg(self.save.get_hash())
            .arg(8)
            .arg(self.state_key_arg(id))
            .arg(self.events_key_arg(id))
            .arg(self.wake_key())
            .arg(self.unfinished_key())
            .arg(self.all_key())
            .arg(self.label_key_arg(old_label.unwrap_or(label)))
            .arg(self.label_key_arg(label))
            .arg(self.finished_key())
            .arg(state.version)
            .arg(&json)
            .arg(state.wake_at_ms().map(|w| w.to_string()).unwrap_or_default())
            .arg(id)
            .arg(state.created_at_ms)
            .arg(if state.status.is_finished() { "0" } else { "1" })
            .arg(label)
            .arg(state.updated_at_ms)
            .arg(linked_key.unwrap_or_default())
            .arg(&self.keys.events_channel)
            .arg(self.replica())
            .arg(&records);
        let mut conn = self.conn.clone();
        let reply: Vec<String> = match cmd.query_async(&mut conn).await {
            // Redis restarted or its script cache was flushed: load it and send again.
            Err(error) if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.save.load_async(&mut conn).await?;
                cmd.query_async(&mut conn).await?
            }
            result => result?,
        };
        let outcome = match reply.first().map(|code| code.parse::<i64>()) {
            Some(Ok(-1)) => SaveOutcome::AlreadyExists,
            Some(Ok(0)) => SaveOutcome::Conflict,
            Some(Ok(version)) if version > 0 => SaveOutcome::Saved(version as u64),
            _ => return Err(StoreError::Reply(reply)),
        };
        // Watched through this replica alone: the script published nothing and
        // returned the ids it gave the events, for this replica's watchers.
        if let (Some(local), [_, prev, ids @ ..]) = (&self.local, reply.as_slice())
            && ids.len() == event_records.len()
        {
            let events = event_records.iter().zip(ids).map(|(record, id)| record.stored(id.clone())).collect();
            (local.sink)(id, EventsNotice { prev: prev.clone(), events });
        }
        Ok(outcome)
    }

    /// Ids of sagas whose wake time is at or before `now_ms`, oldest first.
    pub async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.zrangebyscore_limit(self.wake_key(), "-inf", now_ms, 0, limit as isize).await?)
    }

    /// Claims a due saga until `now_ms + lease_ms`; false if another sweeper has it
    /// or it is no longer due.
    pub async fn claim(&self, id: &str, now_ms: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let claimed: i64 =
            self.claim.key(self.wake_key()).arg(id).arg(now_ms).arg(now_ms + lease_ms).invoke_async(&mut conn).await?;
        Ok(claimed == 1)
    }

    /// Deletes up to `limit` sagas that finished at or before `finished_before_ms`
    /// (their state, events, index entries and linked key); returns how many.
    pub async fn prune(&self, finished_before_ms: i64, limit: usize) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let pruned: usize = self
            .prune
            .key(self.finished_key())
            .key(self.all_key())
            .key(self.wake_key())
            .key(self.unfinished_key())
            .arg(finished_before_ms)
            .arg(limit)
            .arg(&self.prefix)
            .invoke_async(&mut conn)
            .await?;
        Ok(pruned)
    }

    /// How many finished sagas are kept (not pruned yet).
    pub async fn count_finished(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.zcard(self.finished_key()).await?)
    }

    /// Events of a saga after `after` (exclusive; `None` for all), up to `count`.
    pub async fn events_after(
        &self,
        id: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conn = self.conn.clone();
        let entries: StreamEntries = conn.xrange_count(self.events_key(id), range_start(after), "+", count).await?;
        Ok(stored_events(entries))
    }

    /// The pub/sub channel on which a save that stores events of a watched saga
    /// publishes the saga's id and the events ([`EventsNotice`]), unless one replica
    /// alone watches it ([`Self::replica_events_channel`]). At most once: a watcher
    /// that may have missed a message (its connection dropped, or the notice does
    /// not follow what it has seen) reads the stream again rather than trusting the
    /// channel.
    pub fn events_channel(&self) -> String {
        self.keys.events_channel.clone()
    }

    /// This replica's own channel ([`LocalWatchers`]): the notices of the sagas it
    /// alone watches, saved by other replicas. `None` without local watchers.
    pub fn replica_events_channel(&self) -> Option<String> {
        match self.replica() {
            "" => None,
            replica => Some(format!("{}:{replica}", self.keys.events_channel)),
        }
    }

    /// Saga ids newest first, optionally only those with `label`, starting after
    /// the id `after` (a page cursor).
    pub async fn list(
        &self,
        label: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let key = match label {
            Some(label) => self.label_key(label),
            None => self.all_key().to_owned(),
        };
        let max = after.map(|a| format!("({a}")).unwrap_or_else(|| "+".to_owned());
        let mut conn = self.conn.clone();
        Ok(conn.zrevrangebylex_limit(key, max, "-", 0, limit as isize).await?)
    }

    /// How many sagas are unfinished, all of them or those started before
    /// `started_before_ms`.
    pub async fn count_unfinished(&self, started_before_ms: Option<i64>) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let max = started_before_ms.map(|m| m.to_string()).unwrap_or_else(|| "+inf".to_owned());
        Ok(conn.zcount(self.unfinished_key(), "-inf", max).await?)
    }

    /// Unfinished sagas (running, compensating or parked) started before
    /// `before_ms`, oldest first, skipping `offset`.
    pub async fn stuck(&self, before_ms: i64, offset: usize, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.zrangebyscore_limit(self.unfinished_key(), "-inf", before_ms, offset as isize, limit as isize).await?)
    }
}

/// A command argument made of `N` parts, written into the command's buffer
/// without building a `String` first.
struct Joined<'a, const N: usize>([&'a str; N]);

impl<const N: usize> std::fmt::Display for Joined<'_, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|part| f.write_str(part))
    }
}

impl<const N: usize> redis::ToRedisArgs for Joined<'_, N> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        out.write_arg_fmt(self);
    }
}

/// `XRANGE`'s start for the entries after `after` (exclusive), or from the first.
fn range_start(after: Option<&str>) -> String {
    after.map(|a| format!("({a}")).unwrap_or_else(|| "-".to_owned())
}

/// A saga from its hash's `v` and `s` fields; `None` when it has none.
fn decode_state<D: DeserializeOwned>(
    id: &str,
    (version, json): (Option<u64>, Option<String>),
) -> Result<Option<SagaState<D>>, StoreError> {
    let (Some(version), Some(json)) = (version, json) else {
        return Ok(None);
    };
    let mut state: SagaState<D> =
        serde_json::from_str(&json).map_err(|source| StoreError::Corrupt { id: id.to_owned(), source })?;
    state.version = version;
    Ok(Some(state))
}

/// `XRANGE`'s reply, `[[id, [field, value, …]], …]`, read as it comes (redis-rs'
/// `StreamRangeReply` would build a map of `Value`s per entry first).
type StreamEntries = Vec<(String, Vec<String>)>;

fn stored_events(entries: StreamEntries) -> Vec<StoredEvent> {
    entries.into_iter().map(|(id, flat)| StoredEvent::from_entry(id, flat)).collect()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::{EventRecord, EventsNotice, StoredEvent};

    #[test]
    fn a_notice_reads_escaped_values_and_unknown_fields_and_keeps_known_names_borrowed() {
        let json = r#"{"prev":"1-0","ids":["2-0","2-1"],"events":[["kind","STEP_FAILED","code","NO","message","said \"no\" \u00e9\n","extra","v"],["kind","SAGA_REJECTED","at"]]}"#;
        let notice = EventsNotice::parse(json).expect("parses");
        assert_eq!(notice.prev, "1-0");
        assert_eq!(notice.last_id(), Some("2-1"));
        let failed = &notice.events[0];
        assert_eq!(failed.id, "2-0");
        assert_eq!(failed.field("message"), "said \"no\" é\n");
        assert_eq!(failed.field("code"), "NO");
        assert_eq!(failed.field("extra"), "v");
        assert_eq!(failed.field("step"), "");
        assert!(matches!(failed.fields[0].0, Cow::Borrowed("kind")));
        assert!(matches!(failed.fields[3].0, Cow::Owned(_)), "an unknown name is kept as it came");
        // A last field without a value is dropped.
        assert_eq!(notice.events[1].fields, vec![(Cow::Borrowed("kind"), "SAGA_REJECTED".to_owned())]);
    }

    #[test]
    fn a_notice_of_json_object_events_reads_numbers_as_text_and_keeps_known_names_borrowed() {
        let json = r#"{"prev":"","ids":["5-0","5-1"],"events":[{"kind":"STEP_FAILED","step":"PAY","attempt":2,"code":"NO","message":"said \"no\"","status":"COMPENSATING","label":"PENDING","at":1733500000000},{"kind":"SAGA_REJECTED","extra":null,"at":-1}]}"#;
        let notice = EventsNotice::parse(json).expect("parses");
        assert_eq!(notice.prev, "");
        let failed = &notice.events[0];
        assert_eq!((failed.id.as_str(), failed.field("attempt"), failed.field("at")), ("5-0", "2", "1733500000000"));
        assert_eq!(failed.field("message"), "said \"no\"");
        assert!(failed.fields.iter().all(|(name, _)| matches!(name, Cow::Borrowed(_))));
        let rejected = &notice.events[1];
        assert_eq!(
            (rejected.field("kind"), rejected.field("extra"), rejected.field("at")),
            ("SAGA_REJECTED", "", "-1")
        );
        assert!(EventsNotice::parse(r#"{"prev":"","ids":["1-0"],"events":["not an event"]}"#).is_err());
    }

    #[test]
    fn a_stream_entry_reads_in_either_format_and_keeps_an_undecodable_event_visible() {
        let object = StoredEvent::from_entry(
            "4-0".into(),
            vec!["event".into(), r#"{"kind":"STEP_SUCCEEDED","step":"PAY","attempt":1}"#.into()],
        );
        let pairs = StoredEvent::from_entry(
            "4-0".into(),
            ["kind", "STEP_SUCCEEDED", "step", "PAY", "attempt", "1"].map(String::from).to_vec(),
        );
        assert_eq!(object, pairs);
        let broken = StoredEvent::from_entry("4-1".into(), vec!["event".into(), "{not json".into()]);
        assert_eq!((broken.field("kind"), broken.field("event")), ("", "{not json"));
    }

    #[test]
    fn a_stream_entry_becomes_the_same_event_as_its_notice() {
        let flat = ["kind", "STEP_SUCCEEDED", "step", "PAY"].map(String::from);
        let from_stream = StoredEvent::from_flat("3-0".into(), flat);
        let notice =
            EventsNotice::parse(r#"{"prev":"","ids":["3-0"],"events":[["kind","STEP_SUCCEEDED","step","PAY"]]}"#)
                .expect("parses");
        assert_eq!(notice.events, vec![from_stream]);
    }

    #[test]
    fn a_local_notices_event_is_the_one_a_subscriber_parses_from_the_record() {
        let record = |code, message| EventRecord {
            kind: "STEP_FAILED",
            step: "PAY",
            attempt: 2,
            code,
            message,
            status: "COMPENSATING",
            label: "PENDING",
            at: 1_733_500_000_000,
        };
        for record in [record("NO", "said \"no\" é\n"), record("", "")] {
            let json = serde_json::to_string(&record).expect("encodes");
            let published =
                EventsNotice::parse(&format!(r#"{{"prev":"1-0","ids":["2-0"],"events":[{json}]}}"#)).expect("parses");
            assert_eq!(vec![record.stored("2-0".into())], published.events, "{json}");
        }
    }
}
