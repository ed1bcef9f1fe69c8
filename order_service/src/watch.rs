//! WatchOrder's event streams: replay a saga's stored events, then follow new ones
//! until the saga is settled.
//!
//! The decision a reader must know: a watcher does not block a Redis connection of
//! its own on its saga's stream. Every save that stores events of a saga someone
//! has watched ([`SagaStore::watch_and_load`] marks it) publishes the saga's id and
//! those events ([`EventsNotice`]): on the channel of the one replica that watches
//! it ([`saga::store::SagaStore::replica_events_channel`]), or on the namespace's
//! ([`saga::store::SagaStore::events_channel`]) when several do. Each replica
//! holds one connection subscribed to both ([`EventNotifier`]) and hands each
//! notice to the watchers of that saga, which send its events on when they follow
//! the last event the watcher sent. This replica's own saves of a saga it alone
//! watches hand the notice to its watchers directly ([`WatcherMap::local`]),
//! without Redis. Pub/sub is at most once, so the
//! stream stays the truth: a watcher reads it (`XRANGE`, on the shared connection)
//! when it starts, when a notice does not follow what it has sent, after the
//! subscription reconnects, and after every quiet `recheck` (`WATCH_RECHECK_MS`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use proto::order::v1::SagaEvent;
use redis::{
    PushInfo, PushKind,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use saga::store::{EventsNotice, LocalWatchers, SagaStore, StoredEvent, stream_id_cmp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::{api::saga_event, create_order_saga::OrderData};

/// Events replayed per Redis read.
const REPLAY_BATCH: usize = 256;

pub type EventSender = tokio::sync::mpsc::Sender<Result<SagaEvent, Status>>;

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("cannot subscribe to saga events: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("shut down while subscribing to saga events")]
    Cancelled,
}

/// One replica's subscription to the namespace's saga-event channel, and the
/// watchers waiting on it by saga id. Cheap to clone.
#[derive(Clone)]
pub struct EventNotifier {
    watchers: Arc<Watchers>,
    /// Keeps the subscribed connection (and its reconnects) alive.
    _connection: ConnectionManager,
}

#[derive(Default)]
struct Watchers(Mutex<HashMap<String, Watched>>);

/// This replica's watchers by saga id, made before the store and the notifier:
/// the events channel feeds them ([`EventNotifier::connect`]), and so do this
/// replica's own saves of the sagas it alone watches ([`Self::local`]).
#[derive(Clone, Default)]
pub struct WatcherMap(Arc<Watchers>);

impl WatcherMap {
    /// For [`saga::store::SagaStore::with_local_watchers`]: `replica` names this
    /// process among the namespace's replicas.
    pub fn local(&self, replica: String) -> LocalWatchers {
        let watchers = self.0.clone();
        LocalWatchers { replica, sink: Arc::new(move |order_id: &str, notice| watchers.deliver(order_id, notice)) }
    }
}

/// The latest notice for one saga's watchers on this replica: `None` means "read
/// the stream" (a wake-up without events, e.g. after a reconnect).
type Wake = Option<Arc<EventsNotice>>;

/// One saga's watchers on this replica. A `watch` channel keeps only the latest
/// notice: a watcher that was busy while two arrived sees that the latest does not
/// follow what it sent, and reads the stream.
struct Watched {
    wakeups: watch::Sender<Wake>,
    watchers: usize,
}

impl Watchers {
    /// The map, also after a panic elsewhere poisoned the lock: no critical
    /// section here leaves it half-changed.
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watched>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subscribe(this: &Arc<Self>, order_id: &str) -> Subscription {
        let mut map = this.map();
        let watched =
            map.entry(order_id.to_owned()).or_insert_with(|| Watched { wakeups: watch::channel(None).0, watchers: 0 });
        watched.watchers += 1;
        let receiver = watched.wakeups.subscribe();
        Subscription { watchers: this.clone(), order_id: order_id.to_owned(), receiver }
    }

    /// Hands a message of the events channel to the watchers of its saga; the
    /// events are parsed only when this replica has some.
    fn notify(&self, message: &str) {
        let (order_id, notice) = EventsNotice::split(message);
        let map = self.map();
        let Some(watched) = map.get(order_id) else { return };
        let notice = notice.and_then(|json| match EventsNotice::parse(json) {
            Ok(notice) => Some(Arc::new(notice)),
            Err(error) => {
                tracing::debug!(order_id, %error, "saga event notice does not parse; the watchers read the stream");
                None
            }
        });
        watched.wakeups.send_replace(notice);
    }

    /// Hands a notice of this replica's own save to the watchers of its saga.
    fn deliver(&self, order_id: &str, notice: EventsNotice) {
        if let Some(watched) = self.map().get(order_id) {
            watched.wakeups.send_replace(Some(Arc::new(notice)));
        }
    }

    fn wake_all(&self) {
        for watched in self.map().values() {
            watched.wakeups.send_replace(None);
        }
    }

    fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                // [channel, message]: the message is the saga id and its new events.
                if let Some(message) = push.data.get(1).and_then(|v| redis::from_redis_value_ref::<String>(v).ok()) {
                    self.notify(&message);
                }
            }
            // Messages published while the connection was down are lost: everyone
            // reads again once it is gone, and again once the subscription is back
            // (redis-rs re-subscribes after reconnecting; Redis confirms with this
            // push), so an event stored in between is not left for the recheck.
            PushKind::Disconnection | PushKind::Subscribe => self.wake_all(),
            _ => {}
        }
    }
}

