//! The aggregate lifecycle's rules as a user meets them: when snapshots are saved (and when
//! not), what the hibernation sweep saves and counts, lifespan answers at the edges (a
//! `Duration::MAX` idle time), memory pressure and partitions (docs/semantics.md §1.5 to §1.8,
//! §9.3).

#![allow(
    dead_code,
    reason = "each counter declares commands that only some tests dispatch"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use evoq::prelude::*;
use evoq::store::Snapshot;
use evoq::{ExpectedVersion, MemoryMonitorConfig, Metadata, NewEvent, Route};
use evoq::{Idle, Lifespan, OnTimeout, PressureLevel};
use evoq_tests::backends::{Backend, Place};
use evoq_tests::counter;
use evoq_tests::lifecycle::{DrivenProbe, eventually};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

counter!(
    Snap3,
    Ping3,
    Touch3,
    Fail3,
    Pinged3,
    [
        snapshot_every = 3,
        hibernate_after = "never",
        idle_timeout = "1h"
    ]
);
counter!(
    Hib,
    PingH,
    TouchH,
    FailH,
    PingedH,
    [idle_timeout = "300ms", hibernate_after = "60ms"]
);
counter!(
    HibNow,
    PingN,
    TouchN,
    FailN,
    PingedN,
    [
        idle_timeout = "1h",
        hibernate_after = "never",
        lifespan = HibernateNow
    ]
);
counter!(
    Forever,
    PingX,
    TouchX,
    FailX,
    PingedX,
    [
        idle_timeout = "1h",
        hibernate_after = "never",
        lifespan = HugeIdle
    ]
);
counter!(
    Keeper,
    PingK,
    TouchK,
    FailK,
    PingedK,
    [
        idle_timeout = "80ms",
        hibernate_after = "never",
        lifespan = KeepThenPassivate
    ]
);
counter!(
    Panicky,
    PingP,
    TouchP,
    FailP,
    PingedP,
    [
        idle_timeout = "100ms",
        hibernate_after = "never",
        lifespan = PanickingLifespan
    ]
);
counter!(
    Pressured,
    PingM,
    TouchM,
    FailM,
    PingedM,
    [idle_timeout = "2s", hibernate_after = "never"]
);
counter!(
    Hib2,
    PingH2,
    TouchH2,
    FailH2,
    PingedH2,
    [
        idle_timeout = "1h",
        hibernate_after = "never",
        lifespan = HibernateOnTimeoutShort
    ]
);

counter!(
    HibSnap,
    PingHS,
    TouchHS,
    FailHS,
    PingedHS,
    [
        snapshot_every = 3,
        idle_timeout = "1h",
        hibernate_after = "never",
        lifespan = HibernateNowHS
    ]
);

#[derive(Default)]
struct HibernateNowHS;
impl Lifespan<HibSnap> for HibernateNowHS {
    fn after_event(&self, _: &<HibSnap as Aggregate>::Event) -> Idle {
        Idle::Hibernate
    }
}

#[derive(Default)]
struct HibernateNow;
impl Lifespan<HibNow> for HibernateNow {
    fn after_event(&self, _: &<HibNow as Aggregate>::Event) -> Idle {
        Idle::Hibernate
    }
}

/// A user who writes "practically forever" with a huge duration.
#[derive(Default)]
struct HugeIdle;
impl Lifespan<Forever> for HugeIdle {
    fn after_event(&self, _: &<Forever as Aggregate>::Event) -> Idle {
        Idle::After(Duration::MAX)
    }
}

static KEEPS: AtomicU64 = AtomicU64::new(0);
#[derive(Default)]
struct KeepThenPassivate;
impl Lifespan<Keeper> for KeepThenPassivate {
    fn on_timeout(&self, _: &Keeper) -> OnTimeout {
        if KEEPS.fetch_add(1, Ordering::SeqCst) < 2 {
            OnTimeout::Keep { snapshot: false }
        } else {
            OnTimeout::Passivate
        }
    }
}

#[derive(Default)]
struct PanickingLifespan;
impl Lifespan<Panicky> for PanickingLifespan {
    fn after_event(&self, _: &<Panicky as Aggregate>::Event) -> Idle {
        panic!("lifespan hook bug")
    }
    fn on_timeout(&self, _: &Panicky) -> OnTimeout {
        panic!("on_timeout bug")
    }
}

