//! Acknowledging a channel's handled deliveries in batches. A handler task hands
//! its delivery tag over and ends; one task per channel sends the acks, a few
//! milliseconds later, as few frames as the order of completion allows: one
//! `multiple` ack for the longest run of handled deliveries from the oldest
//! unsettled one, single acks for the rest.
//!
//! The decision a reader must know: an ack is not on a saga's path (the next
//! command or reply went out before it), so delaying it costs nothing but a
//! slightly fuller prefetch window, while acking one by one made every handler wait
//! for lapin's I/O thread to write its frame (a cross-thread wake-up per message)
//! and sent the broker a packet per message.
//!
//! A `multiple` ack settles *every* unsettled delivery up to its tag, so the
//! batcher must know which ones are still unsettled: the consumer loop reports each
//! delivery, and a task that settles its delivery itself (a requeue, a
//! dead-letter) reports it only after its own frame is sent. Until then the batch
//! stops below that tag.

use std::{collections::BTreeSet, time::Duration};

use lapin::{Channel, options::BasicAckOptions};
use tokio::sync::mpsc;

/// What the batcher learns about a delivery tag of its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// The consumer received it (sent before its handler runs).
    Delivered(u64),
    /// Handled: ack it.
    Ack(u64),
    /// Its task acked or nacked it itself; it is no longer outstanding.
    Settled(u64),
}

/// One ack frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AckFrame {
    tag: u64,
    multiple: bool,
}

/// The deliveries of one channel that the broker still counts as unacknowledged.
#[derive(Debug, Default)]
struct Outstanding {
    /// Delivered and not yet settled.
    unsettled: BTreeSet<u64>,
    /// Of those, the handled ones waiting for their ack.
    handled: BTreeSet<u64>,
}

impl Outstanding {
    fn apply(&mut self, settle: Settle) {
        match settle {
            Settle::Delivered(tag) => {
                self.unsettled.insert(tag);
            }
            Settle::Ack(tag) => {
                if self.unsettled.contains(&tag) {
                    self.handled.insert(tag);
                }
            }
            Settle::Settled(tag) => {
                self.unsettled.remove(&tag);
                self.handled.remove(&tag);
            }
        }
    }

    /// The frames that ack every handled delivery, and forgets them: one
    /// `multiple` ack for the run of handled tags from the oldest unsettled one,
    /// single acks for handled tags after the first unhandled one.
    fn take_acks(&mut self) -> Vec<AckFrame> {
        let mut frames = Vec::new();
        let run: Vec<u64> = self.unsettled.iter().take_while(|tag| self.handled.contains(tag)).copied().collect();
        if let Some(&end) = run.last() {
            frames.push(AckFrame { tag: end, multiple: run.len() > 1 });
            self.unsettled = self.unsettled.split_off(&(end + 1));
            self.handled = self.handled.split_off(&(end + 1));
        }
        // What is still handled comes after a delivery in hand: one by one.
        for tag in std::mem::take(&mut self.handled) {
            self.unsettled.remove(&tag);
            frames.push(AckFrame { tag, multiple: false });
        }
        frames
    }

    #[cfg(test)]
    fn unsettled(&self) -> Vec<u64> {
        self.unsettled.iter().copied().collect()
    }
}

/// The handle handler tasks and the consumer loop report to; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Acks {
    tx: mpsc::UnboundedSender<Settle>,
}

impl Acks {
    /// Starts the batcher of `channel`; it ends once every handle is dropped,
    /// after sending the acks it still holds.
    pub(crate) fn start(channel: Channel, delay: Duration, queue: String) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, tokio::spawn(run(channel, rx, delay, queue)))
    }

    pub(crate) fn delivered(&self, tag: u64) {
        let _ = self.tx.send(Settle::Delivered(tag));
    }

    pub(crate) fn ack(&self, tag: u64) {
        let _ = self.tx.send(Settle::Ack(tag));
    }

    /// Call after the task's own ack or nack of `tag` is sent.
    pub(crate) fn settled(&self, tag: u64) {
        let _ = self.tx.send(Settle::Settled(tag));
    }
}

