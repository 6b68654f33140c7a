//! The queue port's contract (SQS FIFO semantics): send / receive / ack, deduplication,
//! delays, visibility timeouts, per-group order with one message of a group in flight, nack with
//! delay, redrive to the dead-letter queue after `max_receives` (listed and counted), depth.
//!
//! Every property expects a fresh, empty queue. `tick` is the adapter's time granularity: the
//! embedded queue works in milliseconds (a few tens of ms is plenty), SQS in whole seconds.

use super::Subject;
use shared::ports::Queue;
use shared::ports::queue::{Delivery, OutMessage};
use std::time::Duration;

/// Runs every property, each on a fresh queue from `fresh`.
pub async fn run_queue_suite(fresh: impl Fn() -> Subject<dyn Queue>, tick: Duration) {
    send_receive_ack(&*fresh().port, tick).await;
    dedupe_id_drops_duplicates(&*fresh().port).await;
    delay_hides_until_due(&*fresh().port, tick).await;
    visibility_timeout_redelivers(&*fresh().port, tick).await;
    fifo_one_in_flight_per_group(&*fresh().port, tick).await;
    order_within_group(&*fresh().port, tick).await;
    nack_with_delay(&*fresh().port, tick).await;
    dead_letter_after_max_receives(&*fresh().port, tick).await;
    depth_counts_waiting_and_in_flight(&*fresh().port, tick).await;
    send_and_ack_does_both(&*fresh().port, tick).await;
}

pub fn msg(group: &str, dedupe: &str, body: &str) -> OutMessage {
    OutMessage {
        group: group.into(),
        dedupe_id: dedupe.into(),
        body: body.into(),
        delay: Duration::ZERO,
    }
}

fn bodies(d: &[Delivery]) -> Vec<&str> {
    d.iter().map(|d| d.body.as_str()).collect()
}

/// Long enough that nothing reappears during a property.
fn long(tick: Duration) -> Duration {
    tick * 200
}

/// A message is received once, stays hidden while in flight, and is gone once acked.
pub async fn send_receive_ack(q: &dyn Queue, tick: Duration) {
    assert!(q.max_receives() >= 1);
    assert!(q.receive(10, long(tick)).await.unwrap().is_empty());
    q.send(vec![]).await.unwrap();
    q.send(vec![msg("g", "d1", "hello")]).await.unwrap();
    let got = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&got), vec!["hello"]);
    assert_eq!(got[0].receive_count, 1);
    assert!(q.receive(10, long(tick)).await.unwrap().is_empty());
    q.ack(std::slice::from_ref(&got[0].receipt)).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
    q.ack(&[]).await.unwrap();
    assert!(q.receive(10, long(tick)).await.unwrap().is_empty());
}

/// A second message with the same deduplication id within the window is dropped; other ids
/// are not affected.
pub async fn dedupe_id_drops_duplicates(q: &dyn Queue) {
    let vis = Duration::from_secs(60);
    q.send(vec![msg("g", "same", "first")]).await.unwrap();
    q.send(vec![msg("g", "same", "second")]).await.unwrap();
    q.send(vec![msg("h", "same", "third"), msg("h", "other", "fourth")])
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), 2);
    let got = q.receive(10, vis).await.unwrap();
    let mut b = bodies(&got);
    b.sort();
    assert_eq!(b, vec!["first", "fourth"]);
    let receipts: Vec<String> = got.iter().map(|d| d.receipt.clone()).collect();
    q.ack(&receipts).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

/// The deduplication window outlives the ack: SQS documents that a message sent with a
/// deduplication id already used in the last 5 minutes is accepted but not delivered, deleted or
/// not. The engine does not rely on it (applied event ids are its guard); the embedded queue
/// keeps it. (moto 5.2.5 compares only with messages still queued; tests/moto_serial_dynamodb.py
/// gives it the documented window.)
pub async fn dedupe_window_outlives_the_ack(q: &dyn Queue) {
    let vis = Duration::from_secs(60);
    q.send(vec![msg("g", "same", "first")]).await.unwrap();
    let got = q.receive(10, vis).await.unwrap();
    q.ack(&[got[0].receipt.clone()]).await.unwrap();
    q.send(vec![msg("g", "same", "again")]).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 0, "still inside the window");
    assert!(q.receive(10, vis).await.unwrap().is_empty());
}