#[derive(Default)]
struct HibernateOnTimeoutShort;
impl Lifespan<Hib2> for HibernateOnTimeoutShort {
    fn after_event(&self, _: &<Hib2 as Aggregate>::Event) -> Idle {
        Idle::After(Duration::from_millis(60))
    }
    fn on_timeout(&self, _: &Hib2) -> OnTimeout {
        OnTimeout::Hibernate { snapshot: true }
    }
}

async fn app() -> Evoq {
    Evoq::builder()
        .hibernation_sweep_interval(Duration::from_millis(20))
        .start()
        .await
        .expect("start")
}

fn raw(event_type: &'static str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: evoq::Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        data: serde_json::to_vec(&data).unwrap(),
        metadata: Metadata::default(),
    }
}

/// §1.5: "A snapshot is saved after a command whose events carry the stream's version past a
/// multiple of `snapshot_every`". A command that appends nothing carries nothing past anything.
#[tokio::test]
async fn an_eventless_command_on_a_freshly_activated_instance_saves_no_snapshot() {
    let app = app().await;
    // The stream already holds 4 events (written by an earlier process), no snapshot.
    let events: Vec<NewEvent> = (1..=4)
        .map(|i| raw("Pinged3", serde_json::json!({"count": i})))
        .collect();
    app.store()
        .append("Snap3-a", ExpectedVersion::Exact(0), events)
        .await
        .unwrap();
    assert!(
        app.store()
            .load_snapshot("Snap3-a")
            .await
            .unwrap()
            .is_none()
    );

    let done = app.dispatch(Touch3 { id: "a".into() }).await.unwrap();
    assert_eq!((done.version, done.events.len()), (4, 0));
    let snapshot = app.store().load_snapshot("Snap3-a").await.unwrap();
    assert!(
        snapshot.is_none(),
        "a command with no events saved a snapshot at version {:?} (snapshots_saved = {})",
        snapshot.map(|s| s.version),
        app.aggregate_stats::<Snap3>().snapshots_saved
    );
}

/// Same rule, for a command with one event that does not cross a multiple of 3 (4 -> 5).
#[tokio::test]
async fn a_command_not_crossing_a_multiple_on_a_freshly_activated_instance_saves_no_snapshot() {
    let app = app().await;
    let events: Vec<NewEvent> = (1..=4)
        .map(|i| raw("Pinged3", serde_json::json!({"count": i})))
        .collect();
    app.store()
        .append("Snap3-b", ExpectedVersion::Exact(0), events)
        .await
        .unwrap();

    let done = app.dispatch(Ping3 { id: "b".into() }).await.unwrap();
    assert_eq!(done.version, 5);
    let snapshot = app.store().load_snapshot("Snap3-b").await.unwrap();
    assert!(
        snapshot.is_none(),
        "4 -> 5 crosses no multiple of 3, yet a snapshot was saved at version {:?}",
        snapshot.map(|s| s.version)
    );
}

/// §1.5 with a live instance: three commands of one event save exactly one snapshot, at 3;
/// a fourth and an event-less one save nothing.
#[tokio::test]
async fn snapshot_every_three_on_a_live_instance() {
    let app = app().await;
    for _ in 0..4 {
        app.dispatch(Ping3 { id: "c".into() }).await.unwrap();
    }
    app.dispatch(Touch3 { id: "c".into() }).await.unwrap();
    let _ = app.dispatch(Fail3 { id: "c".into() }).await.unwrap_err();
    let snapshot = app.store().load_snapshot("Snap3-c").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 3);
    assert_eq!(app.aggregate_stats::<Snap3>().snapshots_saved, 1);
}

/// §1.5: "No snapshot is saved at version 0". A new id whose first command is rejected
/// hibernates, then expires: its hibernated state (version 0) must not become a snapshot.
#[tokio::test]
async fn an_expired_hibernated_instance_at_version_zero_saves_no_snapshot() {
    let app = app().await;
    // Touch succeeds without events: the instance stays at version 0, live, then hibernates
    // after 60 ms and expires at 300 ms.
    app.dispatch(TouchH { id: "zero".into() }).await.unwrap();
    eventually(Duration::from_secs(3), || {
        app.aggregate_stats::<Hib>().hibernated == 1
    })
    .await;
    eventually(Duration::from_secs(3), || {
        let s = app.aggregate_stats::<Hib>();
        s.hibernated == 0 && s.live == 0
    })
    .await;
    let snapshot = app.store().load_snapshot("Hib-zero").await.unwrap();
    assert!(
        snapshot.is_none(),
        "a snapshot was saved at version {:?} for a stream with no events",
        snapshot.map(|s| s.version)
    );
}

