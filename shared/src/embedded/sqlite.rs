//! SQLite (bundled, WAL) implementation of the store port. Each commit is one transaction.

use crate::audit::chain_hash;
use crate::ports::store::{
    ApprovalChange, ApprovalRecord, AuditRecord, AuditTips, ChainedAudit, Commit, GRANT_RETENTION,
    GrantEvidence, HistoryEntry, Instance, IntakeWrites, PostedMessage, StoreError, StoreRead,
    StoreWrite, Timer, TimerChange,
};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use statemachines::Agent;
use statemachines::detection::Baseline;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// How hard each commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced at every commit; a committed step survives power
    /// loss. The default: an approval or a revocation must not be forgotten.
    Fsync,
    /// `synchronous=NORMAL`: WAL without per-commit fsync; survives a process crash, may lose
    /// the last commits on power loss.
    Wal,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS workflows (
  id TEXT PRIMARY KEY, kind TEXT NOT NULL, agent_id TEXT, state_name TEXT NOT NULL,
  terminal INTEGER NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS workflows_agent ON workflows(agent_id);
CREATE INDEX IF NOT EXISTS workflows_kind_state ON workflows(kind, state_name, updated_at);
CREATE TABLE IF NOT EXISTS history (
  workflow_id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (workflow_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, updated_at TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agents_name ON agents(name);
CREATE INDEX IF NOT EXISTS agents_status ON agents(status);
CREATE INDEX IF NOT EXISTS agents_owner ON agents(lower(json_extract(body, '$.owner')));
CREATE INDEX IF NOT EXISTS agents_credential ON agents(julianday(json_extract(body, '$.credential_issued_at')))
  WHERE status = 'active';
CREATE INDEX IF NOT EXISTS agents_time_bound ON agents(id)
  WHERE status = 'active' AND json_extract(body, '$.expires_on') IS NOT NULL;
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status);
CREATE TABLE IF NOT EXISTS timers (
  workflow_id TEXT NOT NULL, name TEXT NOT NULL, due_at INTEGER NOT NULL, PRIMARY KEY (workflow_id, name)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_due ON timers(due_at);
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, day TEXT NOT NULL, time INTEGER NOT NULL,
  body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_workflow ON audit(json_extract(body, '$.metadata.correlation_uid'), seq);
CREATE TABLE IF NOT EXISTS queue (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT NOT NULL, dedupe_id TEXT NOT NULL, body TEXT NOT NULL,
  visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT);
CREATE INDEX IF NOT EXISTS queue_in_flight ON queue(group_id) WHERE receipt IS NOT NULL;
CREATE TABLE IF NOT EXISTS queue_dedupe (dedupe_id TEXT PRIMARY KEY, sent_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_dedupe_sent ON queue_dedupe(sent_at);
CREATE TABLE IF NOT EXISTS dead_letters (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, group_id TEXT NOT NULL, body TEXT NOT NULL, receive_count INTEGER NOT NULL, dead_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notifications (
  key TEXT PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, recipient TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idp_clients (
  client_id TEXT PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, name TEXT NOT NULL, scopes TEXT NOT NULL,
  token_lifetime_secs INTEGER NOT NULL, active INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idp_secrets (
  secret_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, hash TEXT NOT NULL, created_at TEXT NOT NULL,
  idempotency_key TEXT);
CREATE TABLE IF NOT EXISTS idp_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, change TEXT NOT NULL, client_id TEXT NOT NULL,
  idempotency_key TEXT NOT NULL, repeat INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idp_client_auth (
  client_id TEXT PRIMARY KEY, method TEXT NOT NULL, binding TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idp_keys (
  client_id TEXT NOT NULL, kid TEXT NOT NULL, jwk TEXT NOT NULL, active INTEGER NOT NULL, created_at TEXT NOT NULL,
  PRIMARY KEY (client_id, kid));
CREATE TABLE IF NOT EXISTS idp_client_certs (
  client_id TEXT PRIMARY KEY, x5t_s256 TEXT NOT NULL, san_uri TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idp_client_added_certs (
  client_id TEXT NOT NULL, x5t_s256 TEXT NOT NULL, san_uri TEXT NOT NULL, PRIMARY KEY (client_id, x5t_s256)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idp_jtis (jti TEXT PRIMARY KEY, exp INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workflow_groups (
  grp TEXT NOT NULL, workflow_id TEXT NOT NULL, state_name TEXT, PRIMARY KEY (grp, workflow_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scope_usage (
  client_id TEXT NOT NULL, scope TEXT NOT NULL, last_used INTEGER NOT NULL, PRIMARY KEY (client_id, scope)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS posted_messages (
  subject TEXT NOT NULL, route TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (subject, route)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS agent_clients (
  client_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, updated_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS baselines (agent_id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS personal_tokens (
  id TEXT PRIMARY KEY, person TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS personal_tokens_person ON personal_tokens(person, created_at);
CREATE TABLE IF NOT EXISTS people_passwords (
  person TEXT PRIMARY KEY, hash TEXT NOT NULL, set_at TEXT NOT NULL, failures INTEGER NOT NULL, locked_until INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS people_sign_ins (
  code_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, user_code TEXT, client_id TEXT NOT NULL, scope TEXT NOT NULL,
  redirect_uri TEXT, challenge TEXT, person TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, last_poll INTEGER) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS people_sign_ins_user_code ON people_sign_ins(user_code) WHERE user_code IS NOT NULL;
CREATE TABLE IF NOT EXISTS people_refresh (
  hash TEXT PRIMARY KEY, person TEXT NOT NULL, client_id TEXT NOT NULL, scope TEXT NOT NULL, expires_at INTEGER NOT NULL,
  used INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grants (
  event_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, at INTEGER NOT NULL, body TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS grants_client ON grants(client_id, at);
CREATE INDEX IF NOT EXISTS grants_at ON grants(at);
CREATE TABLE IF NOT EXISTS grant_hours (
  hour INTEGER PRIMARY KEY, granted INTEGER NOT NULL, refused INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dashboard_sessions (
  digest TEXT PRIMARY KEY, body TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dashboard_sign_ins (
  digest TEXT PRIMARY KEY, body TEXT NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbound_seen (
  source TEXT NOT NULL, id TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (source, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbound_seen_expiry ON inbound_seen(expires_at);
CREATE INDEX IF NOT EXISTS dashboard_sessions_expiry ON dashboard_sessions(expires_at);
CREATE INDEX IF NOT EXISTS dashboard_sign_ins_expiry ON dashboard_sign_ins(expires_at);
CREATE INDEX IF NOT EXISTS people_sign_ins_expiry ON people_sign_ins(expires_at);
"#;

// The registry's indexed reads. INDEXED BY: with the status index beside them, the planner
// would otherwise read every active agent's body (tested in `plans`).
const DUE_CREDENTIALS: &str =
    "SELECT body FROM agents INDEXED BY agents_credential WHERE status = 'active'
   AND julianday(json_extract(body, '$.credential_issued_at')) <= julianday(?1)
 ORDER BY julianday(json_extract(body, '$.credential_issued_at')), id LIMIT ?2";
const TIME_BOUND: &str =
    "SELECT body FROM agents INDEXED BY agents_time_bound WHERE status = 'active'
   AND json_extract(body, '$.expires_on') IS NOT NULL ORDER BY id";
const AGENT_COUNTS: &str = "SELECT status, count(*) FROM agents GROUP BY status";
const COUNT_WORKFLOWS: &str = "SELECT count(*) FROM workflows INDEXED BY workflows_kind_state
 WHERE kind = ?1 AND state_name = ?2 AND updated_at >= ?3";
const GROUP_STATES: &str =
    "SELECT state_name, count(*) FROM workflow_groups INDEXED BY workflow_groups_state
 WHERE grp = ?1 GROUP BY state_name";
const WORKFLOW_AUDIT: &str = "SELECT id, time, body FROM audit INDEXED BY audit_workflow
 WHERE json_extract(body, '$.metadata.correlation_uid') = ?1 ORDER BY seq DESC LIMIT ?2";

/// The database and its WAL and shared-memory files are the owner's alone (0600): they hold
/// the registry, the audit trail and the dev IdP's secret digests. SQLite creates the WAL and
/// shared-memory files with the database file's mode, so the database is created 0600, and
/// files an earlier version left readable are narrowed.
fn restrict_files(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let refuse = |p: &Path, e: std::io::Error| {
            StoreError::Backend(format!("cannot make {} private (0600): {e}", p.display()))
        };
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| refuse(path, e))?;
        }
        for suffix in ["", "-wal", "-shm"] {
            let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
            if let Ok(meta) = std::fs::metadata(&file)
                && meta.permissions().mode() & 0o077 != 0
            {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| refuse(&file, e))?;
            }
        }
    }
    Ok(())
}

/// One SQLite database shared by the embedded store, queue and development IdP.
pub struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
    durability: Durability,
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

impl Db {
    /// The rows of a `SELECT <key>, count(*) … GROUP BY <key>` as a map.
    fn counted(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(sql).map_err(backend)?;
        let rows = st
            .query_map(params, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(backend)?;
        rows.map(|r| r.map(|(s, n)| (s, n.max(0) as u64)).map_err(backend))
            .collect()
    }

    /// Agents a query selects (its one column: the body).
    fn agents_where(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Agent>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(sql).map_err(backend)?;
        let rows = st
            .query_map(params, |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode("agent", &b.map_err(backend)?))
            .collect()
    }

    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        restrict_files(path)?;
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let sync = match durability {
            Durability::Fsync => "FULL",
            Durability::Wal => "NORMAL",
        };
        conn.execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=2000; PRAGMA cache_size=-32768; PRAGMA temp_store=MEMORY;"))
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        // Databases made before secrets could be added one by one lack the key column.
        let has_key: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('idp_secrets') WHERE name='idempotency_key'")
            .and_then(|mut st| st.exists([]))
            .map_err(backend)?;
        if !has_key {
            conn.execute_batch("ALTER TABLE idp_secrets ADD COLUMN idempotency_key TEXT")
                .map_err(backend)?;
        }
        conn.execute_batch(
            "CREATE UNIQUE INDEX IF NOT EXISTS idp_secrets_key ON idp_secrets(idempotency_key)",
        )
        .map_err(backend)?;
        // Groups made before their members' states were kept beside them.
        let has_state: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('workflow_groups') WHERE name='state_name'")
            .and_then(|mut st| st.exists([]))
            .map_err(backend)?;
        if !has_state {
            conn.execute_batch(
                "ALTER TABLE workflow_groups ADD COLUMN state_name TEXT;
                 UPDATE workflow_groups SET state_name =
                   (SELECT state_name FROM workflows WHERE id = workflow_groups.workflow_id);",
            )
            .map_err(backend)?;
        }
        // A group's members by state (a campaign's progress) from one index range.
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS workflow_groups_state ON workflow_groups(grp, state_name)",
        )
        .map_err(backend)?;
        // Agents registered before the client index existed.
        conn.execute_batch(
            "INSERT OR IGNORE INTO agent_clients (client_id, agent_id, updated_at)
             SELECT json_extract(body, '$.client_id'), id, updated_at FROM agents
             WHERE json_extract(body, '$.client_id') IS NOT NULL",
        )
        .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            durability,
        })
    }

    /// Runs `f` in a transaction that does not wait for the disk (WAL frames are made durable by
    /// the next fsynced commit). Only for writes whose loss causes a harmless redelivery.
    pub(crate) fn relaxed<R>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        self.write(false, |tx| f(tx))
    }

    /// Runs `f` in one transaction, rolled back when it fails. With `wait_for_disk` the commit
    /// is as durable as the database's level; without, it is [`Db::relaxed`].
    pub(crate) fn write<R, E: From<rusqlite::Error>>(
        &self,
        wait_for_disk: bool,
        f: impl FnOnce(&mut rusqlite::Transaction) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut conn = self.lock();
        let relax = !wait_for_disk && self.durability == Durability::Fsync;
        if relax {
            conn.execute_batch("PRAGMA synchronous=NORMAL")?;
        }
        let result = (|| {
            let mut tx = conn.transaction()?;
            let r = f(&mut tx)?;
            tx.commit()?;
            Ok(r)
        })();
        if relax {
            conn.execute_batch("PRAGMA synchronous=FULL")?;
        }
        result
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. Calls are short and local, so they run inline on the async worker.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Executes a statement through the connection's statement cache: the hot paths run the same
/// few statements for every step, and compiling SQL each time cost more than running it.
pub(crate) fn exec<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// One optional row through the statement cache.
fn one<T: rusqlite::types::FromSql, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    conn.prepare_cached(sql)?.query_row(params, f).optional()
}

pub(crate) fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}
pub(crate) fn from_ts(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(what.to_string(), e.to_string()))
}
fn encode<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("records serialize")
}

pub(crate) fn write_commit(tx: &Connection, c: &Commit) -> Result<(), StoreError> {
    // Agents the step changed field by field must be as it read them.
    for read in &c.agent_reads {
        let stored: Option<String> = tx
            .query_row(
                "SELECT updated_at FROM agents WHERE id=?1",
                [&read.id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        if stored.as_deref() != Some(read.updated_at.to_rfc3339().as_str()) {
            return Err(StoreError::AgentChanged(format!("agent {}", read.id)));
        }
    }
    let i = &c.instance;
    let body = encode(i);
    let changed = if c.expected_version == 0 {
        exec(tx,
            "INSERT OR IGNORE INTO workflows (id, kind, agent_id, state_name, terminal, version, body, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)",
            params![i.id, i.kind, i.agent_id, i.state_name, i.terminal, i.version as i64, body, i.updated_at.to_rfc3339()],
        )
    } else {
        exec(tx,
            "UPDATE workflows SET state_name=?2, terminal=?3, version=?4, body=?5, updated_at=?6 WHERE id=?1 AND version=?7",
            params![i.id, i.state_name, i.terminal, i.version as i64, body, i.updated_at.to_rfc3339(), c.expected_version as i64],
        )
    }
    .map_err(backend)?;
    if changed != 1 {
        return Err(StoreError::Conflict {
            id: i.id.clone(),
            expected: c.expected_version,
        });
    }
    if let Some(group) = &i.group {
        // The member's state beside it: a group's progress is counted without reading members.
        exec(
            tx,
            "INSERT INTO workflow_groups (grp, workflow_id, state_name) VALUES (?1, ?2, ?3)
             ON CONFLICT (grp, workflow_id) DO UPDATE SET state_name = excluded.state_name",
            params![group, i.id, i.state_name],
        )
        .map_err(backend)?;
    }
    exec(
        tx,
        "INSERT INTO history (workflow_id, seq, body) VALUES (?1, ?2, ?3)",
        params![i.id, c.history.seq as i64, encode(&c.history)],
    )
    .map_err(backend)?;
    for t in &c.timers {
        match t {
            TimerChange::Set(t) => exec(tx,
                "INSERT INTO timers (workflow_id, name, due_at) VALUES (?1,?2,?3) ON CONFLICT(workflow_id, name) DO UPDATE SET due_at=excluded.due_at",
                params![t.workflow_id, t.name, ts(t.due_at)],
            ),
            TimerChange::Cancel { workflow_id, name } => exec(tx, "DELETE FROM timers WHERE workflow_id=?1 AND name=?2", params![workflow_id, name]),
        }
        .map_err(backend)?;
    }
    for a in &c.agents {
        exec(tx,
            "INSERT INTO agents (id, name, status, body, updated_at) VALUES (?1,?2,?3,?4,?5)
             ON CONFLICT(id) DO UPDATE SET name=excluded.name, status=excluded.status, body=excluded.body, updated_at=excluded.updated_at",
            params![a.id, a.name, a.status.as_str(), encode(a), a.updated_at.to_rfc3339()],
        )
        .map_err(backend)?;
        if let Some(client_id) = &a.client_id {
            exec(tx,
                "INSERT INTO agent_clients (client_id, agent_id, updated_at) VALUES (?1,?2,?3)
                 ON CONFLICT(client_id) DO UPDATE SET agent_id=excluded.agent_id, updated_at=excluded.updated_at
                 WHERE excluded.updated_at >= agent_clients.updated_at",
                params![client_id, a.id, a.updated_at.to_rfc3339()],
            )
            .map_err(backend)?;
        }
    }
    for change in &c.approvals {
        match change {
            ApprovalChange::Open(r) => {
                exec(tx,
                    "INSERT OR IGNORE INTO approvals (id, workflow_id, status, body) VALUES (?1,?2,?3,?4)",
                    params![r.request.id, r.request.workflow_id, r.status(), encode(r)],
                )
                .map_err(backend)?;
            }
            ApprovalChange::Close { id, outcome } => {
                let mut rec = approval_tx(tx, id, "approval to close does not exist")?;
                rec.outcome = Some(outcome.clone());
                save_approval_tx(tx, &rec)?;
            }
            ApprovalChange::Vote { id, vote } => {
                let mut rec = approval_tx(tx, id, "approval voted on does not exist")?;
                if !rec.request.votes.contains(vote) {
                    rec.request.votes.push(vote.clone());
                }
                save_approval_tx(tx, &rec)?;
            }
        }
    }
    append_audit_tx(tx, &c.audit)?;
    Ok(())
}

fn approval_tx(tx: &Connection, id: &str, missing: &str) -> Result<ApprovalRecord, StoreError> {
    let body: Option<String> = one(tx, "SELECT body FROM approvals WHERE id=?1", [id], |r| {
        r.get(0)
    })
    .map_err(backend)?;
    decode(
        id,
        &body.ok_or_else(|| StoreError::Corrupt(id.to_string(), missing.into()))?,
    )
}

fn save_approval_tx(tx: &Connection, rec: &ApprovalRecord) -> Result<(), StoreError> {
    exec(
        tx,
        "UPDATE approvals SET status=?2, body=?3 WHERE id=?1",
        params![rec.request.id, rec.status(), encode(rec)],
    )
    .map_err(backend)?;
    Ok(())
}

pub(crate) fn append_audit_tx(tx: &Connection, records: &[AuditRecord]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut prev: String = one(
        tx,
        "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .map_err(backend)?
    .unwrap_or_else(|| "0".repeat(64));
    for r in records {
        let hash = chain_hash(&prev, r);
        let inserted = exec(tx,
            "INSERT OR IGNORE INTO audit (id, day, time, body, prev_hash, hash) VALUES (?1,?2,?3,?4,?5,?6)",
            params![r.id, r.time.format("%Y-%m-%d").to_string(), ts(r.time), encode(&r.body), prev, hash],
        )
        .map_err(backend)?;
        // A duplicate id is ignored: the chain goes on from the last stored record.
        if inserted == 1 {
            prev = hash;
        }
    }
    Ok(())
}

#[async_trait]
impl StoreWrite for Db {
    async fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(backend)?;
        write_commit(&tx, &commit)?;
        tx.commit().map_err(backend)
    }

    async fn commit_batch(
        &self,
        commits: Vec<Commit>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut conn = self.lock();
        let mut tx = conn.transaction().map_err(backend)?;
        let mut out = Vec::with_capacity(commits.len());
        for c in &commits {
            // One savepoint per step: a conflicting step rolls back alone, the rest share one fsync.
            let sp = tx.savepoint().map_err(backend)?;
            match write_commit(&sp, c) {
                Ok(()) => {
                    sp.commit().map_err(backend)?;
                    out.push(Ok(()));
                }
                Err(e) => {
                    drop(sp); // rolls back this step only
                    out.push(Err(e));
                }
            }
        }
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    async fn remove_timer(&self, timer: &Timer) -> Result<(), StoreError> {
        self.remove_timers(std::slice::from_ref(timer)).await
    }

    async fn remove_timers(&self, timers: &[Timer]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(backend)?;
        for timer in timers {
            exec(
                &tx,
                "DELETE FROM timers WHERE workflow_id=?1 AND name=?2 AND due_at=?3",
                params![timer.workflow_id, timer.name, ts(timer.due_at)],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(backend)?;
        append_audit_tx(&tx, &records)?;
        tx.commit().map_err(backend)
    }

    async fn add_approval_message(
        &self,
        id: &str,
        message: PostedMessage,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(backend)?;
        let mut rec = approval_tx(&tx, id, "approval posted does not exist")?;
        if !rec
            .messages
            .iter()
            .any(|m| m.channel == message.channel && m.ts == message.ts)
        {
            rec.messages.push(message);
            save_approval_tx(&tx, &rec)?;
        }
        tx.commit().map_err(backend)
    }

    async fn remember_inbound(
        &self,
        source: &str,
        id: &str,
        keep: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let writes = IntakeWrites {
            seen: vec![(source.to_string(), id.to_string())],
            ..Default::default()
        };
        Ok(self.record_intake(&writes, keep).await? == [true])
    }

    async fn record_intake(
        &self,
        writes: &IntakeWrites,
        keep: std::time::Duration,
    ) -> Result<Vec<bool>, StoreError> {
        // One transaction: at the durable level, one fsync for the whole batch.
        let now = chrono::Utc::now().timestamp();
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(backend)?;
        for (client_id, scopes, at) in &writes.scope_use {
            for scope in scopes {
                exec(
                    &tx,
                    "INSERT INTO scope_usage (client_id, scope, last_used) VALUES (?1,?2,?3) ON CONFLICT(client_id, scope) DO UPDATE SET last_used=max(last_used, excluded.last_used)",
                    params![client_id, scope, ts(*at)],
                )
                .map_err(backend)?;
            }
        }
        for (agent_id, baseline) in &writes.baselines {
            exec(
                &tx,
                "INSERT INTO baselines (agent_id, body) VALUES (?1,?2) ON CONFLICT(agent_id) DO UPDATE SET body=excluded.body",
                params![agent_id, encode(baseline)],
            )
            .map_err(backend)?;
        }
        let mut new = Vec::with_capacity(writes.seen.len());
        if !writes.seen.is_empty() {
            // Expired rows go first (the TTL DynamoDB applies by itself).
            exec(
                &tx,
                "DELETE FROM inbound_seen WHERE expires_at < ?1",
                params![now],
            )
            .map_err(backend)?;
        }
        for (source, id) in &writes.seen {
            let inserted = exec(
                &tx,
                "INSERT OR IGNORE INTO inbound_seen (source, id, expires_at) VALUES (?1,?2,?3)",
                params![source, id, now + keep.as_secs() as i64],
            )
            .map_err(backend)?;
            new.push(inserted == 1);
        }
        tx.commit().map_err(backend)?;
        Ok(new)
    }

    async fn set_cursor(&self, name: &str, value: &str) -> Result<(), StoreError> {
        exec(
            &self.lock(),
            "INSERT INTO cursors (name, value) VALUES (?1,?2) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
            params![name, value],
        )
        .map_err(backend)?;
        Ok(())
    }

    async fn put_baseline(&self, agent_id: &str, baseline: &Baseline) -> Result<(), StoreError> {
        let writes = IntakeWrites {
            baselines: vec![(agent_id.to_string(), baseline.clone())],
            ..Default::default()
        };
        self.record_intake(&writes, std::time::Duration::ZERO)
            .await
            .map(|_| ())
    }

    async fn record_scope_usage(
        &self,
        client_id: &str,
        scopes: &[String],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let writes = IntakeWrites {
            scope_use: vec![(client_id.to_string(), scopes.to_vec(), at)],
            ..Default::default()
        };
        self.record_intake(&writes, std::time::Duration::ZERO)
            .await
            .map(|_| ())
    }

    async fn record_grants(&self, grants: &[GrantEvidence]) -> Result<(), StoreError> {
        if grants.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(backend)?;
        for g in grants {
            let inserted = exec(
                &tx,
                "INSERT OR IGNORE INTO grants (event_id, client_id, at, body) VALUES (?1,?2,?3,?4)",
                params![g.event_id, g.client_id, ts(g.at), encode(g)],
            )
            .map_err(backend)?;
            // The hour's counters, for the dashboard's 24-hour chart: a repeat counts once.
            if inserted == 1 {
                exec(
                    &tx,
                    "INSERT INTO grant_hours (hour, granted, refused) VALUES (?1, ?2, ?3)
                     ON CONFLICT(hour) DO UPDATE SET granted = granted + excluded.granted, refused = refused + excluded.refused",
                    params![ts(g.at).div_euclid(3_600_000), i64::from(g.success), i64::from(!g.success)],
                )
                .map_err(backend)?;
            }
        }
        // The retention window, a bounded slice at a time (the index on `at` finds it).
        let cutoff = ts(Utc::now()) - GRANT_RETENTION.as_millis() as i64;
        exec(
            &tx,
            "DELETE FROM grants WHERE event_id IN (SELECT event_id FROM grants WHERE at < ?1 LIMIT 1000)",
            params![cutoff],
        )
        .map_err(backend)?;
        exec(
            &tx,
            "DELETE FROM grant_hours WHERE hour < ?1",
            params![cutoff.div_euclid(3_600_000)],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    async fn put_message(&self, subject: &str, message: PostedMessage) -> Result<(), StoreError> {
        exec(
            &self.lock(),
            "INSERT INTO posted_messages (subject, route, body) VALUES (?1,?2,?3) ON CONFLICT(subject, route) DO UPDATE SET body=excluded.body",
            params![subject, message.route, encode(&message)],
        )
        .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl StoreRead for Db {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        let body: Option<String> = one(
            &self.lock(),
            "SELECT body FROM workflows WHERE id=?1",
            [id],
            |r| r.get(0),
        )
        .map_err(backend)?;
        body.map(|b| decode(id, &b)).transpose()
    }

    async fn history(&self, workflow_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT body FROM history WHERE workflow_id=?1 ORDER BY seq")
            .map_err(backend)?;
        let rows = st
            .query_map([workflow_id], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode(workflow_id, &b.map_err(backend)?))
            .collect()
    }

    async fn instances_for_agent(&self, agent_id: &str) -> Result<Vec<Instance>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT body FROM workflows WHERE agent_id=?1 ORDER BY rowid")
            .map_err(backend)?;
        let rows = st
            .query_map([agent_id], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode(agent_id, &b.map_err(backend)?))
            .collect()
    }

    async fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
        let body: Option<String> = one(
            &self.lock(),
            "SELECT body FROM agents WHERE id=?1",
            [id],
            |r| r.get(0),
        )
        .map_err(backend)?;
        body.map(|b| decode(id, &b)).transpose()
    }

    async fn agent_by_name(&self, name: &str) -> Result<Option<Agent>, StoreError> {
        // The newest record with that name (an earlier denied request may share it).
        let body: Option<String> = one(
            &self.lock(),
            "SELECT body FROM agents WHERE name=?1 ORDER BY updated_at DESC LIMIT 1",
            [name],
            |r| r.get(0),
        )
        .map_err(backend)?;
        body.map(|b| decode(name, &b)).transpose()
    }

    async fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT body FROM agents ORDER BY name")
            .map_err(backend)?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode("agent", &b.map_err(backend)?))
            .collect()
    }

    async fn agents_owned_by(&self, owner: &str) -> Result<Vec<Agent>, StoreError> {
        self.agents_where(
            "SELECT body FROM agents WHERE lower(json_extract(body, '$.owner')) = lower(?1) ORDER BY id",
            params![owner.trim()],
        )
    }

    async fn agents_with_credentials_before(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        self.agents_where(DUE_CREDENTIALS, params![cutoff.to_rfc3339(), limit as i64])
    }

    async fn time_bound_agents(&self) -> Result<Vec<Agent>, StoreError> {
        self.agents_where(TIME_BOUND, params![])
    }

    async fn agents_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        self.agents_where(
            "SELECT body FROM agents WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after.unwrap_or(""), limit as i64],
        )
    }

    async fn agents_ordered(
        &self,
        order: crate::ports::store::AgentOrder,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<Agent>, StoreError> {
        use crate::ports::store::AgentOrder;
        // Each order reads its index from the cursor on (row values: key, then id).
        let key = match order {
            AgentOrder::Id => "id",
            AgentOrder::Name => "name",
            AgentOrder::Status => "status",
            // The expression of the `agents_owner` index, so that the index gives the order.
            AgentOrder::Owner => "lower(json_extract(body, '$.owner'))",
        };
        let (k, id) = after.unwrap_or(("", ""));
        let sql = format!(
            "SELECT body FROM agents WHERE {key} >= ?1 AND ({key} > ?1 OR id > ?2) ORDER BY {key}, id LIMIT ?3"
        );
        self.agents_where(&sql, params![k, id, limit as i64])
    }

    async fn agent_counts(
        &self,
    ) -> Result<Option<std::collections::BTreeMap<String, u64>>, StoreError> {
        self.counted(AGENT_COUNTS, []).map(Some)
    }

    async fn count_workflows(
        &self,
        kind: &str,
        state: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(COUNT_WORKFLOWS).map_err(backend)?;
        let n: i64 = st
            .query_row(params![kind, state, since.to_rfc3339()], |r| r.get(0))
            .map_err(backend)?;
        Ok(Some(n.max(0) as u64))
    }

    async fn group_states(
        &self,
        group: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, u64>>, StoreError> {
        self.counted(GROUP_STATES, [group]).map(Some)
    }

    async fn grants_per_hour(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<(DateTime<Utc>, u64, u64)>>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT hour, granted, refused FROM grant_hours WHERE hour >= ?1 ORDER BY hour",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([ts(since).div_euclid(3_600_000)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(backend)?;
        let hours = rows
            .map(|r| {
                r.map(|(h, ok, no)| (from_ts(h * 3_600_000), ok.max(0) as u64, no.max(0) as u64))
                    .map_err(backend)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(hours))
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StoreError> {
        let body: Option<String> = one(
            &self.lock(),
            "SELECT body FROM approvals WHERE id=?1",
            [id],
            |r| r.get(0),
        )
        .map_err(backend)?;
        body.map(|b| decode(id, &b)).transpose()
    }

    async fn approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>, StoreError> {
        let conn = self.lock();
        let sql = if pending_only {
            "SELECT body FROM approvals WHERE status='pending' ORDER BY rowid"
        } else {
            "SELECT body FROM approvals ORDER BY rowid"
        };
        let mut st = conn.prepare_cached(sql).map_err(backend)?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode("approval", &b.map_err(backend)?))
            .collect()
    }

    async fn due_timers(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached("SELECT workflow_id, name, due_at FROM timers WHERE due_at <= ?1 ORDER BY due_at LIMIT ?2").map_err(backend)?;
        let rows = st
            .query_map(params![ts(now), limit as i64], |r| {
                Ok(Timer {
                    workflow_id: r.get(0)?,
                    name: r.get(1)?,
                    due_at: from_ts(r.get(2)?),
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)
    }

    async fn workflow_audit(
        &self,
        workflow_id: &str,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(WORKFLOW_AUDIT).map_err(backend)?;
        let rows = st
            .query_map(params![workflow_id, limit as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, time, body) = row.map_err(backend)?;
            out.push(AuditRecord {
                body: decode(&id, &body)?,
                id,
                time: from_ts(time),
            });
        }
        Ok(out)
    }

    async fn audit_tips(&self) -> Result<AuditTips, StoreError> {
        let conn = self.lock();
        let last: Option<(i64, String)> = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        // One chain (0): one writer appends in commit order.
        Ok(match last {
            Some((seq, hash)) => AuditTips {
                through: seq as u64,
                chains: [(0, hash)].into(),
            },
            None => AuditTips::default(),
        })
    }

    async fn audit(&self, after_seq: u64, limit: usize) -> Result<Vec<ChainedAudit>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached("SELECT seq, id, time, body, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2").map_err(backend)?;
        let rows = st
            .query_map(params![after_seq as i64, limit as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, id, time, body, prev_hash, hash) = row.map_err(backend)?;
            out.push(ChainedAudit {
                chain: 0,
                seq: seq as u64,
                record: AuditRecord {
                    body: decode(&id, &body)?,
                    id,
                    time: from_ts(time),
                },
                prev_hash,
                hash,
            });
        }
        Ok(out)
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        one(
            &self.lock(),
            "SELECT value FROM cursors WHERE name=?1",
            [name],
            |r| r.get(0),
        )
        .map_err(backend)
    }

    async fn instances_in_group(&self, group: &str) -> Result<Vec<Instance>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT w.body FROM workflow_groups g JOIN workflows w ON w.id = g.workflow_id WHERE g.grp=?1 ORDER BY g.workflow_id",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([group], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode(group, &b.map_err(backend)?)).collect()
    }

    async fn grants(
        &self,
        client_id: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<GrantEvidence>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT body FROM grants WHERE client_id=?1 AND at >= ?2 ORDER BY at, event_id LIMIT ?3",
            )
            .map_err(backend)?;
        let rows = st
            .query_map(params![client_id, ts(since), limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend)?;
        rows.map(|r| {
            let body = r.map_err(backend)?;
            serde_json::from_str(&body)
                .map_err(|e| StoreError::Corrupt(format!("grant of {client_id}"), e.to_string()))
        })
        .collect()
    }

    async fn scope_usage(
        &self,
        client_id: &str,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT scope, last_used FROM scope_usage WHERE client_id=?1 ORDER BY scope",
            )
            .map_err(backend)?;
        let rows = st
            .query_map([client_id], |r| {
                Ok((r.get::<_, String>(0)?, from_ts(r.get::<_, i64>(1)?)))
            })
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)).collect()
    }

    async fn agent_by_client(&self, client_id: &str) -> Result<Option<Agent>, StoreError> {
        let id: Option<String> = one(
            &self.lock(),
            "SELECT agent_id FROM agent_clients WHERE client_id=?1",
            [client_id],
            |r| r.get(0),
        )
        .map_err(backend)?;
        match id {
            Some(id) => self.agent(&id).await,
            None => Ok(None),
        }
    }

    async fn baseline(&self, agent_id: &str) -> Result<Option<Baseline>, StoreError> {
        let body: Option<String> = one(
            &self.lock(),
            "SELECT body FROM baselines WHERE agent_id=?1",
            [agent_id],
            |r| r.get(0),
        )
        .map_err(backend)?;
        body.map(|b| decode(&format!("baseline {agent_id}"), &b))
            .transpose()
    }

    async fn messages(&self, subject: &str) -> Result<Vec<PostedMessage>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT body FROM posted_messages WHERE subject=?1 ORDER BY route")
            .map_err(backend)?;
        let rows = st
            .query_map([subject], |r| r.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|b| decode(subject, &b.map_err(backend)?))
            .collect()
    }
}

#[async_trait]
impl crate::ports::PersonalTokens for Db {
    async fn put_token(
        &self,
        token: &crate::ports::personal_tokens::PersonalToken,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(token).map_err(backend)?;
        let inserted = exec(
            &self.lock(),
            "INSERT OR IGNORE INTO personal_tokens (id, person, body, created_at) VALUES (?1,?2,?3,?4)",
            params![token.id, token.person, body, token.created_at.to_rfc3339()],
        )
        .map_err(backend)?;
        if inserted == 0 {
            return Err(StoreError::Backend(format!(
                "personal token {} exists already",
                token.id
            )));
        }
        Ok(())
    }

    async fn token(
        &self,
        id: &str,
    ) -> Result<Option<crate::ports::personal_tokens::PersonalToken>, StoreError> {
        let body: Option<String> = self
            .lock()
            .query_row("SELECT body FROM personal_tokens WHERE id=?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        body.map(|b| {
            serde_json::from_str(&b)
                .map_err(|e| StoreError::Corrupt(format!("personal token {id}"), e.to_string()))
        })
        .transpose()
    }

    async fn tokens_of(
        &self,
        person: &str,
    ) -> Result<Vec<crate::ports::personal_tokens::PersonalToken>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached(
            "SELECT id, body FROM personal_tokens WHERE person=?1 ORDER BY created_at, id",
        )?;
        let rows: Vec<(String, String)> = st
            .query_map([person], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(id, b)| {
                serde_json::from_str(&b)
                    .map_err(|e| StoreError::Corrupt(format!("personal token {id}"), e.to_string()))
            })
            .collect()
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(mut token) = crate::ports::PersonalTokens::token(self, id).await? else {
            return Ok(false);
        };
        if token.revoked_at.is_none() {
            token.revoked_at = Some(at);
            let body = serde_json::to_string(&token).map_err(backend)?;
            exec(
                &self.lock(),
                "UPDATE personal_tokens SET body=?2 WHERE id=?1",
                params![id, body],
            )
            .map_err(backend)?;
        }
        Ok(true)
    }
}

/// The dashboard's sessions and sign-ins in progress; expired rows are removed as new ones are
/// written (each table stays as small as the sessions alive).
#[async_trait]
impl crate::ports::Sessions for Db {
    async fn put_session(
        &self,
        session: &crate::ports::sessions::Session,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(session).map_err(backend)?;
        let conn = self.lock();
        exec(
            &conn,
            "DELETE FROM dashboard_sessions WHERE expires_at <= ?1",
            [session.created_at.timestamp()],
        )
        .map_err(backend)?;
        let inserted = exec(
            &conn,
            "INSERT OR IGNORE INTO dashboard_sessions (digest, body, expires_at) VALUES (?1,?2,?3)",
            params![session.digest, body, session.expires_at.timestamp()],
        )
        .map_err(backend)?;
        if inserted == 0 {
            return Err(StoreError::Backend("the session exists already".into()));
        }
        Ok(())
    }

    async fn session(
        &self,
        digest: &str,
    ) -> Result<Option<crate::ports::sessions::Session>, StoreError> {
        let body: Option<String> = self
            .lock()
            .query_row(
                "SELECT body FROM dashboard_sessions WHERE digest=?1",
                [digest],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| {
            serde_json::from_str(&b)
                .map_err(|e| StoreError::Corrupt("a dashboard session".into(), e.to_string()))
        })
        .transpose()
    }

    async fn touch_session(&self, digest: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(mut session) = crate::ports::Sessions::session(self, digest).await? else {
            return Ok(false);
        };
        session.seen_at = at;
        let body = serde_json::to_string(&session).map_err(backend)?;
        let n = exec(
            &self.lock(),
            "UPDATE dashboard_sessions SET body=?2 WHERE digest=?1",
            params![digest, body],
        )
        .map_err(backend)?;
        Ok(n == 1)
    }

    async fn end_session(&self, digest: &str) -> Result<(), StoreError> {
        exec(
            &self.lock(),
            "DELETE FROM dashboard_sessions WHERE digest=?1",
            [digest],
        )
        .map_err(backend)?;
        Ok(())
    }

    async fn put_sign_in(
        &self,
        pending: &crate::ports::sessions::PendingSignIn,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(pending).map_err(backend)?;
        let conn = self.lock();
        exec(
            &conn,
            "DELETE FROM dashboard_sign_ins WHERE expires_at <= ?1",
            [Utc::now().timestamp()],
        )
        .map_err(backend)?;
        let inserted = exec(
            &conn,
            "INSERT OR IGNORE INTO dashboard_sign_ins (digest, body, expires_at) VALUES (?1,?2,?3)",
            params![pending.digest, body, pending.expires_at.timestamp()],
        )
        .map_err(backend)?;
        if inserted == 0 {
            return Err(StoreError::Backend("the sign-in exists already".into()));
        }
        Ok(())
    }

    async fn take_sign_in(
        &self,
        digest: &str,
    ) -> Result<Option<crate::ports::sessions::PendingSignIn>, StoreError> {
        let body: Option<String> = self
            .lock()
            .query_row(
                "DELETE FROM dashboard_sign_ins WHERE digest=?1 RETURNING body",
                [digest],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| {
            serde_json::from_str(&b)
                .map_err(|e| StoreError::Corrupt("a dashboard sign-in".into(), e.to_string()))
        })
        .transpose()
    }
}

#[cfg(test)]
mod plans {
    use super::*;

    /// The query plan of `sql` (its `detail` lines).
    fn plan(db: &Db, sql: &str) -> String {
        let conn = db.lock();
        let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = st.query_map([], |r| r.get::<_, String>(3)).unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    /// The registry's hot reads stay on their indexes: a new index beside them must not make
    /// the planner read every active agent's body (the sweep over 100,000 agents would).
    #[test]
    fn the_registry_reads_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("steward.db"), Durability::Wal).unwrap();
        let due = plan(
            &db,
            &DUE_CREDENTIALS
                .replace("?1", "'2026-01-01'")
                .replace("?2", "10"),
        );
        assert!(
            due.contains("agents_credential") && !due.contains("TEMP B-TREE"),
            "{due}"
        );
        let bound = plan(&db, TIME_BOUND);
        assert!(bound.contains("agents_time_bound"), "{bound}");
        let counts = plan(&db, AGENT_COUNTS);
        assert!(counts.contains("COVERING INDEX agents_status"), "{counts}");
        for key in [
            "id",
            "name",
            "status",
            "lower(json_extract(body, '$.owner'))",
        ] {
            let page = plan(
                &db,
                &format!(
                    "SELECT body FROM agents WHERE {key} >= 'a' AND ({key} > 'a' OR id > 'b') ORDER BY {key}, id LIMIT 50"
                ),
            );
            // A search from the cursor: page 500 reads no more than page 1.
            assert!(
                page.starts_with("SEARCH agents") && !page.contains("TEMP B-TREE"),
                "{key}: {page}"
            );
        }
        let count = plan(
            &db,
            &COUNT_WORKFLOWS
                .replace("?1", "'rotation'")
                .replace("?2", "'Failed'")
                .replace("?3", "'2026-01-01'"),
        );
        assert!(
            count.contains("COVERING INDEX workflows_kind_state"),
            "{count}"
        );
        let group = plan(&db, &GROUP_STATES.replace("?1", "'campaign-q4'"));
        assert!(
            group.contains("COVERING INDEX workflow_groups_state")
                && !group.contains("TEMP B-TREE"),
            "{group}"
        );
        // The expired rows each insert clears are found on an index, not by reading the table
        // (an intake of thousands of grants an hour would otherwise scan a week of them).
        for table in [
            "inbound_seen",
            "dashboard_sessions",
            "dashboard_sign_ins",
            "people_sign_ins",
        ] {
            let delete = plan(&db, &format!("DELETE FROM {table} WHERE expires_at < 5"));
            assert!(
                delete.contains(&format!("{table}_expiry")),
                "{table}: {delete}"
            );
        }
        let audit = plan(
            &db,
            &WORKFLOW_AUDIT.replace("?1", "'wf-1'").replace("?2", "10"),
        );
        assert!(
            audit.contains("audit_workflow") && !audit.contains("TEMP B-TREE"),
            "{audit}"
        );
    }
}

#[cfg(test)]
mod upgrades {
    use super::*;
    use crate::ports::store::StoreRead;

    /// A database whose groups were made before the members' states were kept beside them
    /// counts its campaigns' progress once opened by this version.
    #[tokio::test]
    async fn groups_made_before_states_were_kept_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE workflow_groups (grp TEXT NOT NULL, workflow_id TEXT NOT NULL,
                   PRIMARY KEY (grp, workflow_id)) WITHOUT ROWID;
                 CREATE TABLE workflows (id TEXT PRIMARY KEY, kind TEXT NOT NULL, agent_id TEXT,
                   state_name TEXT NOT NULL, terminal INTEGER NOT NULL, version INTEGER NOT NULL,
                   body TEXT NOT NULL, updated_at TEXT NOT NULL);
                 INSERT INTO workflows VALUES
                   ('item-1', 'review_item', NULL, 'Open', 0, 1, '{}', '2026-01-01T00:00:00+00:00'),
                   ('item-2', 'review_item', NULL, 'Closed', 1, 3, '{}', '2026-01-01T00:00:00+00:00');
                 INSERT INTO workflow_groups VALUES ('q1', 'item-1'), ('q1', 'item-2');",
            )
            .unwrap();
        let db = Db::open(&path, Durability::Wal).unwrap();
        let states = db.group_states("q1").await.unwrap().unwrap();
        assert_eq!(states.get("Open"), Some(&1), "{states:?}");
        assert_eq!(states.get("Closed"), Some(&1), "{states:?}");
    }
}

#[cfg(all(test, unix))]
mod files {
    use super::*;
    use crate::ports::store::StoreWrite;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// The database, its WAL and its shared memory are 0600, new or left readable by an earlier
    /// version.
    #[tokio::test]
    async fn the_database_files_are_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("steward.db");
        let db = Db::open(&path, Durability::Wal).unwrap();
        db.set_cursor("c", "v").await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let _db = Db::open(&path, Durability::Wal).unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}
