//! The aggregate lifecycle (docs/semantics.md §1): idle TTL, passivation with snapshots,
//! hibernation, `snapshot_every`, lifespan hooks, the memory monitor and the configuration.

#![allow(
    dead_code,
    reason = "each counter declares a failing command that only some tests dispatch"
)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use evoq::prelude::*;
use evoq::store::Snapshot;
use evoq::{AggregateDefaults, Config, EventStore, ExpectedVersion, MemoryMonitorConfig};
use evoq::{Idle, Lifespan, OnTimeout, PressureLevel};
use evoq_tests::counter;
use evoq_tests::faulty_store::{FaultyStore, raw_deposit};
use evoq_tests::lifecycle::{DrivenProbe, eventually};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

counter!(
    Passivating,
    PingP,
    TouchPassivating,
    FailP,
    PingedP,
    [idle_timeout = "150ms", hibernate_after = "never"]
);
counter!(
    Hibernating,
    PingH,
    TouchHibernating,
    FailH,
    PingedH,
    [idle_timeout = "1h", hibernate_after = "80ms"]
);
counter!(
    Expiring,
    PingE,
    TouchExpiring,
    FailE,
    PingedE,
    [idle_timeout = "250ms", hibernate_after = "50ms"]
);
counter!(
    EveryThree,
    Ping3,
    TouchEveryThree,
    Fail3,
    Pinged3,
    [snapshot_every = 3, hibernate_after = "never"]
);
counter!(
    Bursty,
    PingB,
    TouchBursty,
    FailB,
    PingedB,
    [idle_timeout = "5s", hibernate_after = "never"]
);
counter!(
    OneSecond,
    Ping1,
    TouchOneSecond,
    Fail1,
    Pinged1,
    [idle_timeout = "1s", hibernate_after = "never"]
);
counter!(
    Flaky,
    PingF,
    TouchFlaky,
    FailF,
    PingedF,
    [
        idle_timeout = "1h",
        hibernate_after = "never",
        lifespan = ShortAfterError
    ]
);
counter!(
    Stopping,
    PingS,
    TouchStopping,
    FailS,
    PingedS,
    [
        idle_timeout = "100ms",
        hibernate_after = "never",
        lifespan = StopOnTimeout
    ]
);
counter!(
    Racing,
    PingR,
    TouchRacing,
    FailR,
    PingedR,
    [idle_timeout = "1ms", hibernate_after = "never"]
);

/// 150 ms after an error, the configured timeout otherwise.
#[derive(Default)]
struct ShortAfterError;

impl Lifespan<Flaky> for ShortAfterError {
    fn after_error(&self, _: &evoq::Error) -> Idle {
        Idle::After(Duration::from_millis(150))
    }
}

/// Leaves memory without a snapshot.
#[derive(Default)]
struct StopOnTimeout;

impl Lifespan<Stopping> for StopOnTimeout {
    fn on_timeout(&self, _: &Stopping) -> OnTimeout {
        OnTimeout::Stop
    }
}

/// A memory probe the test drives.
/// A runtime on `store` whose memory monitor reads `probe` only when told to.
async fn app_on(store: Arc<FaultyStore>, probe: DrivenProbe) -> Evoq {
    Evoq::builder()
        .shared_store(store)
        .memory_probe(probe)
        .memory_monitor(MemoryMonitorConfig {
            check_interval: Duration::from_secs(3600),
            ..MemoryMonitorConfig::default()
        })
        .hibernation_sweep_interval(Duration::from_millis(20))
        .start()
        .await
        .expect("the runtime starts")
}

fn id(text: &str) -> String {
    text.to_owned()
}