/// §9.3: stats count "snapshots saved so far"; §1.5: a snapshot is saved "when an expired
/// hibernated state is passivated".
#[tokio::test]
async fn the_snapshot_saved_by_the_hibernation_sweep_is_counted() {
    let app = app().await;
    app.dispatch(PingH { id: "s".into() }).await.unwrap();
    app.dispatch(PingH { id: "s".into() }).await.unwrap();
    eventually(Duration::from_secs(3), || {
        let s = app.aggregate_stats::<Hib>();
        s.passivations == 1 && s.hibernated == 0
    })
    .await;
    let snapshot = app
        .store()
        .load_snapshot("Hib-s")
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot.version, 2);
    assert_eq!(
        app.aggregate_stats::<Hib>().snapshots_saved,
        1,
        "the sweep saved a snapshot but the counter did not count it"
    );
}

/// §1.7: thaw gives the same state and version, without an activation.
#[tokio::test]
async fn a_thaw_restores_state_and_version_and_counts_a_thaw() {
    let app = app().await;
    for _ in 0..3 {
        app.dispatch(PingN { id: "t".into() }).await.unwrap();
        // Idle::Hibernate: hibernates at once.
        eventually(Duration::from_secs(3), || {
            app.aggregate_stats::<HibNow>().hibernated == 1
        })
        .await;
    }
    let stats = app.aggregate_stats::<HibNow>();
    assert_eq!((stats.activations, stats.thaws, stats.live), (1, 2, 0));
    let done = app.dispatch(PingN { id: "t".into() }).await.unwrap();
    assert_eq!(done.version, 4);
    match &done.events[..] {
        [HibNowEvent::PingedN(e)] => assert_eq!(e.count, 4, "state after thaw"),
        other => panic!("{other:?}"),
    }
    let stats = app.aggregate_stats::<HibNow>();
    assert_eq!((stats.activations, stats.thaws), (1, 3));
    // "stay hibernated until a command comes": never passivated by the sweep.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.aggregate_stats::<HibNow>().hibernated, 1);
    assert_eq!(app.aggregate_stats::<HibNow>().passivations, 0);
}

/// A lifespan answering a huge duration must not crash the dispatch (§10: bad input never
/// panics; §1.6 treats even a panicking hook as the default answer).
#[tokio::test]
async fn a_lifespan_answering_duration_max_does_not_panic_the_dispatch() {
    let app = app().await;
    let outcome = tokio::spawn(async move {
        let done = app.dispatch(PingX { id: "x".into() }).await;
        (done.map(|d| d.version), app)
    })
    .await;
    match outcome {
        Ok((Ok(version), _app)) => assert_eq!(version, 1),
        Ok((Err(error), _)) => panic!("dispatch failed: {error}"),
        Err(join) => panic!("the dispatch panicked: {join}"),
    }
}

/// OnTimeout::Keep keeps the instance for another timeout, then passivates.
#[tokio::test]
async fn on_timeout_keep_stays_then_passivates() {
    let app = app().await;
    app.dispatch(PingK { id: "k".into() }).await.unwrap();
    eventually(Duration::from_secs(5), || {
        app.aggregate_stats::<Keeper>().passivations == 1
    })
    .await;
    assert!(KEEPS.load(Ordering::SeqCst) >= 3);
    assert_eq!(app.aggregate_stats::<Keeper>().live, 0);
    let snapshot = app
        .store()
        .load_snapshot("Keeper-k")
        .await
        .unwrap()
        .expect("snapshot");
    assert_eq!(snapshot.version, 1);
}

/// §1.6: a panicking hook counts as the default answer (configured timeout; passivate).
#[tokio::test]
async fn a_panicking_lifespan_counts_as_the_default() {
    let app = app().await;
    let done = app.dispatch(PingP { id: "p".into() }).await.unwrap();
    assert_eq!(done.version, 1);
    eventually(Duration::from_secs(3), || {
        app.aggregate_stats::<Panicky>().passivations == 1
    })
    .await;
    let snapshot = app
        .store()
        .load_snapshot("Panicky-p")
        .await
        .unwrap()
        .expect("snapshot");
    assert_eq!(snapshot.version, 1);
    let done = app.dispatch(PingP { id: "p".into() }).await.unwrap();
    assert_eq!(done.version, 2);
}