impl EventNotifier {
    /// Subscribes to `channels` on a connection of its own (RESP3, so it can also
    /// carry the pushes; re-subscribed automatically after a reconnect). Retries
    /// with backoff until Redis answers or `shutdown`, as the store's connection does.
    pub async fn connect(
        client: &redis::Client,
        channels: Vec<String>,
        watchers: WatcherMap,
        shutdown: &CancellationToken,
    ) -> Result<Self, NotifierError> {
        let info = client.get_connection_info().clone();
        let resp3 = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3))?;
        let WatcherMap(watchers) = watchers;
        let sink = watchers.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_automatic_resubscription()
            .set_push_sender(move |push: PushInfo| -> Result<(), redis::aio::SendError> {
                sink.on_push(push);
                Ok(())
            });
        let mut delay = Duration::from_millis(100);
        loop {
            let attempt = async {
                let mut connection = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
                connection.subscribe(&channels).await?;
                Ok::<_, redis::RedisError>(connection)
            };
            match attempt.await {
                Ok(connection) => return Ok(Self { watchers, _connection: connection }),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "cannot subscribe to saga events yet");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return Err(NotifierError::Cancelled),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Registers a watcher of `order_id`; it is woken from now on until dropped.
    fn subscribe(&self, order_id: &str) -> Subscription {
        Watchers::subscribe(&self.watchers, order_id)
    }
}

/// One watcher's registration; leaves the map with its last watcher.
struct Subscription {
    watchers: Arc<Watchers>,
    order_id: String,
    receiver: watch::Receiver<Wake>,
}

impl Subscription {
    /// Marks every wake-up so far as seen: call before reading the stream, so a
    /// save that lands during the read wakes the next wait.
    fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Waits for a wake-up after the last `mark_seen` (and marks it seen), with
    /// the latest notice if it carried one; `None` after `recheck` without one.
    async fn woken(&mut self, recheck: Duration) -> Option<Wake> {
        match tokio::time::timeout(recheck, self.receiver.changed()).await {
            Ok(Ok(())) => Some(self.receiver.borrow_and_update().clone()),
            _ => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self.watchers.map();
        if let Some(watched) = map.get_mut(&self.order_id) {
            watched.watchers -= 1;
            if watched.watchers == 0 {
                map.remove(&self.order_id);
            }
        }
    }
}

/// What a notice is to a watcher that has sent the stream up to `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Its events come right after `after`: send them.
    Next,
    /// Its events were sent already (read from the stream just before it came).
    Seen,
    /// Something is missing between `after` and its events: read the stream.
    Gap,
}

impl Fit {
    fn of(notice: &EventsNotice, after: Option<&str>) -> Self {
        if notice.prev == after.unwrap_or("") {
            Self::Next
        } else if let (Some(last), Some(after)) = (notice.last_id(), after)
            && stream_id_cmp(last, after).is_le()
        {
            Self::Seen
        } else {
            Self::Gap
        }
    }
}

/// What sending a batch of events led to.
enum Sent {
    /// The client is gone.
    Closed,
    /// The batch ended with a terminal event: the stream ends unless more events
    /// follow it (a parked saga that an operator retried goes on).
    Terminal,
    More,
}

/// Sends `events`, remembering the last id in `after`.
async fn send_events(order_id: &str, events: &[StoredEvent], after: &mut Option<String>, tx: &EventSender) -> Sent {
    let mut last_terminal = false;
    for event in events {
        let (message, terminal) = saga_event(order_id, event);
        *after = Some(event.id.clone());
        last_terminal = terminal;
        if tx.send(Ok(message)).await.is_err() {
            return Sent::Closed;
        }
    }
    match (tx.is_closed(), last_terminal) {
        (true, _) => Sent::Closed,
        (false, true) => Sent::Terminal,
        (false, false) => Sent::More,
    }
}