/// A delayed message is invisible until its delay has passed.
pub async fn delay_hides_until_due(q: &dyn Queue, tick: Duration) {
    let mut m = msg("g", "d1", "later");
    m.delay = tick * 6;
    q.send(vec![m, msg("h", "d2", "now")]).await.unwrap();
    let got = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&got), vec!["now"]);
    assert_eq!(q.depth().await.unwrap(), 2, "a delayed message counts");
    tokio::time::sleep(tick * 8).await;
    let got = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&got), vec!["later"]);
    assert_eq!(got[0].receive_count, 1);
}

/// An unacked message comes back after its visibility timeout, with its receive count up.
pub async fn visibility_timeout_redelivers(q: &dyn Queue, tick: Duration) {
    q.send(vec![msg("g", "d1", "work")]).await.unwrap();
    let first = q.receive(10, tick * 6).await.unwrap();
    assert_eq!(bodies(&first), vec!["work"]);
    assert_eq!(first[0].receive_count, 1);
    assert!(q.receive(10, tick * 6).await.unwrap().is_empty());
    tokio::time::sleep(tick * 8).await;
    let second = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&second), vec!["work"]);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(
        second[0].receipt, first[0].receipt,
        "a new receive, a new receipt"
    );
    q.ack(std::slice::from_ref(&second[0].receipt))
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

/// While a message of group A is in flight, no other A message is delivered; group B is.
pub async fn fifo_one_in_flight_per_group(q: &dyn Queue, tick: Duration) {
    q.send(vec![
        msg("A", "a1", "A1"),
        msg("A", "a2", "A2"),
        msg("B", "b1", "B1"),
    ])
    .await
    .unwrap();
    let a1 = q.receive(1, long(tick)).await.unwrap();
    assert_eq!(bodies(&a1), vec!["A1"]);
    let next = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(
        bodies(&next),
        vec!["B1"],
        "A is blocked while A1 is in flight"
    );
    assert!(q.receive(10, long(tick)).await.unwrap().is_empty());
    q.ack(std::slice::from_ref(&a1[0].receipt)).await.unwrap();
    let a2 = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&a2), vec!["A2"], "acking A1 releases A2");
    q.ack(&[a2[0].receipt.clone(), next[0].receipt.clone()])
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), 0);
}

/// Messages of one group come out in the order they were sent, across receives and batches.
pub async fn order_within_group(q: &dyn Queue, tick: Duration) {
    let sent: Vec<String> = (1..=6).map(|i| format!("m{i}")).collect();
    q.send(sent[..3].iter().map(|b| msg("G", b, b)).collect())
        .await
        .unwrap();
    for b in &sent[3..] {
        q.send(vec![msg("G", b, b)]).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        let batch = q.receive(2, long(tick)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        got.extend(batch.iter().map(|d| d.body.clone()));
        let receipts: Vec<String> = batch.into_iter().map(|d| d.receipt).collect();
        q.ack(&receipts).await.unwrap();
    }
    assert_eq!(got, sent);
}

/// A nacked message reappears after the delay; its group stays blocked until then.
pub async fn nack_with_delay(q: &dyn Queue, tick: Duration) {
    q.send(vec![msg("A", "a1", "A1")]).await.unwrap();
    let d = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&d), vec!["A1"]);
    q.nack(&d[0].receipt, tick * 6).await.unwrap();
    q.send(vec![msg("A", "a2", "A2"), msg("B", "b1", "B1")])
        .await
        .unwrap();
    let during = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&during), vec!["B1"], "A waits for the nacked A1");
    tokio::time::sleep(tick * 8).await;
    let again = q.receive(1, long(tick)).await.unwrap();
    assert_eq!(bodies(&again), vec!["A1"]);
    assert_eq!(again[0].receive_count, 2);
    q.ack(std::slice::from_ref(&again[0].receipt))
        .await
        .unwrap();
    let a2 = q.receive(10, long(tick)).await.unwrap();
    assert_eq!(bodies(&a2), vec!["A2"]);
}