/// OnTimeout::Hibernate { snapshot: true } saves a snapshot and hibernates; thaw works.
#[tokio::test]
async fn on_timeout_hibernate_with_snapshot() {
    let app = app().await;
    app.dispatch(PingH2 { id: "h".into() }).await.unwrap();
    app.dispatch(PingH2 { id: "h".into() }).await.unwrap();
    eventually(Duration::from_secs(3), || {
        app.aggregate_stats::<Hib2>().hibernated == 1
    })
    .await;
    let snapshot = app
        .store()
        .load_snapshot("Hib2-h")
        .await
        .unwrap()
        .expect("snapshot");
    assert_eq!(snapshot.version, 2);
    let done = app.dispatch(PingH2 { id: "h".into() }).await.unwrap();
    assert_eq!(done.version, 3);
    let s = app.aggregate_stats::<Hib2>();
    assert_eq!((s.thaws, s.activations), (1, 1));
}

/// §1.8: the factor scales the next idle timeout; timers already running keep their deadline.
#[tokio::test]
async fn memory_pressure_scales_timeouts_set_after_the_change() {
    let probe = DrivenProbe::default();
    probe.set(0.1);
    let app = Evoq::builder()
        .memory_probe(probe.clone())
        .memory_monitor(MemoryMonitorConfig {
            check_interval: Duration::from_secs(3600),
            ..MemoryMonitorConfig::default()
        })
        .start()
        .await
        .unwrap();
    assert_eq!(app.memory_monitor().level(), PressureLevel::Normal);
    app.dispatch(PingM {
        id: "before".into(),
    })
    .await
    .unwrap(); // 2 s timer
    probe.set(0.90);
    assert_eq!(app.memory_monitor().check_now(), PressureLevel::Critical);
    assert_eq!(app.memory_monitor().level(), PressureLevel::Critical);
    let started = Instant::now();
    app.dispatch(PingM { id: "after".into() }).await.unwrap(); // 200 ms timer
    eventually(Duration::from_secs(3), || {
        app.aggregate_stats::<Pressured>().passivations == 1
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(
        app.aggregate_stats::<Pressured>().live,
        1,
        "the earlier timer kept its deadline"
    );
    probe.set(0.75);
    assert_eq!(app.memory_monitor().check_now(), PressureLevel::Elevated);
    probe.set(0.70);
    assert_eq!(
        app.memory_monitor().check_now(),
        PressureLevel::Elevated,
        "from 0.70 elevated"
    );
    probe.set(0.85);
    assert_eq!(
        app.memory_monitor().check_now(),
        PressureLevel::Critical,
        "from 0.85 critical"
    );
    probe.set(0.6999);
    assert_eq!(app.memory_monitor().check_now(), PressureLevel::Normal);
}

/// A probe that panics on its first `panics` reads, then reports 0.9.
struct PanickingProbe(std::sync::atomic::AtomicU32);

impl evoq::MemoryProbe for PanickingProbe {
    fn used_fraction(&self) -> Option<f64> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .0
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("the probe's source is gone");
        }
        Some(0.9)
    }
}

/// §1.8: a probe that panics is a read that failed: the level stays, the periodic check goes on
/// (a panic does not end it), and `check_now` does not panic.
#[tokio::test]
async fn a_panicking_memory_probe_keeps_the_level_and_the_checks_go_on() {
    let app = Evoq::builder()
        .memory_probe(PanickingProbe(std::sync::atomic::AtomicU32::new(3)))
        .memory_monitor(MemoryMonitorConfig {
            check_interval: Duration::from_millis(20),
            ..MemoryMonitorConfig::default()
        })
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(3), || {
        app.memory_monitor().level() == PressureLevel::Critical
    })
    .await;
    assert_eq!(app.memory_monitor().check_now(), PressureLevel::Critical);
}

/// With the monitor disabled the factor stays 1.0.
#[tokio::test]
async fn a_disabled_monitor_keeps_factor_one() {
    let probe = DrivenProbe::default();
    probe.set(0.99);
    let app = Evoq::builder()
        .memory_probe(probe.clone())
        .memory_monitor(MemoryMonitorConfig {
            enabled: false,
            ..MemoryMonitorConfig::default()
        })
        .start()
        .await
        .unwrap();
    app.memory_monitor().check_now();
    assert_eq!(app.memory_monitor().ttl_factor(), 1.0);
}