#[tokio::test]
async fn an_idle_aggregate_passivates_saves_a_snapshot_and_reactivates_from_it() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    for _ in 0..5 {
        app.dispatch(PingP { id: id("p") }).await.unwrap();
    }
    assert_eq!(app.aggregate_stats::<Passivating>().live, 1);
    eventually(Duration::from_secs(2), || {
        app.aggregate_stats::<Passivating>().passivations == 1
    })
    .await;
    let stats = app.aggregate_stats::<Passivating>();
    assert_eq!((stats.live, stats.hibernated), (0, 0));
    let snapshot = store.load_snapshot("Passivating-p").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 5);

    // A foreign writer appends one event after the snapshot.
    let mut foreign = raw_deposit("p", 0);
    foreign.event_type = "PingedP".into();
    foreign.data = br#"{"count":6}"#.to_vec();
    store
        .append("Passivating-p", ExpectedVersion::Exact(5), vec![foreign])
        .await
        .unwrap();

    store.events_read.store(0, Ordering::SeqCst);
    let done = app.dispatch(PingP { id: id("p") }).await.unwrap();
    // Identical state: the snapshot (count 5) plus the one later event (count 6).
    assert_eq!(done.version, 7);
    assert!(matches!(
        done.events[..],
        [PassivatingEvent::PingedP(PingedP { count: 7 })]
    ));
    assert_eq!(
        store.last_read_from.load(Ordering::SeqCst),
        6,
        "reads start after the snapshot"
    );
    assert_eq!(
        store.events_read.load(Ordering::SeqCst),
        1,
        "only the event after the snapshot"
    );
    assert_eq!(app.aggregate_stats::<Passivating>().activations, 2);
}

#[tokio::test]
async fn an_activation_asks_the_store_once_for_the_snapshot_and_the_events_after_it() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    app.dispatch(PingP { id: id("once") }).await.unwrap();
    assert_eq!(
        store.rebuild_reads.load(Ordering::SeqCst),
        1,
        "a new aggregate's activation is one `read_from_snapshot`"
    );
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        1,
        "no stream read besides the one inside `read_from_snapshot`"
    );
    app.dispatch(PingP { id: id("once") }).await.unwrap();
    assert_eq!(
        store.rebuild_reads.load(Ordering::SeqCst),
        1,
        "a live aggregate asks nothing"
    );
    assert_eq!(app.aggregate_stats::<Passivating>().activations, 1);
}

#[tokio::test]
async fn a_hibernated_aggregate_thaws_without_any_store_read() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    app.dispatch(PingH { id: id("h") }).await.unwrap();
    app.dispatch(PingH { id: id("h") }).await.unwrap();
    eventually(Duration::from_secs(2), || {
        app.aggregate_stats::<Hibernating>().hibernated == 1
    })
    .await;
    assert_eq!(app.aggregate_stats::<Hibernating>().live, 0);

    let reads = store.stream_reads.load(Ordering::SeqCst);
    let loads = store.snapshot_loads.load(Ordering::SeqCst);
    let done = app.dispatch(PingH { id: id("h") }).await.unwrap();
    assert_eq!(done.version, 3);
    assert!(matches!(
        done.events[..],
        [HibernatingEvent::PingedH(PingedH { count: 3 })]
    ));
    assert_eq!(
        store.stream_reads.load(Ordering::SeqCst),
        reads,
        "no stream read"
    );
    assert_eq!(
        store.snapshot_loads.load(Ordering::SeqCst),
        loads,
        "no snapshot read"
    );
    let stats = app.aggregate_stats::<Hibernating>();
    assert_eq!((stats.live, stats.hibernated, stats.thaws), (1, 0, 1));
}

#[tokio::test]
async fn an_expired_hibernated_aggregate_is_passivated_with_a_snapshot() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    app.dispatch(PingE { id: id("e") }).await.unwrap();
    eventually(Duration::from_secs(2), || {
        app.aggregate_stats::<Expiring>().hibernated == 1
    })
    .await;
    eventually(Duration::from_secs(2), || {
        app.aggregate_stats::<Expiring>().passivations == 1
    })
    .await;
    assert_eq!(app.aggregate_stats::<Expiring>().hibernated, 0);
    let snapshot = store.load_snapshot("Expiring-e").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 1);
    assert_eq!(
        app.dispatch(PingE { id: id("e") }).await.unwrap().version,
        2
    );
}

#[tokio::test]
async fn snapshot_every_three_saves_exactly_one_snapshot_at_version_three() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    for _ in 0..3 {
        app.dispatch(Ping3 { id: id("s") }).await.unwrap();
    }
    eventually(Duration::from_secs(2), || {
        store.snapshot_saves.load(Ordering::SeqCst) >= 1
    })
    .await;
    // A fourth and fifth command cross no boundary.
    app.dispatch(Ping3 { id: id("s") }).await.unwrap();
    app.dispatch(Ping3 { id: id("s") }).await.unwrap();
    assert_eq!(store.snapshot_saves.load(Ordering::SeqCst), 1);
    let snapshot = store.load_snapshot("EveryThree-s").await.unwrap().unwrap();
    assert_eq!(snapshot.version, 3);
    assert_eq!(snapshot.data, br#"{"count":3}"#);
    assert_eq!(app.aggregate_stats::<EveryThree>().snapshots_saved, 1);
}