/// After `max_receives` receives a message moves to the dead letters and is not delivered again;
/// other messages (and groups) carry on. The dead letters are counted without reading them.
pub async fn dead_letter_after_max_receives(q: &dyn Queue, tick: Duration) {
    let max = q.max_receives();
    assert_eq!(q.dead_letter_count().await.unwrap(), 0);
    q.send(vec![msg("P", "p1", "poison")]).await.unwrap();
    for i in 1..=max {
        let d = q.receive(10, long(tick)).await.unwrap();
        assert_eq!(bodies(&d), vec!["poison"], "receive {i}");
        assert_eq!(d[0].receive_count, i);
        q.nack(&d[0].receipt, Duration::ZERO).await.unwrap();
    }
    q.send(vec![msg("P", "p2", "next"), msg("Q", "q1", "other")])
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        for d in q.receive(10, long(tick)).await.unwrap() {
            q.ack(std::slice::from_ref(&d.receipt)).await.unwrap();
            got.push(d.body);
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec!["next", "other"],
        "the poison message is not delivered again"
    );
    assert_eq!(
        q.dead_letter_count().await.unwrap(),
        1,
        "counted without reading"
    );
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(dead[0].group, "P");
    assert_eq!(dead[0].receive_count, max);
    assert_eq!(
        q.depth().await.unwrap(),
        0,
        "dead letters are not in the depth"
    );
    assert_eq!(
        q.dead_letter_count().await.unwrap(),
        1,
        "reading the dead letters leaves them there"
    );
    tokio::time::sleep(tick * 2).await;
    assert!(q.receive(10, long(tick)).await.unwrap().is_empty());
}

/// Depth counts waiting (including delayed) and in-flight messages, not acked or dropped ones.
pub async fn depth_counts_waiting_and_in_flight(q: &dyn Queue, tick: Duration) {
    assert_eq!(q.depth().await.unwrap(), 0);
    let mut delayed = msg("C", "c1", "delayed");
    delayed.delay = long(tick);
    q.send(vec![msg("A", "a1", "A1"), msg("B", "b1", "B1"), delayed])
        .await
        .unwrap();
    assert_eq!(q.depth().await.unwrap(), 3);
    let d = q.receive(1, long(tick)).await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(q.depth().await.unwrap(), 3, "in flight still counts");
    q.ack(std::slice::from_ref(&d[0].receipt)).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), 2);
    let waiting = if d[0].body == "A1" { "b1" } else { "a1" };
    q.send(vec![msg("Z", waiting, "duplicate")]).await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        2,
        "a dropped duplicate does not count"
    );
}

/// The worker's bookkeeping call sends the batch's output and acks its input; the sent messages
/// are deduplicated like any others, and a group released by the ack delivers its next message.
pub async fn send_and_ack_does_both(q: &dyn Queue, tick: Duration) {
    q.send(vec![msg("A", "a1", "A1"), msg("A", "a2", "A2")])
        .await
        .unwrap();
    let d = q.receive(1, long(tick)).await.unwrap();
    assert_eq!(bodies(&d), vec!["A1"]);
    q.send_and_ack(
        vec![
            msg("A", "a3", "A3"),
            msg("B", "b1", "B1"),
            msg("A", "a1", "dup"),
        ],
        std::slice::from_ref(&d[0].receipt),
    )
    .await
    .unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        3,
        "A1 acked, A3 and B1 added, dup dropped"
    );
    let mut got = Vec::new();
    for _ in 0..10 {
        let batch = q.receive(1, long(tick)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        got.push(batch[0].body.clone());
        q.send_and_ack(vec![], std::slice::from_ref(&batch[0].receipt))
            .await
            .unwrap();
    }
    let a: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|b| b.starts_with('A'))
        .collect();
    assert_eq!(a, vec!["A2", "A3"], "order within A holds");
    assert!(got.contains(&"B1".to_string()));
    assert_eq!(q.depth().await.unwrap(), 0);
    q.send_and_ack(vec![], &[]).await.unwrap();
}