/// §1.1: partition_of is stable and within the configured partitions.
#[tokio::test]
async fn partitions_are_stable_and_in_range() {
    let a = Evoq::builder().partitions(7).start().await.unwrap();
    let b = Evoq::builder().partitions(7).start().await.unwrap();
    for i in 0..200 {
        let id = format!("acc-{i}");
        let p = a.partition_of::<Snap3>(&id);
        assert!(p < 7);
        assert_eq!(p, b.partition_of::<Snap3>(&id));
    }
    let err = Evoq::builder().partitions(0).start().await.unwrap_err();
    assert!(
        matches!(&err, evoq::Error::Config { key, .. } if key == "partitions"),
        "{err}"
    );
    let err = Evoq::builder().partitions(1025).start().await.unwrap_err();
    assert!(
        matches!(&err, evoq::Error::Config { key, .. } if key == "partitions"),
        "{err}"
    );
}

/// §1.5 after a thaw: 3 events (snapshot at 3), 4th event (hibernates after each), then an
/// event-less command on the thawed instance must save nothing.
#[tokio::test]
async fn an_eventless_command_on_a_thawed_instance_saves_no_snapshot() {
    let app = app().await;
    for i in 1..=4u64 {
        app.dispatch(PingHS { id: "th".into() }).await.unwrap();
        eventually(Duration::from_secs(3), || {
            app.aggregate_stats::<HibSnap>().hibernated == 1
        })
        .await;
        let _ = i;
    }
    let at = app
        .store()
        .load_snapshot("HibSnap-th")
        .await
        .unwrap()
        .map(|s| s.version);
    assert_eq!(
        (app.aggregate_stats::<HibSnap>().snapshots_saved, at),
        (1, Some(3)),
        "four one-event commands with snapshot_every = 3 (each on a thawed instance) must save one snapshot, at 3"
    );
    let done = app.dispatch(TouchHS { id: "th".into() }).await.unwrap();
    assert_eq!((done.version, done.events.len()), (4, 0));
    let snapshot = app
        .store()
        .load_snapshot("HibSnap-th")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            snapshot.version,
            app.aggregate_stats::<HibSnap>().snapshots_saved
        ),
        (3, 1),
        "an event-less command on a thawed instance saved a snapshot"
    );
}

// ----- idle timers that come due while their command still holds the instance -----

counter!(
    ZeroIdle,
    PingZ,
    TouchZ,
    FailZ,
    PingedZ,
    [
        idle_timeout = "1h",
        hibernate_after = "never",
        lifespan = ZeroAfter
    ]
);
counter!(
    OneMs,
    PingO,
    TouchO,
    FailO,
    PingedO,
    [idle_timeout = "1ms", hibernate_after = "never"]
);
counter!(
    KeptOnce,
    PingKO,
    TouchKO,
    FailKO,
    PingedKO,
    [
        idle_timeout = "1ms",
        hibernate_after = "never",
        lifespan = KeepFirstTimeouts
    ]
);

#[derive(Default)]
struct ZeroAfter;
impl Lifespan<ZeroIdle> for ZeroAfter {
    fn after_event(&self, _: &<ZeroIdle as Aggregate>::Event) -> Idle {
        Idle::After(Duration::ZERO)
    }
}

static KEPT_ONCE: AtomicU64 = AtomicU64::new(0);
/// Keeps the first 100 instances that time out for another (1 ms) timeout, then passivates.
#[derive(Default)]
struct KeepFirstTimeouts;
impl Lifespan<KeptOnce> for KeepFirstTimeouts {
    fn on_timeout(&self, _: &KeptOnce) -> OnTimeout {
        if KEPT_ONCE.fetch_add(1, Ordering::SeqCst) < 100 {
            OnTimeout::Keep { snapshot: false }
        } else {
            OnTimeout::Passivate
        }
    }
}

/// How many new instances each test below starts, one command each, one after another.
const SEQUENTIAL: usize = 200;

/// Dispatches one command (`command(id)`) to each of [`SEQUENTIAL`] new ids, one after another,
/// on a runtime whose idle-timer task runs on the other worker thread, beside the commands.
async fn one_command_each<C: Route>(app: &Evoq, command: impl Fn(String) -> C) {
    for i in 0..SEQUENTIAL {
        app.dispatch(command(format!("s{i}"))).await.unwrap();
    }
}

/// §1.6: `Idle::Hibernate` hibernates at once. Its timer is due as it is armed, while the
/// command still holds the instance: the timer must not be lost then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_told_to_hibernate_at_once_hibernates_even_when_its_timer_beats_the_command()
{
    let app = app().await;
    one_command_each(&app, |id| PingN { id }).await;
    eventually(Duration::from_secs(5), || {
        let stats = app.aggregate_stats::<HibNow>();
        (stats.live, stats.hibernated) == (0, SEQUENTIAL as u64)
    })
    .await;
}

