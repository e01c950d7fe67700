//! Crash safety of the sled store: a writer killed with SIGKILL in the middle
//! of its writes leaves a state where every record decodes and the serial
//! counts exactly the writes that landed, and a lock the next run reports as
//! stale.
//!
//! The writer is this same test binary re-run with `--exact
//! crash_child_writer` and `BERTH_STATE_CRASH_DIR` set; without the variable
//! that test does nothing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use berth_state::sled_backend::SledBackend;
use berth_state::{LockInfo, ResourceRecord, StateBackend, StateError};
use serde_json::json;

const DIR_VAR: &str = "BERTH_STATE_CRASH_DIR";
const ENV: &str = "crash/test";
/// Writes the parent waits to see acknowledged before killing the writer.
const KILL_AFTER: usize = 60;

fn record(i: usize) -> ResourceRecord {
    ResourceRecord {
        type_name: "docker_container".to_owned(),
        id: format!("id-{i}"),
        // Big enough that a kill often lands inside a write.
        attrs: [
            ("index".to_owned(), json!(i)),
            ("blob".to_owned(), json!(format!("{i:08}").repeat(2048))),
        ]
        .into_iter()
        .collect(),
        sensitive: Vec::new(),
        config_hash: format!("cfg-{i}"),
        depends_on: Vec::new(),
    }
}

/// The writer, run only as the child of `killed_writer_leaves_a_whole_state`.
#[tokio::test]
async fn crash_child_writer() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let backend = SledBackend::open(dir.as_ref(), ENV).unwrap();
    let info = LockInfo::new("apply", &backend.describe());
    backend.lock(&info).await.unwrap();
    println!("@@LOCK {}", info.id);
    for i in 0.. {
        let serial = backend
            .put_resource(&format!("r.n{i}"), &record(i))
            .await
            .unwrap();
        println!("@@WROTE {i} {serial}");
    }
}

#[tokio::test]
async fn killed_writer_leaves_a_whole_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();

    let mut lock_id = None;
    let mut acked = 0usize;
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest may print "test crash_child_writer ... " on the same line.
        if let Some(rest) = line.split_once("@@LOCK ").map(|(_, r)| r) {
            lock_id = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.split_once("@@WROTE ").map(|(_, r)| r) {
            let mut parts = rest.split_whitespace().map(|p| p.parse::<u64>().unwrap());
            let (i, serial) = (parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(i as usize, acked, "writes are acknowledged in order");
            assert_eq!(serial, i + 1);
            acked += 1;
            if acked == KILL_AFTER {
                child.kill().unwrap();
                killed = true;
                break;
            }
        }
    }
    assert!(killed, "the writer stopped by itself after {acked} writes");
    // Whatever it acknowledged before dying still counts.
    for line in lines {
        let Ok(line) = line else { break };
        if line.contains("@@WROTE ") {
            acked += 1;
        }
    }
    child.wait().unwrap();
    let lock_id = lock_id.expect("the writer printed its lock id");

    let backend = SledBackend::open(dir.path(), ENV).unwrap();
    match backend.lock(&LockInfo::new("apply", "x")).await {
        Err(StateError::Locked { holder, stale }) => {
            assert_eq!(holder.id, lock_id);
            assert!(stale, "the writer is dead");
        }
        other => panic!("expected the dead writer's lock, got {other:?}"),
    }
    backend.force_unlock(&lock_id).await.unwrap();
    backend.lock(&LockInfo::new("apply", "x")).await.unwrap();

    let snap = backend.read().await.unwrap();
    let serial = usize::try_from(snap.serial).unwrap();
    assert!(
        serial == acked || serial == acked + 1,
        "serial {serial} after {acked} acknowledged writes"
    );
    assert_eq!(
        snap.resources.len(),
        serial,
        "each write is a record and a serial, together"
    );
    for i in 0..serial {
        assert_eq!(snap.resources[&format!("r.n{i}")], record(i));
    }

    // The recovered state takes new writes.
    assert_eq!(
        backend.put_resource("r.after", &record(0)).await.unwrap(),
        snap.serial + 1
    );
}