/// A watch that is registered for its saga's notices and has read the saga with
/// its first events ([`start_watch`]).
pub struct WatchStart {
    subscription: Subscription,
    /// Whether the saga was running when it was read.
    active: bool,
    /// Its events after the watch's `after`, up to [`REPLAY_BATCH`].
    first: Vec<StoredEvent>,
}

/// Registers a watcher of `order_id`, then reads the saga and its first events in
/// one round trip. Registering first means a save that lands during the read still
/// wakes the watcher. `None` when there is no such saga.
pub async fn start_watch(
    store: &SagaStore,
    notifier: &EventNotifier,
    order_id: &str,
    after: Option<&str>,
) -> Result<Option<WatchStart>, saga::store::StoreError> {
    let mut subscription = notifier.subscribe(order_id);
    subscription.mark_seen();
    let (saga, first) = store.watch_and_load::<OrderData>(order_id, after, REPLAY_BATCH).await?;
    Ok(saga.map(|saga| WatchStart { subscription, active: saga.status.is_active(), first }))
}

/// Replays a saga's stored events after `after`, then follows the stream until a
/// terminal event that nothing follows, or until the client goes away. Any replica
/// can serve any watcher: all of it is in Redis. Without a wake-up, the stream and
/// the saga's state are read again after `recheck`: that bounds the delay after a
/// lost notification, and ends the stream of a saga that was parked.
/// `start`: the registration and first read of [`start_watch`] (same `after`).
pub async fn stream_events(
    store: &SagaStore,
    recheck: Duration,
    order_id: &str,
    mut after: Option<String>,
    start: WatchStart,
    tx: &EventSender,
) -> Result<(), Status> {
    let unavailable = |e: saga::store::StoreError| Status::unavailable(format!("event stream interrupted: {e}"));
    let WatchStart { mut subscription, active, first } = start;
    // The first read of the stream is the one `start_watch` made.
    let mut first = Some(first);
    // The saga's state is checked when the replay first catches up and after a
    // quiet `recheck`; a wake-up means new events, which the stream itself tells.
    let mut check_state = true;
    // The start's read serves the first check: a saga that settled since then
    // has its terminal event in the replay that follows.
    let mut loaded_active = Some(active);
    // The notice that woke this watcher, if the wake-up carried one.
    let mut notice: Wake = None;
    loop {
        let notified = notice.take();
        let read;
        // `full`: a whole replay batch was read, so more may be stored.
        let (events, full) = match notified.as_deref().map(|n| (n, Fit::of(n, after.as_deref()))) {
            Some((n, Fit::Next)) => (n.events.as_slice(), false),
            Some((_, Fit::Seen)) => (&[][..], false),
            Some((_, Fit::Gap)) | None => {
                read = match first.take() {
                    Some(first) => first,
                    None => {
                        subscription.mark_seen();
                        store.events_after(order_id, after.as_deref(), REPLAY_BATCH).await.map_err(unavailable)?
                    }
                };
                (read.as_slice(), read.len() == REPLAY_BATCH)
            }
        };
        match send_events(order_id, events, &mut after, tx).await {
            Sent::Closed => return Ok(()),
            Sent::Terminal if !full => return Ok(()),
            _ if full => continue,
            _ => {}
        }
        if check_state {
            // A settled saga wrote its terminal event with its state: if the replay
            // did not end on one, the client resumed after it (or the saga is
            // parked), and there is nothing more to send.
            let active = match loaded_active.take() {
                Some(active) => active,
                None => {
                    let saga = store.load::<OrderData>(order_id).await.map_err(unavailable)?;
                    saga.is_some_and(|s| s.status.is_active())
                }
            };
            if !active {
                let newer = store.events_after(order_id, after.as_deref(), 1).await.map_err(unavailable)?;
                if newer.is_empty() {
                    return Ok(());
                }
                continue;
            }
        }
        check_state = tokio::select! {
            woken = subscription.woken(recheck) => match woken {
                Some(wake) => {
                    notice = wake;
                    false
                }
                None => true,
            },
            _ = tx.closed() => return Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                redis::Value::BulkString(b"ns:order:sagas:events".to_vec()),
                redis::Value::BulkString(id.into()),
            ],
        }
    }

    #[tokio::test]
    async fn a_message_wakes_the_watchers_of_its_saga_only() {
        let watchers = Arc::new(Watchers::default());
        let subscribe = |id: &str| Watchers::subscribe(&watchers, id);
        let mut a1 = subscribe("a");
        let mut a2 = subscribe("a");
        let mut b = subscribe("b");
        for s in [&mut a1, &mut a2, &mut b] {
            s.mark_seen();
        }
        watchers.on_push(message("a"));
        let changed = |s: &Subscription| s.receiver.has_changed().unwrap_or(false);
        assert!(changed(&a1) && changed(&a2), "both watchers of `a` are woken");
        assert!(!changed(&b), "`b` is not");
        // A wake-up that came before `mark_seen` does not count again.
        a1.mark_seen();
        assert!(!changed(&a1));
    }

    fn notice_message(id: &str, prev: &str, ids: &[&str]) -> PushInfo {
        let events: Vec<Vec<&str>> =
            ids.iter().map(|_| vec!["kind", "STEP_SUCCEEDED", "step", "CREATE_TICKET"]).collect();
        let json = serde_json::json!({ "prev": prev, "ids": ids, "events": events });
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                redis::Value::BulkString(b"ns:order:sagas:events".to_vec()),
                redis::Value::BulkString(format!("{id}\n{json}").into_bytes()),
            ],
        }
    }

    #[tokio::test]
    async fn a_notice_hands_its_events_to_the_watchers_of_its_saga() {
        let watchers = Arc::new(Watchers::default());
        let mut a = Watchers::subscribe(&watchers, "a");
        a.mark_seen();
        watchers.on_push(notice_message("a", "5-0", &["6-0", "6-1"]));
        let notice = a.woken(Duration::from_secs(3600)).await.flatten().expect("a notice with events");
        assert_eq!(notice.prev, "5-0");
        let ids: Vec<&str> = notice.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["6-0", "6-1"]);
        assert_eq!(notice.events[1].field("step"), "CREATE_TICKET");
    }

    #[tokio::test]
    async fn a_notice_that_does_not_parse_still_wakes_the_watcher_to_read_the_stream() {
        let watchers = Arc::new(Watchers::default());
        let mut a = Watchers::subscribe(&watchers, "a");
        a.mark_seen();
        watchers.on_push(PushInfo {
            kind: PushKind::Message,
            data: vec![redis::Value::BulkString(b"ch".to_vec()), redis::Value::BulkString(b"a\n{not json".to_vec())],
        });
        assert_eq!(a.woken(Duration::from_secs(3600)).await, Some(None));
    }

    #[test]
    fn a_notice_is_sent_on_only_when_it_follows_what_the_watcher_sent() {
        let notice = |prev: &str, ids: &[&str]| EventsNotice {
            prev: prev.into(),
            events: ids.iter().map(|id| StoredEvent { id: (*id).into(), fields: Vec::new() }).collect(),
        };
        assert_eq!(Fit::of(&notice("7-0", &["9-0"]), Some("7-0")), Fit::Next);
        assert_eq!(Fit::of(&notice("", &["1-0", "1-1"]), None), Fit::Next, "a saga's first events");
        // The replay read these already: nothing to send, nothing to read.
        assert_eq!(Fit::of(&notice("7-0", &["9-0"]), Some("9-0")), Fit::Seen);
        assert_eq!(Fit::of(&notice("7-0", &["9-0"]), Some("10-0")), Fit::Seen);
        // A notice in between was lost (or kept only the latest): read the stream.
        assert_eq!(Fit::of(&notice("8-0", &["9-0"]), Some("7-0")), Fit::Gap);
        // Saved before notices named the previous event.
        assert_eq!(Fit::of(&notice("", &["9-0"]), Some("7-0")), Fit::Gap);
        // Ids compare as numbers, not strings.
        assert_eq!(Fit::of(&notice("1-0", &["10-0"]), Some("9-0")), Fit::Gap);
    }

    #[tokio::test]
    async fn a_disconnection_wakes_everyone_and_the_last_watcher_leaves_the_map() {
        let watchers = Arc::new(Watchers::default());
        let subscribe = |id: &str| Watchers::subscribe(&watchers, id);
        let mut a = subscribe("a");
        let mut b = subscribe("b");
        a.mark_seen();
        b.mark_seen();
        watchers.on_push(PushInfo { kind: PushKind::Disconnection, data: vec![] });
        let recheck = Duration::from_secs(3600);
        assert_eq!(a.woken(recheck).await, Some(None), "after a disconnection every watcher reads the stream");
        assert_eq!(b.woken(recheck).await, Some(None));
        let second_a = subscribe("a");
        drop(a);
        assert_eq!(watchers.map().len(), 2, "`a` still has a watcher");
        drop(second_a);
        drop(b);
        assert!(watchers.map().is_empty());
    }
}