/// §1.6: `Idle::After(0)` times out at once, and `on_timeout` (the default: passivate) decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_with_a_zero_idle_time_passivates_even_when_its_timer_beats_the_command() {
    let app = app().await;
    one_command_each(&app, |id| PingZ { id }).await;
    eventually(Duration::from_secs(5), || {
        let stats = app.aggregate_stats::<ZeroIdle>();
        (stats.live, stats.passivations) == (0, SEQUENTIAL as u64)
    })
    .await;
}

/// §1.6 with `#[aggregate(idle_timeout = "1ms")]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_with_a_one_millisecond_idle_timeout_passivates() {
    let app = app().await;
    one_command_each(&app, |id| PingO { id }).await;
    eventually(Duration::from_secs(5), || {
        let stats = app.aggregate_stats::<OneMs>();
        (stats.live, stats.passivations) == (0, SEQUENTIAL as u64)
    })
    .await;
}

/// §1.6: `OnTimeout::Keep` stays for another timeout, armed while the timeout holds the
/// instance: it must come, and passivate the instance in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_kept_by_on_timeout_times_out_again_and_passivates() {
    let app = app().await;
    one_command_each(&app, |id| PingKO { id }).await;
    eventually(Duration::from_secs(5), || {
        let stats = app.aggregate_stats::<KeptOnce>();
        (stats.live, stats.passivations) == (0, SEQUENTIAL as u64)
    })
    .await;
    assert!(KEPT_ONCE.load(Ordering::SeqCst) >= SEQUENTIAL as u64 + 100);
}

// ----- a snapshot ahead of its stream -----

counter!(
    Ahead,
    PingA,
    TouchA,
    FailA,
    PingedA,
    [
        snapshot_every = 1000,
        idle_timeout = "1h",
        hibernate_after = "never"
    ]
);

/// A stream `Ahead-<id>` of three events (counts 1 to 3), with a snapshot of count 2 whose
/// version says 50: a row changed by hand, or a stream restored from an older backup.
async fn stream_behind_its_snapshot(store: &std::sync::Arc<dyn EventStore>, id: &str) {
    let stream = format!("Ahead-{id}");
    let events: Vec<NewEvent> = (1..=3)
        .map(|i| raw("PingedA", serde_json::json!({"count": i})))
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    store
        .save_snapshot(Snapshot {
            stream_id: stream,
            version: 50,
            data: br#"{"count":2}"#.to_vec(),
            taken_at: SystemTime::now(),
        })
        .await
        .unwrap();
}

/// §1.5: a snapshot beyond its stream's version is set aside, as one that no longer decodes:
/// the instance is the stream replayed. A command with no event answers the stream's version,
/// a dispatch naming that version runs, and a command decides on the stream's state.
async fn a_snapshot_ahead_of_its_stream_is_set_aside(backend: Backend) {
    let Some(place) = Place::new(backend, "snapshot_ahead").await else {
        return;
    };
    let store = place.open().await;
    for id in ["touch", "expected", "ping"] {
        stream_behind_its_snapshot(&store, id).await;
    }
    let app = Evoq::builder()
        .shared_store(store.clone())
        .start()
        .await
        .unwrap();

    let done = app.dispatch(TouchA { id: "touch".into() }).await.unwrap();
    assert_eq!(
        (done.version, done.events.len()),
        (3, 0),
        "{backend:?}: a command with no event answers the stream's version, not the snapshot's"
    );

    let done = app
        .command(TouchA {
            id: "expected".into(),
        })
        .expected_version(3)
        .dispatch()
        .await
        .unwrap_or_else(|error| panic!("{backend:?}: the stream is at 3: {error}"));
    assert_eq!(done.version, 3);

    let done = app.dispatch(PingA { id: "ping".into() }).await.unwrap();
    assert_eq!(done.version, 4, "{backend:?}");
    assert!(
        matches!(done.events[..], [AheadEvent::PingedA(PingedA { count: 4 })]),
        "{backend:?}: decided on the stream's state (count 3), not the snapshot's: {:?}",
        done.events
    );
    app.stop().await;
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_stream_is_set_aside_in_memory() {
    a_snapshot_ahead_of_its_stream_is_set_aside(Backend::Memory).await;
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_stream_is_set_aside_on_sqlite() {
    a_snapshot_ahead_of_its_stream_is_set_aside(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_stream_is_set_aside_on_postgres() {
    a_snapshot_ahead_of_its_stream_is_set_aside(Backend::Postgres).await;
}
