//! `steward audit verify` against a real server: the whole trail is walked through the API and
//! checked against the latest signed seal, so a trail rewritten (and re-hashed) or cut in the
//! database is reported, where the hash chain alone would still hold.

use crate::support::{Options, Server, run, wait_until};
use serde_json::Value;
use std::time::Duration;

/// The seal key the server logged at start (what an operator pins).
fn logged_key(s: &Server) -> String {
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("steward audit verify --key"))
        .unwrap_or_else(|| panic!("the server logs its seal key at start:\n{log}"));
    line.split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .unwrap_or_else(|| panic!("no 64-hex key in: {line}"))
        .to_string()
}

/// Restarts the server and waits until it sealed the trail as it stands.
fn restart_and_seal(s: &mut Server) {
    s.kill();
    let last = last_seq(s);
    s.spawn(&Options::default());
    wait_until("the seal at start", Duration::from_secs(20), || {
        let (status, seal) = s.get("/api/audit/seal");
        (status == 200 && seal["through"].as_u64() >= Some(last)).then_some(())
    });
}

fn last_seq(s: &Server) -> u64 {
    let db = rusqlite::Connection::open(s.data_dir.join("steward.db")).unwrap();
    db.query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}

fn verify(s: &Server, key: &str) -> (bool, String, String) {
    let (out, stdout, stderr) = run(&mut s.cli(["audit", "verify", "--key", key]));
    (out.status.success(), stdout, stderr)
}

/// Rewrites one record's message in the database and recomputes every hash after it, as
/// someone with write access to the file (and the code) could.
fn rewrite_and_rehash(s: &Server, seq: u64) {
    let db = rusqlite::Connection::open(s.data_dir.join("steward.db")).unwrap();
    db.execute(
        "UPDATE audit SET body = json_set(body, '$.message', 'nothing happened') WHERE seq = ?1",
        [seq as i64],
    )
    .unwrap();
    let rows: Vec<(i64, String, String)> = db
        .prepare("SELECT seq, id, body FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut prev = "0".repeat(64);
    for (seq, id, body) in rows {
        let record = shared::ports::store::AuditRecord {
            id,
            time: chrono::Utc::now(),
            body: serde_json::from_str::<Value>(&body).unwrap(),
        };
        let hash = shared::audit::chain_hash(&prev, &record);
        db.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![prev, hash, seq],
        )
        .unwrap();
        prev = hash;
    }
}

#[test]
fn audit_verify_holds_for_an_honest_trail_and_names_a_rewritten_one() {
    let mut s = Server::start();
    s.active_dev_agent("sealone-agent-dev");
    restart_and_seal(&mut s);
    let key = logged_key(&s);
    let (ok, stdout, stderr) = verify(&s, &key);
    assert!(ok, "an untouched trail verifies:\n{stdout}\n{stderr}");
    assert!(stdout.starts_with("verified: "), "{stdout}");
    // Records written after the last seal are covered by the chain until the next seal.
    s.active_dev_agent("sealtwo-agent-dev");
    let (ok, stdout, stderr) = verify(&s, &key);
    assert!(ok, "{stdout}\n{stderr}");

    // Another key (a server that signs its own rewritten trail) is not trusted.
    let other = "ab".repeat(32);
    let (ok, _, stderr) = verify(&s, &other);
    assert!(!ok);
    assert!(
        stderr.contains("is not a 64-character hex") || stderr.contains("not signed by the key"),
        "{stderr}"
    );
    let unpinned = run(&mut s.cli(["audit", "verify"]));
    assert!(unpinned.0.status.success(), "{}", unpinned.2);
    assert!(
        unpinned.2.contains("--key"),
        "an unpinned verify says how to pin: {}",
        unpinned.2
    );

    // Rewritten and re-hashed while the server was down: the chain holds, the seal does not,
    // and the server refuses to seal over it.
    restart_and_seal(&mut s);
    s.kill();
    rewrite_and_rehash(&s, 2);
    s.spawn(&Options::default());
    wait_until("the refused seal", Duration::from_secs(20), || {
        s.log().contains("audit trail not sealed").then_some(())
    });
    let (ok, stdout, stderr) = verify(&s, &key);
    assert!(!ok, "a rewritten trail must not verify:\n{stdout}");
    assert!(stderr.contains("were rewritten"), "{stderr}");
}

#[test]
fn audit_verify_names_a_trail_cut_after_its_seal() {
    let mut s = Server::start();
    s.active_dev_agent("sealcut-agent-dev");
    restart_and_seal(&mut s);
    let key = logged_key(&s);
    // Cut into what the seal covers (records after it are covered by the chain only).
    let sealed = s.get_ok("/api/audit/seal")["through"].as_u64().unwrap();
    assert!(sealed > 3, "the trail has records to cut ({sealed})");
    s.kill();
    let db = rusqlite::Connection::open(s.data_dir.join("steward.db")).unwrap();
    db.execute("DELETE FROM audit WHERE seq > ?1", [(sealed - 3) as i64])
        .unwrap();
    drop(db);
    s.spawn(&Options::default());
    let (ok, stdout, stderr) = verify(&s, &key);
    assert!(!ok, "a cut trail must not verify:\n{stdout}");
    assert!(stderr.contains("removed from its end"), "{stderr}");
}

/// `steward audit` pages through the whole trail (`after` the last record of each page): with
/// pages of 7 records it writes exactly the records one read of the whole trail returns, in
/// order, none twice.
#[test]
fn the_audit_export_pages_through_the_whole_trail() {
    let s = Server::start();
    for i in 0..6 {
        s.active_dev_agent(&format!("paged{i}-agent-dev"));
    }
    let whole: Vec<String> = s
        .audit()
        .iter()
        .map(|v| v["unmapped"]["audit_seq"].to_string())
        .collect();
    assert!(
        whole.len() > 21,
        "enough records for several pages: {}",
        whole.len()
    );
    let client =
        shared::http::client::AdminClient::new(&s.base, shared::Secret::new(s.token.clone()))
            .expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut paged = Vec::new();
    rt.block_on(client.audit_lines_by(7, |line| {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        paged.push(v["unmapped"]["audit_seq"].to_string());
        true
    }))
    .expect("paged export");
    // Records written after the first read (the server's own calls) may follow; the trail read
    // at once is a prefix of the paged one.
    assert_eq!(
        &paged[..whole.len()],
        &whole[..],
        "the same records in the same order"
    );
    let mut seen = std::collections::HashSet::new();
    assert!(
        paged.iter().all(|seq| seen.insert(seq.clone())),
        "none twice"
    );
}
