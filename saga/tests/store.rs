//! The Redis store's contract on a real Redis: compare-and-set lets exactly one of
//! two writers from the same version win, creation is idempotent, events and the
//! deadline index move with the state, and a due saga is claimed by one sweeper.

use std::time::Duration;

use saga::{
    Clock, Compensation, Outcome, RetryPolicy, SagaDefinition, SagaDomain, SagaMachine, SagaState, StepDefinition,
    StepFailure, StepKind,
    store::{EventsNotice, LocalWatchers, SagaStore, SaveOutcome},
};

struct Domain;

impl SagaDomain for Domain {
    type Data = u32;
    type Payload = ();

    fn apply_success(&self, _step: usize, _payload: (), data: &mut u32) -> Result<(), StepFailure> {
        *data += 1;
        Ok(())
    }
}

fn definition() -> SagaDefinition {
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_millis(1000),
        max_attempts: 2,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
    };
    SagaDefinition::new(vec![
        StepDefinition::remote("RESERVE", StepKind::Compensatable, policy).compensated_by(Compensation::Always, policy),
        StepDefinition::remote("PAY", StepKind::Pivot, policy),
    ])
    .expect("definition")
}

async fn store() -> (SagaStore, redis::aio::ConnectionManager, String) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url).expect("url");
    let conn = redis::aio::ConnectionManager::new(client).await.expect("Redis must be running");
    let prefix = format!("t-saga-store-{}-{}-{}:", std::process::id(), rand_suffix(), next());
    (SagaStore::new(conn.clone(), prefix.clone()), conn, prefix)
}

/// Tests in this file run in parallel and may start in the same clock tick: the
/// counter keeps their prefixes apart (CI once saw two share one).
fn next() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
}

/// SCAN, not KEYS: on a Redis shared with millions of other keys, KEYS blocks the
/// server for seconds and times out the tests running beside this one.
async fn cleanup(conn: &mut redis::aio::ConnectionManager, prefix: &str) {
    service_kit::store::delete_prefix(conn, prefix).await.expect("cleanup");
}

#[tokio::test]
async fn two_writers_from_one_version_cannot_both_advance_a_saga() {
    let (store, mut conn, prefix) = store().await;
    let def = definition();
    let machine = SagaMachine::new(&def, &Domain);
    let clock = Clock { now_ms: 1_000, jitter: 0.5 };
    let (state, transition) = machine.start("0190b5c2-0000-7000-8000-000000000001".into(), 0, clock);
    let saved = store.save(&def, &state, &transition.events, None, "PENDING", None).await.expect("save");
    assert_eq!(saved, SaveOutcome::Saved(1));
    assert_eq!(store.save(&def, &state, &[], None, "PENDING", None).await.expect("again"), SaveOutcome::AlreadyExists);

    let mut a: SagaState<u32> = store.load(&state.saga_id).await.expect("load").expect("exists");
    let mut b: SagaState<u32> = store.load(&state.saga_id).await.expect("load").expect("exists");
    assert_eq!((a.version, b.version), (1, 1));
    let awaited = a.pending.clone().expect("pending").message_id;
    let ta = machine.on_reply(&mut a, &awaited, Outcome::Success(()), clock).expect("a decides");
    let tb = machine.on_reply(&mut b, &awaited, Outcome::Success(()), clock).expect("b decides");
    assert_eq!(
        store.save(&def, &a, &ta.events, Some("PENDING"), "PENDING", None).await.expect("a"),
        SaveOutcome::Saved(2)
    );
    assert_eq!(
        store.save(&def, &b, &tb.events, Some("PENDING"), "PENDING", None).await.expect("b"),
        SaveOutcome::Conflict
    );

    let stored: SagaState<u32> = store.load(&state.saga_id).await.expect("load").expect("exists");
    assert_eq!((stored.version, stored.data), (2, 1), "the reply was applied once");
    let events = store.events_after(&state.saga_id, None, 100).await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.field("kind")).collect();
    assert_eq!(kinds, ["SAGA_STARTED", "COMMAND_SENT", "STEP_SUCCEEDED", "COMMAND_SENT"], "only the winner's events");
    assert_eq!(events[3].field("step"), "PAY");
    // A watch's start: the state and the events after an id, in one round trip.
    let (loaded, after_second) =
        store.watch_and_load::<u32>(&state.saga_id, Some(&events[1].id), 100).await.expect("watch and load");
    assert_eq!(loaded.map(|s| (s.version, s.data)), Some((2, 1)));
    assert_eq!(after_second, events[2..]);
    let unknown = "0190b5c2-0000-7000-8000-00000000dead";
    let (missing, none) = store.watch_and_load::<u32>(unknown, None, 100).await.expect("no saga");
    assert!(missing.is_none() && none.is_empty());
    let left: i64 =
        redis::cmd("EXISTS").arg(format!("{prefix}saga:{{{unknown}}}")).query_async(&mut conn).await.expect("exists");
    assert_eq!(left, 0, "watching an unknown saga leaves no key");

    // The deadline index follows the state: due at PAY's deadline, claimed once.
    let deadline = stored.wake_at_ms().expect("awaiting PAY");
    assert!(store.due(deadline - 1, 10).await.expect("due").is_empty());
    assert_eq!(store.due(deadline, 10).await.expect("due"), vec![state.saga_id.clone()]);
    assert!(store.claim(&state.saga_id, deadline, 5_000).await.expect("claim"));
    assert!(!store.claim(&state.saga_id, deadline, 5_000).await.expect("second claim"), "one sweeper at a time");
    assert!(store.due(deadline, 10).await.expect("due").is_empty(), "leased");
    cleanup(&mut conn, &prefix).await;
}