#[tokio::test]
async fn memory_pressure_follows_the_probe_and_scales_the_next_idle_timeout() {
    let store = FaultyStore::new();
    let probe = DrivenProbe::default();
    let app = app_on(store, probe.clone()).await;
    let monitor = app.memory_monitor();
    let mut seen = Vec::new();
    for used in [0.5, 0.75, 0.9, 0.5] {
        probe.set(used);
        let level = monitor.check_now();
        seen.push((level, monitor.ttl_factor()));
    }
    assert_eq!(
        seen,
        [
            (PressureLevel::Normal, 1.0),
            (PressureLevel::Elevated, 0.5),
            (PressureLevel::Critical, 0.1),
            (PressureLevel::Normal, 1.0),
        ]
    );

    // At elevated pressure, a 1 s idle timeout passivates after about 0.5 s.
    probe.set(0.75);
    assert_eq!(monitor.check_now(), PressureLevel::Elevated);
    app.dispatch(Ping1 { id: id("m") }).await.unwrap();
    let took = eventually(Duration::from_secs(3), || {
        app.aggregate_stats::<OneSecond>().passivations == 1
    })
    .await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(900),
        "passivated after {took:?}, expected about 500 ms"
    );
}

#[tokio::test]
async fn after_an_error_the_next_idle_timeout_is_the_after_error_value() {
    let store = FaultyStore::new();
    let app = app_on(store, DrivenProbe::default()).await;
    // A success: the configured timeout (1 h) applies, the instance stays.
    app.dispatch(PingF { id: id("ok") }).await.unwrap();
    // An error: `after_error` says 150 ms.
    assert!(app.dispatch(FailF { id: id("ko") }).await.is_err());
    let took = eventually(Duration::from_secs(2), || {
        app.aggregate_stats::<Flaky>().passivations == 1
    })
    .await;
    assert!(took < Duration::from_millis(600), "took {took:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = app.aggregate_stats::<Flaky>();
    assert_eq!(
        (stats.live, stats.passivations),
        (1, 1),
        "the successful one stays"
    );
}

#[tokio::test]
async fn on_timeout_stop_leaves_memory_without_a_snapshot() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    app.dispatch(PingS { id: id("x") }).await.unwrap();
    eventually(Duration::from_secs(2), || {
        app.aggregate_stats::<Stopping>().passivations == 1
    })
    .await;
    assert!(store.load_snapshot("Stopping-x").await.unwrap().is_none());
    assert_eq!(
        app.dispatch(PingS { id: id("x") }).await.unwrap().version,
        2
    );
}

#[tokio::test]
async fn a_snapshot_that_no_longer_decodes_falls_back_to_a_full_replay() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    for _ in 0..4 {
        app.dispatch(Ping3 { id: id("d") }).await.unwrap();
    }
    app.stop().await;
    store
        .save_snapshot(Snapshot {
            stream_id: "EveryThree-d".into(),
            version: 3,
            data: br#"{"count":"no longer a number"}"#.to_vec(),
            taken_at: std::time::SystemTime::now(),
        })
        .await
        .unwrap();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    store.events_read.store(0, Ordering::SeqCst);
    let done = app.dispatch(Ping3 { id: id("d") }).await.unwrap();
    assert!(matches!(
        done.events[..],
        [EveryThreeEvent::Pinged3(Pinged3 { count: 5 })]
    ));
    assert_eq!(
        store.events_read.load(Ordering::SeqCst),
        4,
        "the whole stream was replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_racing_an_instance_that_leaves_memory_are_never_lost_nor_forked() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..50u64 {
                    app.dispatch(PingR { id: id("race") }).await.unwrap();
                    if (i + task) % 3 == 0 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let versions: Vec<u64> = store
        .read_stream(
            "Racing-race",
            1,
            evoq::store::Direction::Forward,
            usize::MAX,
        )
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=200).collect::<Vec<u64>>());
    assert_eq!(
        store.inner.conflict_count(),
        0,
        "never two instances at once"
    );
    assert!(
        app.aggregate_stats::<Racing>().passivations > 0,
        "the race was exercised"
    );
}