async fn run(channel: Channel, mut rx: mpsc::UnboundedReceiver<Settle>, delay: Duration, queue: String) {
    let mut outstanding = Outstanding::default();
    while let Some(first) = rx.recv().await {
        let wait = matches!(first, Settle::Ack(_)) && !delay.is_zero();
        outstanding.apply(first);
        if wait {
            // Let the acks of the next few milliseconds join this one.
            tokio::time::sleep(delay).await;
        }
        while let Ok(settle) = rx.try_recv() {
            outstanding.apply(settle);
        }
        // Every iteration sends all it holds, so nothing is left when the handles are gone.
        send(&channel, outstanding.take_acks(), &queue).await;
    }
}

async fn send(channel: &Channel, frames: Vec<AckFrame>, queue: &str) {
    if frames.is_empty() {
        return;
    }
    // Polled together: every frame is queued for the I/O thread before any is
    // awaited, so they leave in one write.
    let sends = frames.iter().map(|f| channel.basic_ack(f.tag, BasicAckOptions { multiple: f.multiple }));
    for result in futures::future::join_all(sends).await {
        if let Err(error) = result {
            // The channel is gone; the broker redelivers what it did not see acked.
            tracing::debug!(queue, %error, "could not ack deliveries");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outstanding(settles: &[Settle]) -> Outstanding {
        let mut o = Outstanding::default();
        for s in settles {
            o.apply(*s);
        }
        o
    }

    use Settle::{Ack, Delivered, Settled};

    #[test]
    fn a_run_from_the_oldest_unsettled_delivery_is_one_multiple_ack() {
        let mut o = outstanding(&[Delivered(1), Delivered(2), Delivered(3), Ack(2), Ack(1), Ack(3)]);
        assert_eq!(o.take_acks(), [AckFrame { tag: 3, multiple: true }]);
        assert!(o.unsettled().is_empty());
        assert!(o.take_acks().is_empty());
    }

    #[test]
    fn a_delivery_still_in_hand_stops_the_run_and_later_ones_go_singly() {
        let mut o = outstanding(&[Delivered(1), Delivered(2), Delivered(3), Delivered(4), Ack(1), Ack(4)]);
        assert_eq!(o.take_acks(), [AckFrame { tag: 1, multiple: false }, AckFrame { tag: 4, multiple: false }]);
        assert_eq!(o.unsettled(), [2, 3], "2 and 3 are still being handled");
        o.apply(Ack(3));
        assert_eq!(o.take_acks(), [AckFrame { tag: 3, multiple: false }], "2 still in hand");
        o.apply(Ack(2));
        assert_eq!(o.take_acks(), [AckFrame { tag: 2, multiple: false }]);
    }

    #[test]
    fn a_multiple_ack_never_covers_a_delivery_its_task_settles_itself() {
        // 2 is being requeued by its task: no multiple ack may reach it until its
        // nack is sent and reported.
        let mut o = outstanding(&[Delivered(1), Delivered(2), Delivered(3), Ack(1), Ack(3)]);
        let frames = o.take_acks();
        assert!(frames.iter().all(|f| !f.multiple || f.tag < 2), "{frames:?}");
        o.apply(Settled(2));
        o.apply(Delivered(4));
        o.apply(Delivered(5));
        o.apply(Ack(4));
        o.apply(Ack(5));
        assert_eq!(o.take_acks(), [AckFrame { tag: 5, multiple: true }], "2 is settled: 4 and 5 are the run");
        assert!(o.unsettled().is_empty());
    }

    #[test]
    fn an_ack_for_a_tag_never_delivered_is_ignored() {
        let mut o = outstanding(&[Delivered(1), Ack(7)]);
        assert!(o.take_acks().is_empty());
        assert_eq!(o.unsettled(), [1]);
    }
}