/// SCRIPT FLUSH is server-wide; every script caller in this workspace loads its
/// script again on NOSCRIPT, so the tests running beside this one only pay a reload.
#[tokio::test]
async fn a_save_after_redis_forgot_its_scripts_loads_the_script_again_and_writes_the_documented_keys() {
    let (store, mut conn, prefix) = store().await;
    let def = definition();
    let machine = SagaMachine::new(&def, &Domain);
    let id = "0190b5c2-0000-7000-8000-0000000000f1";
    let (state, transition) = machine.start(id.into(), 0, Clock { now_ms: 1_000, jitter: 0.0 });
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.expect("flush scripts");
    assert_eq!(
        store.save(&def, &state, &transition.events, None, "PENDING", None).await.expect("save"),
        SaveOutcome::Saved(1)
    );
    let loaded: SagaState<u32> = store.load(id).await.expect("load").expect("exists");
    assert_eq!(loaded.version, 1);
    // The key layout of the module's table: the state, its events, the indexes.
    let state_key = format!("{prefix}saga:{{{id}}}");
    let exists: (bool, bool) = redis::pipe()
        .exists(&state_key)
        .exists(format!("{state_key}:events"))
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(exists, (true, true));
    let indexed: (Option<f64>, Option<f64>, Option<f64>) = redis::pipe()
        .zscore(format!("{prefix}sagas:all"), id)
        .zscore(format!("{prefix}sagas:label:PENDING"), id)
        .zscore(format!("{prefix}sagas:unfinished"), id)
        .query_async(&mut conn)
        .await
        .expect("scores");
    assert_eq!(indexed, (Some(0.0), Some(0.0), Some(1_000.0)));

    // Each event is one stream field, `event`, holding a JSON object: what a
    // third-party reader of the stream (or of a notice) sees.
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(format!("{state_key}:events"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("xrange");
    assert_eq!(entries.len(), transition.events.len());
    let (first_id, first) = &entries[0];
    assert_eq!(first[0], "event");
    let record: serde_json::Value = serde_json::from_str(&first[1]).expect("an event is JSON");
    assert_eq!(record["kind"], "SAGA_STARTED");
    assert_eq!(
        (record["status"].as_str(), record["label"].as_str(), record["at"].as_i64()),
        (Some("RUNNING"), Some("PENDING"), Some(1_000))
    );
    assert!(record.get("code").is_none(), "empty fields are left out");
    // A stream written before that format, one field per event field, still reads.
    let old: String = redis::cmd("XADD")
        .arg(format!("{state_key}:events"))
        .arg("*")
        .arg(&["kind", "STEP_FAILED", "step", "PAY", "attempt", "2", "code", "NO", "status", "RUNNING", "at", "7"])
        .query_async(&mut conn)
        .await
        .expect("xadd");
    let read = store.events_after(id, Some(first_id), 100).await.expect("events");
    let last = read.last().expect("the old entry");
    assert_eq!(last.id, old);
    assert_eq!((last.field("kind"), last.field("code"), last.field("attempt")), ("STEP_FAILED", "NO", "2"));
    assert_eq!(read[0].field("kind"), transition.events[1].kind.as_str());
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test]
async fn listing_pages_newest_first_and_finished_sagas_leave_the_unfinished_index() {
    let (store, mut conn, prefix) = store().await;
    let def = definition();
    let machine = SagaMachine::new(&def, &Domain);
    let ids = [
        "0190b5c2-0000-7000-8000-00000000000a",
        "0190b5c2-0000-7000-8000-00000000000b",
        "0190b5c2-0000-7000-8000-00000000000c",
    ];
    for (i, id) in ids.iter().enumerate() {
        let (state, t) = machine.start((*id).into(), 0, Clock { now_ms: 1_000 + i as i64, jitter: 0.0 });
        store.save(&def, &state, &t.events, None, "PENDING", None).await.expect("save");
    }
    assert_eq!(store.list(None, None, 2).await.expect("page 1"), vec![ids[2], ids[1]]);
    assert_eq!(store.list(None, Some(ids[1]), 2).await.expect("page 2"), vec![ids[0]]);
    assert_eq!(store.stuck(1_001, 0, 10).await.expect("stuck"), vec![ids[0], ids[1]]);

    // Finish the first saga with a business failure: it leaves the stuck listing.
    let mut first: SagaState<u32> = store.load(ids[0]).await.expect("load").expect("exists");
    let awaited = first.pending.clone().expect("pending").message_id;
    let failure = StepFailure::business("NO", "refused");
    let t = machine
        .on_reply(&mut first, &awaited, Outcome::Failure(failure), Clock { now_ms: 2_000, jitter: 0.0 })
        .expect("fail");
    assert_eq!(
        store.save(&def, &first, &t.events, Some("PENDING"), "REJECTED", None).await.expect("save"),
        SaveOutcome::Saved(2)
    );
    assert_eq!(store.stuck(5_000, 0, 10).await.expect("stuck"), vec![ids[1], ids[2]]);
    assert_eq!(store.list(Some("REJECTED"), None, 10).await.expect("by label"), vec![ids[0]]);
    assert_eq!(store.list(Some("PENDING"), None, 10).await.expect("by label"), vec![ids[2], ids[1]]);
    assert!(store.due(i64::MAX, 10).await.expect("due").iter().all(|id| id != ids[0]), "no deadline once finished");
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test]
async fn prune_deletes_sagas_finished_before_the_cutoff_with_their_indexes_and_linked_key() {
    let (store, mut conn, prefix) = store().await;
    let def = definition();
    let machine = SagaMachine::new(&def, &Domain);
    let (old, recent, running) = (
        "0190b5c2-0000-7000-8000-0000000000a1",
        "0190b5c2-0000-7000-8000-0000000000a2",
        "0190b5c2-0000-7000-8000-0000000000a3",
    );
    let linked = format!("{prefix}idem:key-1");
    let _: () = redis::cmd("SET").arg(&linked).arg(old).query_async(&mut conn).await.expect("set linked");
    for (id, link) in [(old, Some(linked.as_str())), (recent, None), (running, None)] {
        let (state, t) = machine.start(id.into(), 0, Clock { now_ms: 1_000, jitter: 0.0 });
        store.save(&def, &state, &t.events, None, "PENDING", link).await.expect("save");
    }
    // `old` finishes at 2 000, `recent` at 9 000; `running` never does.
    for (id, at) in [(old, 2_000), (recent, 9_000)] {
        let mut state: SagaState<u32> = store.load(id).await.expect("load").expect("exists");
        let awaited = state.pending.clone().expect("pending").message_id;
        let t = machine
            .on_reply(
                &mut state,
                &awaited,
                Outcome::Failure(StepFailure::business("NO", "no")),
                Clock { now_ms: at, jitter: 0.0 },
            )
            .expect("fail");
        store.save(&def, &state, &t.events, Some("PENDING"), "REJECTED", None).await.expect("save");
    }
    assert_eq!(store.count_finished().await.expect("count"), 2);

    assert_eq!(store.prune(5_000, 100).await.expect("prune"), 1, "only `old` finished before the cutoff");

    assert!(store.load::<u32>(old).await.expect("load").is_none(), "state deleted");
    assert!(store.events_after(old, None, 10).await.expect("events").is_empty(), "events deleted");
    let linked_left: Option<String> = redis::cmd("GET").arg(&linked).query_async(&mut conn).await.expect("get");
    assert_eq!(linked_left, None, "the idempotency key goes with the saga");
    assert_eq!(store.list(None, None, 10).await.expect("all"), vec![running, recent]);
    assert_eq!(store.list(Some("REJECTED"), None, 10).await.expect("label"), vec![recent]);
    assert_eq!(store.count_finished().await.expect("count"), 1);
    assert!(store.load::<u32>(recent).await.expect("load").is_some(), "finished after the cutoff: kept");
    assert_eq!(store.prune(i64::MAX, 100).await.expect("prune all"), 1, "a running saga is never pruned");
    assert!(store.load::<u32>(running).await.expect("load").is_some());
    cleanup(&mut conn, &prefix).await;
}

/// The messages of `channels`, from now on.
async fn subscribe(channels: &[String]) -> redis::aio::PubSubStream {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut pubsub = redis::Client::open(url).expect("url").get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(channels).await.expect("subscribe");
    pubsub.into_on_message()
}

#[tokio::test]
async fn a_watched_sagas_save_publishes_its_events_after_the_previous_ones_and_other_saves_do_not() {
    let (store, mut conn, prefix) = store().await;
    let def = definition();
    let machine = SagaMachine::new(&def, &Domain);
    let mut messages = subscribe(&[store.events_channel()]).await;
    let next_message = async |messages: &mut redis::aio::PubSubStream| {
        use futures::StreamExt;
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        message.ok().flatten().map(|m| (m.get_channel_name().to_owned(), m.get_payload::<String>().expect("payload")))
    };
    let notice_of = |message: &str| {
        let (id, json) = EventsNotice::split(message);
        (id.to_owned(), EventsNotice::parse(json.expect("a notice with events")).expect("notice parses"))
    };

    // Two sagas; nobody watches `unwatched`, `id` is watched once it exists.
    let (id, unwatched) = ("0190b5c2-0000-7000-8000-0000000000b1", "0190b5c2-0000-7000-8000-0000000000b2");
    let (other, t_other) = machine.start(unwatched.into(), 0, Clock { now_ms: 1_000, jitter: 0.0 });
    store.save(&def, &other, &t_other.events, None, "PENDING", None).await.expect("save");
    let (state, t) = machine.start(id.into(), 0, Clock { now_ms: 1_000, jitter: 0.0 });
    assert!(!t.events.is_empty());
    assert_eq!(store.save(&def, &state, &t.events, None, "PENDING", None).await.expect("save"), SaveOutcome::Saved(1));
    let (_, first) = store.watch_and_load::<u32>(id, None, 100).await.expect("watch");
    let first_id = first.last().map(|e| e.id.clone());
    // Loads the saga, applies a successful reply to what it awaits, and saves it.
    let reply_to = async |id: &str| {
        let mut stored: SagaState<u32> = store.load(id).await.expect("load").expect("exists");
        let command = stored.pending.clone().expect("awaits RESERVE").message_id;
        let t = machine
            .on_reply(&mut stored, &command, Outcome::Success(()), Clock { now_ms: 1_050, jitter: 0.0 })
            .expect("applies");
        store.save(&def, &stored, &t.events, Some("PENDING"), "PENDING", None).await.expect("save");
    };
    reply_to(unwatched).await;

    // Saved again with no events (the sweeper's re-index): nothing to wake anyone for.
    let stored: SagaState<u32> = store.load(id).await.expect("load").expect("exists");
    assert_eq!(
        store.save(&def, &stored, &[], Some("PENDING"), "PENDING", None).await.expect("save"),
        SaveOutcome::Saved(2)
    );
    reply_to(id).await;
    let (channel, message) = next_message(&mut messages).await.expect("a message");
    assert_eq!(channel, store.events_channel());
    let (saga, second) = notice_of(&message);
    assert_eq!(
        (saga.as_str(), Some(second.prev.as_str())),
        (id, first_id.as_deref()),
        "the first message is this save's: the saves before the watch, the unwatched saga's and the one \
         without events published nothing, and it follows the events the watch read"
    );
    assert_eq!(second.events, store.events_after(id, first_id.as_deref(), 100).await.expect("events"));
    cleanup(&mut conn, &prefix).await;
}

/// A store of one more replica on `plain`'s namespace, with the notices its saves
/// hand to its own watchers.
type Delivered = std::sync::Arc<std::sync::Mutex<Vec<(String, EventsNotice)>>>;

fn replica(plain: &SagaStore, name: &str) -> (SagaStore, Delivered) {
    let delivered = Delivered::default();
    let sink = delivered.clone();
    let local = LocalWatchers {
        replica: name.into(),
        sink: std::sync::Arc::new(move |id: &str, notice| {
            sink.lock().expect("not poisoned").push((id.to_owned(), notice));
        }),
    };
    (plain.clone().with_local_watchers(local), delivered)
}

#[tokio::test]
async fn a_saga_watched_through_one_replica_alone_gets_its_events_from_that_replica_or_on_its_channel() {
    let (plain, mut conn, prefix) = store().await;
    let (a, to_a) = replica(&plain, "replica-a");
    let (b, to_b) = replica(&plain, "replica-b");
    assert_eq!(plain.replica_events_channel(), None);
    for mark in ["*", "1"] {
        assert_eq!(replica(&plain, mark).0.replica_events_channel(), None, "{mark} is a mark, not a replica's id");
    }
    let (shared, a_channel, b_channel) = (
        plain.events_channel(),
        a.replica_events_channel().expect("A's channel"),
        b.replica_events_channel().expect("B's channel"),
    );
    assert_eq!(a_channel, format!("{shared}:replica-a"));
    let def = definition();
    let machine = SagaMachine::new(&def, &Domain);
    let mut messages = subscribe(&[shared.clone(), a_channel.clone(), b_channel]).await;
    // The next message on any of the three channels, and its channel.
    let mut next_message = async || {
        use futures::StreamExt;
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
        let message = message.ok().flatten().expect("a message");
        (message.get_channel_name().to_owned(), message.get_payload::<String>().expect("payload"))
    };
    // Messages to one subscriber arrive in the order they were published: if this
    // one comes first, nothing was published before it.
    let sentinel = async |conn: &mut redis::aio::ConnectionManager| {
        let _: i64 = redis::AsyncCommands::publish(conn, plain.events_channel(), "sentinel").await.expect("publish");
    };
    let mark = async |conn: &mut redis::aio::ConnectionManager, id: &str| -> Option<String> {
        redis::AsyncCommands::hget(conn, plain.state_key(id), "w").await.expect("hget")
    };
    // Loads the saga, lets `decide` move it, and saves it through `store`.
    let step = async |store: &SagaStore, id: &str, decide: &dyn Fn(&mut SagaState<u32>) -> saga::Transition| {
        let mut stored: SagaState<u32> = store.load(id).await.expect("load").expect("exists");
        let label = "PENDING";
        let t = decide(&mut stored);
        assert!(!t.events.is_empty());
        let saved = store.save(&def, &stored, &t.events, Some(label), label, None).await.expect("save");
        assert!(matches!(saved, SaveOutcome::Saved(_)), "{saved:?}");
    };
    let clock = |now_ms| Clock { now_ms, jitter: 0.0 };
    let reply = |stored: &mut SagaState<u32>| {
        let command = stored.pending.clone().expect("awaits a reply").message_id;
        machine.on_reply(stored, &command, Outcome::Success(()), clock(1_500)).expect("applies")
    };

    let id = "0190b5c2-0000-7000-8000-0000000000c1";
    let (state, t) = machine.start(id.into(), 0, clock(1_000));
    a.save(&def, &state, &t.events, None, "PENDING", None).await.expect("create");
    let (_, first) = a.watch_and_load::<u32>(id, None, 100).await.expect("watch through A");
    assert_eq!(mark(&mut conn, id).await.as_deref(), Some("replica-a"));
    let first_id = first.last().map(|e| e.id.clone()).expect("the start's events");

    // A saves (a timed-out attempt, sent again): A's watchers get the events from
    // the save itself, and nothing goes through Redis.
    step(&a, id, &|s| machine.on_wake(s, clock(5_000)).expect("times out")).await;
    let delivered = to_a.lock().expect("not poisoned").clone();
    let [(saga, notice)] = delivered.as_slice() else { panic!("one local notice: {delivered:?}") };
    assert_eq!((saga.as_str(), notice.prev.as_str()), (id, first_id.as_str()));
    assert_eq!(notice.events, a.events_after(id, Some(&first_id), 100).await.expect("events"));
    sentinel(&mut conn).await;
    assert_eq!(next_message().await, (shared.clone(), "sentinel".to_owned()), "A's save published nothing");

    // B saves it: B is not the replica that watches, so its save publishes, on
    // A's channel only.
    step(&b, id, &reply).await;
    let (channel, message) = next_message().await;
    assert_eq!(channel, a_channel);
    let (saga, json) = EventsNotice::split(&message);
    let published = EventsNotice::parse(json.expect("events")).expect("parses");
    assert_eq!((saga, published.prev.as_str()), (id, notice.last_id().expect("events")));
    assert!(to_b.lock().expect("not poisoned").is_empty(), "B has no watcher of this saga");

    // A watch through B as well: from now on every save publishes, A's too.
    b.watch_and_load::<u32>(id, None, 100).await.expect("watch through B");
    assert_eq!(mark(&mut conn, id).await.as_deref(), Some("*"));
    a.watch_and_load::<u32>(id, None, 100).await.expect("watch through A again");
    assert_eq!(mark(&mut conn, id).await.as_deref(), Some("*"), "a mark of several replicas stays");
    step(&a, id, &reply).await;
    let (channel, message) = next_message().await;
    assert_eq!((channel.as_str(), EventsNotice::split(&message).0), (shared.as_str(), id), "A's save published");
    assert_eq!(to_a.lock().expect("not poisoned").len(), 1, "and handed nothing to A's watchers directly");

    // A saga marked by a version before replica ids (`1`): every save publishes on
    // the shared channel, which that version's replicas follow.
    let old = "0190b5c2-0000-7000-8000-0000000000c2";
    let (state, t) = machine.start(old.into(), 0, clock(1_000));
    a.save(&def, &state, &t.events, None, "PENDING", None).await.expect("create");
    let _: i64 = redis::AsyncCommands::hset(&mut conn, plain.state_key(old), "w", "1").await.expect("old mark");
    step(&a, old, &reply).await;
    let (channel, message) = next_message().await;
    assert_eq!((channel.as_str(), EventsNotice::split(&message).0), (shared.as_str(), old));
    assert_eq!(to_a.lock().expect("not poisoned").len(), 1);
    cleanup(&mut conn, &prefix).await;
}