#[tokio::test]
async fn a_bad_toml_value_fails_start_with_an_error_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("evoq-config-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("evoq.toml");
    std::fs::write(
        &file,
        "partitions = 2\n[memory_monitor]\nelevated_threshold = 0.8\ncritical_threshold = 0.5\n",
    )
    .unwrap();
    let error = Evoq::builder()
        .config_file(&file)
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, evoq::Error::Config { key, .. } if key == "memory_monitor.critical_threshold"),
        "{error:?}"
    );

    std::fs::write(&file, "[aggregate_defaults]\nidle_timeout = \"whenever\"\n").unwrap();
    let error = Evoq::builder().config_file(&file).unwrap_err();
    assert!(
        matches!(&error, evoq::Error::Config { key, .. } if key == "aggregate_defaults.idle_timeout"),
        "{error:?}"
    );
    assert!(error.to_string().contains("whenever"), "{error}");

    std::fs::write(&file, "[aggregate_defaults]\nidle_timeout = \"10m\"\n").unwrap();
    let app = Evoq::builder()
        .config_file(&file)
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(
        app.config().aggregate_defaults,
        AggregateDefaults {
            idle_timeout: Duration::from_secs(600),
            ..AggregateDefaults::default()
        }
    );
    assert_eq!(app.config().partitions, Config::default().partitions);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn every_command_pushes_the_idle_timeout_back_and_the_timer_still_fires_after_the_last() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    // Idle timeout 150 ms: a command every 20 ms for 400 ms keeps the instance live, although
    // the timer armed after the first command comes due long before the last one.
    let started = Instant::now();
    let mut last = started;
    while started.elapsed() < Duration::from_millis(400) {
        app.dispatch(PingP { id: id("kept") }).await.unwrap();
        last = Instant::now();
        let stats = app.aggregate_stats::<Passivating>();
        assert_eq!((stats.live, stats.passivations), (1, 0), "still live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(Duration::from_secs(2), || {
        app.aggregate_stats::<Passivating>().passivations == 1
    })
    .await;
    assert!(
        last.elapsed() >= Duration::from_millis(150),
        "passivated {:?} after the last command, before its idle timeout",
        last.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_shrink_back_once_a_burst_of_instances_has_left() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    const BURST: u64 = 20_000;
    for n in 0..BURST {
        app.dispatch(PingB {
            id: format!("b{n}"),
        })
        .await
        .unwrap();
    }
    let grown = app.aggregate_stats::<Bursty>().capacity;
    assert!(
        grown >= BURST,
        "the tables hold the burst: room for {grown}"
    );
    // Every instance passivates when idle; a later sweep shrinks the tables.
    eventually(Duration::from_secs(30), || {
        let stats = app.aggregate_stats::<Bursty>();
        stats.live == 0 && stats.hibernated == 0 && stats.capacity < BURST / 4
    })
    .await;
    assert_eq!(app.aggregate_stats::<Bursty>().passivations, BURST);
    // And they grow again when needed.
    app.dispatch(PingB { id: id("again") }).await.unwrap();
    assert_eq!(app.aggregate_stats::<Bursty>().live, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_stream_is_ignored_and_the_stream_replayed() {
    let store = FaultyStore::new();
    let app = app_on(store.clone(), DrivenProbe::default()).await;
    app.dispatch(Ping3 { id: id("ahead") }).await.unwrap();
    app.dispatch(Ping3 { id: id("ahead") }).await.unwrap();
    app.stop().await;
    // A snapshot for events the stream does not hold (a stream restored from an older backup).
    store
        .save_snapshot(evoq::store::Snapshot {
            stream_id: "EveryThree-ahead".into(),
            version: 50,
            data: br#"{"count":999}"#.to_vec(),
            taken_at: std::time::SystemTime::now(),
        })
        .await
        .unwrap();

    let app = app_on(store.clone(), DrivenProbe::default()).await;
    let done = app.dispatch(Ping3 { id: id("ahead") }).await.unwrap();
    assert_eq!(
        done.version, 3,
        "decided on the replayed stream, not the snapshot"
    );
    assert!(matches!(
        done.events[..],
        [EveryThreeEvent::Pinged3(Pinged3 { count: 3 })]
    ));
    app.stop().await;
}
