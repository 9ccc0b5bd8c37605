//! The inspector on a SQLite file: every command's output (golden tables, parsed JSON), its
//! errors and exit codes, reads and `--follow` while the application runs, writes refused
//! while it runs, and `verify` on a clean and on a hand-damaged file.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use evoq::EventStore;
use evoq::store::sqlite::SqliteStore;
use evoq::store::{HandlerRequest, RequestedAction, Snapshot};
use evoq_tests::bank::Deposit;
use evoq_tests::temp::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

use common::{HEAD, evoq, fill, golden, normalize, start, verify_while_writing};

/// A closed file that the application filled.
async fn filled(label: &str) -> (TempDir, String) {
    let dir = TempDir::new(label);
    let path = dir.file("events.db");
    let store = SqliteStore::open(&path).await.unwrap();
    fill(Arc::new(store.clone())).await;
    store.close().await.unwrap();
    let store_arg = format!("sqlite:{}", path.display());
    (dir, store_arg)
}

/// `evoq --store <store> <args>`, with the output normalized.
fn run(store: &str, dir: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["--store", store];
    all.extend_from_slice(args);
    let run = evoq(&all);
    (run.code, normalize(&run.stdout, Some(dir)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tables_of_every_read_command_match_their_golden_files() {
    let (dir, store) = filled("cli-golden").await;
    let db = dir.file("events.db");
    let before = std::fs::read(&db).unwrap();
    let config = dir.file("evoq.toml");
    std::fs::write(&config, "store_id = \"billing-eu\"\n").unwrap();
    let config = config.display().to_string();
    let id = evoq(&["--store", &store, "--json", "dead-letters", "list"]).json()["dead_letters"][0]
        ["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let cases: [(&str, Vec<&str>); 13] = [
        ("streams", vec!["streams"]),
        (
            "streams_prefix_page",
            vec!["streams", "--prefix", "Bank", "--limit", "1"],
        ),
        ("stream", vec!["stream", "BankAccount-acc-2"]),
        ("events", vec!["events"]),
        (
            "events_filtered",
            vec![
                "events",
                "--type",
                "MoneyDeposited",
                "--type",
                "AccountClosed",
                "--from",
                "3",
            ],
        ),
        (
            "events_of_a_stream",
            vec!["events", "--stream", "BankAccount-acc-1"],
        ),
        ("checkpoints", vec!["checkpoints"]),
        ("dead_letters", vec!["dead-letters", "list"]),
        ("dead_letter", vec!["dead-letters", "show", "notifier", &id]),
        ("stats", vec!["--config", &config, "stats"]),
        ("verify_clean", vec!["verify"]),
        (
            "no_dead_letters",
            vec!["dead-letters", "list", "--handler", "audit"],
        ),
        ("no_requests", vec!["requests"]),
    ];
    for (name, args) in cases {
        let (code, out) = run(&store, dir.path(), &args);
        assert_eq!(code, 0, "`evoq {}` failed:\n{out}", args.join(" "));
        let name = if name == "stats" {
            "sqlite_stats"
        } else {
            name
        };
        golden(name, &out);
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "reading commands leave the database file byte for byte as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_of_every_read_command_holds_what_the_store_holds() {
    let (_dir, store) = filled("cli-json").await;
    let json = |args: &[&str]| {
        let mut all = vec!["--store", store.as_str(), "--json"];
        all.extend_from_slice(args);
        let run = evoq(&all);
        run.expect_code(0);
        run.json()
    };

    let streams = json(&["streams"]);
    assert_eq!(streams["streams"][0]["stream_id"], "BankAccount-acc-1");
    assert_eq!(streams["streams"][0]["version"], 3);
    assert_eq!(streams["streams"][0]["last_position"], 4);
    assert_eq!(streams["streams"][1]["stream_id"], "BankAccount-acc-2");
    assert_eq!(streams["streams"][1]["version"], 4);
    assert_eq!(streams["next_after"], serde_json::Value::Null);
    let page = json(&["streams", "--limit", "1"]);
    assert_eq!(page["next_after"], "BankAccount-acc-1");
    let next = json(&["streams", "--limit", "1", "--after", "BankAccount-acc-1"]);
    assert_eq!(next["streams"][0]["stream_id"], "BankAccount-acc-2");
    assert!(
        json(&["streams", "--prefix", "Loyalty"])["streams"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let stream = json(&["stream", "BankAccount-acc-1", "--from", "2"]);
    assert_eq!(stream["version"], 3);
    let events = stream["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event_type"], "MoneyDeposited");
    assert_eq!(events[0]["data"]["amount"], 50);
    assert_eq!(events[1]["event_type"], "MoneyWithdrawn");

    let all = json(&["events"]);
    let positions: Vec<u64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=HEAD).collect::<Vec<_>>());
    assert_eq!(all["events"][0]["metadata"]["user"]["user"], "alice");
    let limited = json(&["events", "--limit", "3", "--from", "2"]);
    assert_eq!(limited["events"].as_array().unwrap().len(), 3);
    assert_eq!(limited["next_from"], 5);
    let deposits = json(&["events", "--type", "MoneyDeposited"]);
    let positions: Vec<u64> = deposits["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [2, 5, 6]);
    let of_stream = json(&["events", "--stream", "BankAccount-acc-2", "--from", "6"]);
    assert_eq!(of_stream["events"].as_array().unwrap().len(), 2);

    let checkpoints = json(&["checkpoints"]);
    assert_eq!(checkpoints["head"], HEAD);
    assert_eq!(
        checkpoints["checkpoints"],
        serde_json::json!([
            {"name": "audit", "position": HEAD, "lag": 0, "beyond_head": false},
            {"name": "notifier", "position": HEAD, "lag": 0, "beyond_head": false},
        ])
    );

    let letters = json(&["dead-letters", "list"]);
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["handler"], "notifier");
    assert_eq!(letters[0]["position"], 4);
    assert_eq!(letters[0]["event_type"], "MoneyWithdrawn");
    assert_eq!(letters[0]["attempts"], 1);
    let id = letters[0]["event_id"].as_str().unwrap();
    let entry = json(&["dead-letters", "show", "notifier", id]);
    assert_eq!(entry["error"], "no mail server for acc-1");
    assert_eq!(entry["event"]["data"]["amount"], 30);
    assert_eq!(entry["event"]["event_id"], id);
    assert!(entry["event"]["metadata"]["command_id"].is_string());

    let stats = json(&["stats"]);
    assert_eq!(stats["store"], "sqlite");
    assert_eq!(stats["store_id"], serde_json::Value::Null);
    assert_eq!(stats["head"], HEAD);
    assert_eq!(stats["events"], HEAD);
    assert_eq!(stats["streams"], 2);
    assert_eq!(
        stats["events_by_type"],
        serde_json::json!({"AccountClosed": 1, "AccountOpened": 2, "MoneyDeposited": 3, "MoneyWithdrawn": 1})
    );
    assert_eq!(stats["dead_letters"], 1);
    assert_eq!(stats["dead_letters_by_handler"]["notifier"], 1);
    assert_eq!(stats["requests"], 0);
    assert_eq!(stats["requests_by_handler"], serde_json::json!({}));

    let verify = json(&["verify"]);
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["events"], HEAD);
    assert_eq!(verify["streams"], 2);
    assert!(verify["problems"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_thing_and_what_to_do_with_their_exit_code() {
    let (dir, store) = filled("cli-errors").await;
    let s = store.as_str();
    let cases: [(Vec<&str>, i32, &str); 12] = [
        (vec!["streams"], 2, "no store given"),
        (
            vec!["--store", s, "dead-letters", "list", "--limit", "0"],
            2,
            "0 is not in 1..",
        ),
        (
            vec!["--store", s, "events", "--limit", "0"],
            2,
            "0 is not in 1..",
        ),
        (
            vec!["--store", s, "stream", "BankAccount-nope"],
            3,
            "there is no stream `BankAccount-nope`",
        ),
        (
            vec![
                "--store",
                s,
                "dead-letters",
                "show",
                "notifier",
                "not-a-uuid",
            ],
            2,
            "`not-a-uuid` is not an event id",
        ),
        (
            vec![
                "--store",
                s,
                "dead-letters",
                "show",
                "audit",
                "0190a5e4-0000-7000-8000-000000000000",
            ],
            3,
            "handler `audit` has no dead letter for event 0190a5e4-0000-7000-8000-000000000000",
        ),
        (
            vec!["--store", s, "checkpoint", "rewind", "mailer", "1"],
            3,
            "there is no checkpoint `mailer` in this store; it has `audit`, `notifier`",
        ),
        (
            vec!["--store", s, "checkpoint", "rewind", "audit", "9"],
            2,
            "checkpoint `audit` is at 7: a rewind moves it back, and 9 is ahead of it",
        ),
        (
            vec!["--store", s, "--schema", "x", "streams"],
            2,
            "`--schema` names a PostgreSQL schema",
        ),
        (
            vec!["--store", "mysql://db/x", "streams"],
            2,
            "is not a store this tool opens",
        ),
        (
            vec!["--store", "nowhere/events.db", "streams"],
            4,
            "there is no file at `nowhere/events.db`",
        ),
        (
            vec!["--store", "Cargo.toml", "stats"],
            4,
            "`Cargo.toml` is not an evoq event store (it is not an SQLite database",
        ),
    ];
    for (args, code, message) in cases {
        let run = evoq(&args);
        assert_eq!(run.code, code, "`evoq {}`: {run:#?}", args.join(" "));
        assert!(
            run.stderr.contains(message),
            "`evoq {}` must say `{message}`: {run:#?}",
            args.join(" ")
        );
        assert!(run.stdout.is_empty(), "{run:#?}");
        assert!(!run.stderr.contains("panicked"), "{run:#?}");
    }
    // Another application's database.
    let foreign = dir.file("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE invoices (id INTEGER)")
        .unwrap();
    let run = evoq(&["--store", &foreign.display().to_string(), "streams"]);
    run.expect_code(4);
    assert!(
        run.stderr
            .contains("holds tables `invoices` and no `evoq_schema`"),
        "{run:#?}"
    );
}

/// Reads the child's output lines until one satisfies `until`, within 20 s.
async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    seen: &mut Vec<String>,
    until: impl Fn(&str) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read the output")
                .unwrap_or_else(|| panic!("the output ended; lines so far: {seen:#?}"));
            let done = until(&line);
            seen.push(line);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the line never came; lines so far: {seen:#?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_work_while_the_application_runs_and_follow_prints_what_it_commits() {
    let (_dir, store_arg) = filled("cli-follow").await;
    let path = store_arg.strip_prefix("sqlite:").unwrap().to_owned();
    let store = SqliteStore::open(&path).await.unwrap();
    let app = start(Arc::new(store.clone())).await;

    // The application holds the file's lock; reads go on.
    evoq(&["--store", &store_arg, "streams"]).expect_code(0);

    let mut follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_evoq"))
        .args(["--store", &store_arg, "--json", "events", "--follow"])
        .args(["--type", "MoneyDeposited"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_evoq"))
        .args(["--store", &store_arg, "tail"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut followed = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut tailed = BufReader::new(tail.stdout.take().unwrap()).lines();
    let mut tail_notes = BufReader::new(tail.stderr.take().unwrap()).lines();
    let mut notes = Vec::new();
    // `tail` says where it starts once it follows.
    read_until(&mut tail_notes, &mut notes, |line| {
        line.contains("following")
    })
    .await;
    assert_eq!(
        notes,
        [format!(
            "(following: the events after position {HEAD}, until Ctrl-C)"
        )]
    );
    let mut seen = Vec::new();
    // The stored deposits first (positions 2, 5, 6), one JSON line each.
    read_until(&mut followed, &mut seen, |line| {
        line.contains("\"position\":6")
    })
    .await;
    assert_eq!(seen.len(), 3, "{seen:#?}");

    let done = app
        .dispatch(Deposit {
            account: "acc-1".into(),
            amount: 7,
        })
        .await
        .unwrap();
    assert_eq!(done.position, Some(HEAD + 1));
    read_until(&mut followed, &mut seen, |_| true).await;
    let event: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(event["position"], HEAD + 1);
    assert_eq!(event["event_type"], "MoneyDeposited");
    assert_eq!(event["data"]["amount"], 7);

    // `tail` starts at the head it found, so it prints the new event only.
    let mut tail_seen = Vec::new();
    read_until(&mut tailed, &mut tail_seen, |_| true).await;
    assert!(
        tail_seen[0].starts_with(&format!(
            "{}  BankAccount-acc-1  4  MoneyDeposited  ",
            HEAD + 1
        )),
        "{tail_seen:#?}"
    );
    assert!(tail_seen[0].ends_with("{\"account\":\"acc-1\",\"amount\":7}"));

    // A reader that goes away (`evoq events --follow | head -3`) ends the follower quietly at
    // its next line; Ctrl-C ends `tail` quietly.
    drop(followed);
    app.dispatch(Deposit {
        account: "acc-1".into(),
        amount: 8,
    })
    .await
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), follow.wait())
        .await
        .expect("the follower ends once its reader is gone")
        .unwrap();
    assert_eq!(status.code(), Some(0), "a closed pipe is no error");
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &tail.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = tokio::time::timeout(Duration::from_secs(20), tail.wait())
        .await
        .expect("Ctrl-C ends `tail`")
        .unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C is no error");
    app.stop().await;
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_while_the_application_runs_and_done_once_it_stopped() {
    let (_dir, store_arg) = filled("cli-writes").await;
    let path = store_arg.strip_prefix("sqlite:").unwrap().to_owned();
    let s = store_arg.as_str();
    let id = evoq(&["--store", s, "--json", "dead-letters", "list"]).json()["dead_letters"][0]
        ["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let store = SqliteStore::open(&path).await.unwrap();
    let app = start(Arc::new(store.clone())).await;
    for args in [
        vec!["checkpoint", "rewind", "notifier", "3"],
        vec!["checkpoint", "reset", "audit"],
        vec!["dead-letters", "discard", "notifier", &id],
    ] {
        let mut all = vec!["--store", s];
        all.extend_from_slice(&args);
        let run = evoq(&all);
        run.expect_code(5);
        assert!(
            run.stderr.contains("an application has the store at")
                && run.stderr.contains("stop the application first"),
            "{run:#?}"
        );
    }
    app.stop().await;
    store.close().await.unwrap();

    let run = evoq(&["--store", s, "checkpoint", "rewind", "notifier", "3"]);
    run.expect_code(0);
    assert_eq!(
        run.stdout,
        "checkpoint `notifier` moved from 7 to 3 (head 7): it re-delivers events 4 to 7 when it runs again\n"
    );
    let run = evoq(&["--store", s, "--json", "checkpoint", "reset", "audit"]);
    run.expect_code(0);
    assert_eq!(
        run.json(),
        serde_json::json!({"name": "audit", "from": 7, "to": 0, "head": 7})
    );
    let checkpoints = evoq(&["--store", s, "--json", "checkpoints"]).json();
    assert_eq!(checkpoints["checkpoints"][0]["position"], 0);
    assert_eq!(checkpoints["checkpoints"][0]["lag"], 7);
    assert_eq!(checkpoints["checkpoints"][1]["position"], 3);

    let run = evoq(&["--store", s, "dead-letters", "discard", "notifier", &id]);
    run.expect_code(0);
    assert!(
        run.stdout
            .starts_with("discarded the dead letter of `notifier`")
    );
    evoq(&["--store", s, "dead-letters", "discard", "notifier", &id]).expect_code(3);
    let listed = evoq(&["--store", s, "--json", "dead-letters", "list"]).json();
    assert!(listed["dead_letters"].as_array().unwrap().is_empty());
    assert_eq!(
        evoq(&["--store", s, "--json", "stats"]).json()["events"],
        HEAD,
        "a discarded dead letter's event stays"
    );

    // The application starts again from the moved checkpoints.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.load_checkpoint("notifier").await.unwrap(), Some(3));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_every_damaged_row_and_exits_with_1() {
    let (dir, store_arg) = filled("cli-verify").await;
    let path = dir.file("events.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // Metadata that does not decode, a row gone from the middle.
        conn.execute_batch(
            "UPDATE events SET metadata = x'7b6e6f' WHERE position = 2;
             DELETE FROM events WHERE position = 5;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .save_snapshot(Snapshot {
            stream_id: "BankAccount-acc-1".into(),
            version: 9,
            data: b"{}".to_vec(),
            taken_at: std::time::SystemTime::now(),
        })
        .await
        .unwrap();
    store.save_checkpoint("ghost", 99).await.unwrap();
    store.close().await.unwrap();

    let run = evoq(&["--store", &store_arg, "verify"]);
    run.expect_code(1);
    golden("verify_damaged", &normalize(&run.stdout, Some(dir.path())));

    let run = evoq(&[
        "--store",
        &store_arg,
        "--json",
        "verify",
        "--page-size",
        "2",
    ]);
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["ok"], false);
    let problems: Vec<(String, serde_json::Value)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut p = p.clone();
            let kind = p["kind"].as_str().unwrap().to_owned();
            let fields = p.as_object_mut().unwrap();
            fields.remove("kind");
            fields.remove("message");
            fields.remove("reason");
            (kind, p)
        })
        .collect();
    assert_eq!(
        problems,
        [
            (
                "undecodable_row".to_owned(),
                serde_json::json!({"position": 2, "stream_id": "BankAccount-acc-1", "version": 2})
            ),
            (
                "position_gap".to_owned(),
                serde_json::json!({"from": 5, "to": 5})
            ),
            (
                "version_gap".to_owned(),
                serde_json::json!({"stream_id": "BankAccount-acc-2", "expected_version": 2, "found_version": 3, "position": 6})
            ),
            (
                "snapshot_ahead".to_owned(),
                serde_json::json!({"stream_id": "BankAccount-acc-1", "snapshot_version": 9, "stream_version": 3})
            ),
            (
                "checkpoint_beyond_head".to_owned(),
                serde_json::json!({"name": "ghost", "position": 99, "head": 7})
            ),
        ]
    );
    // A read of the damaged row names it and points at `verify`.
    let run = evoq(&["--store", &store_arg, "events"]);
    run.expect_code(6);
    assert!(
        run.stderr
            .contains("stream `BankAccount-acc-1` version 2 (position 2)")
            && run
                .stderr
                .contains("`evoq verify` lists every row that does not decode"),
        "{run:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_nothing_wrong_with_a_file_the_application_is_writing() {
    let (_dir, store_arg) = filled("cli-verify-live").await;
    let path = store_arg.strip_prefix("sqlite:").unwrap().to_owned();
    let store = SqliteStore::open(&path).await.unwrap();
    let failed = verify_while_writing(
        Arc::new(store),
        vec!["--store".into(), store_arg.clone()],
        60,
    )
    .await;
    assert!(
        failed.is_empty(),
        "verify reported a problem on a healthy file being written: {failed:#?}"
    );
    evoq(&["--store", &store_arg, "verify"]).expect_code(0);
}

/// The problems of a `verify --json` report of kind `kind`.
fn problems_of(report: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_checkpoint_snapshot_dead_letter_and_request_rows_that_do_not_decode() {
    let (dir, store_arg) = filled("cli-verify-rows").await;
    let path = dir.file("events.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .save_snapshot(Snapshot {
            stream_id: "BankAccount-acc-1".into(),
            version: 1,
            data: b"{}".to_vec(),
            taken_at: std::time::SystemTime::now(),
        })
        .await
        .unwrap();
    store
        .save_request(HandlerRequest::new("balanses", RequestedAction::Rebuild))
        .await
        .unwrap();
    store.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "UPDATE checkpoints SET position = -5 WHERE name = 'notifier';
             UPDATE snapshots SET version = 'one';
             UPDATE dead_letters SET kind = 'weird';
             UPDATE requests SET action = 'weird';",
        )
        .unwrap();
    }

    let run = evoq(&["--store", &store_arg, "--json", "verify"]);
    run.expect_code(1);
    let report = run.json();
    assert_eq!(report["ok"], false, "{run:#?}");
    let unreadable = problems_of(&report, "undecodable_record");
    let tables: Vec<&str> = unreadable
        .iter()
        .map(|p| p["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        ["snapshots", "checkpoints", "dead_letters", "requests"],
        "{run:#?}"
    );
    assert_eq!(unreadable[3]["handler"], "balanses", "{run:#?}");
    let dead_letter = &unreadable[2];
    assert_eq!(dead_letter["handler"], "notifier", "{run:#?}");
    assert!(
        dead_letter["message"]
            .as_str()
            .unwrap()
            .contains("notifier"),
        "{run:#?}"
    );
    // The events were checked all the same.
    assert_eq!(report["events"], HEAD, "{run:#?}");

    let run = evoq(&["--store", &store_arg, "verify"]);
    run.expect_code(1);
    assert!(
        run.stdout.contains("checkpoints")
            && run.stdout.contains("snapshots")
            && run.stdout.contains("dead letter")
            && run
                .stdout
                .contains("a request queued for `balanses` does not decode")
            && run.stdout.contains("4 problems"),
        "{run:#?}"
    );
}
