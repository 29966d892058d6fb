//! The audit log (SPEC §7.3): every mutation and every token reveal, hash-chained per
//! organization. Event `n` stores `hash = SHA-256(prev_hash || canonical JSON)`, where
//! `prev_hash` is event `n-1`'s hash (32 zero bytes for the first). The organization row
//! keeps the head hash and the count, so deleting the newest events is detected too.

use mcp_tunnel_pki::crypto;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{ControlError, ControlStore, ListParams, Page, Result, page_of};
use crate::db::Tx;
use crate::ids;
use crate::time::{now_ms, rfc3339_ms};

/// One audit event as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub organization_id: String,
    pub chain_index: i64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub source: String,
    pub reason: Option<String>,
    pub details: serde_json::Value,
    /// Lowercase hex.
    pub prev_hash: String,
    pub hash: String,
}

/// What goes into the hash: every field of the event, in this order.
#[derive(Serialize)]
struct Canonical<'a> {
    id: &'a str,
    organization_id: &'a str,
    chain_index: i64,
    time_ms: i64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    source: &'a str,
    reason: Option<&'a str>,
    details: &'a str,
}

fn chain_hash(prev: &[u8], c: &Canonical<'_>) -> [u8; 32] {
    let mut buf = prev.to_vec();
    // Serialising a struct of strings and integers cannot fail.
    buf.extend_from_slice(&serde_json::to_vec(c).unwrap_or_default());
    crypto::sha256(&buf)
}

/// The result of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    pub valid: bool,
    pub events: u64,
    /// The first problem found, naming the event.
    pub error: Option<String>,
}

/// Input of one event.
#[derive(Debug)]
pub(crate) struct NewEvent<'a> {
    pub actor: &'a super::Actor,
    pub action: &'a str,
    pub target: &'a str,
    pub reason: Option<&'a str>,
    pub details: serde_json::Value,
}

/// Appends an event inside the caller's write transaction.
pub(crate) async fn append(tx: &mut Tx, ev: NewEvent<'_>) -> Result<()> {
    let org = &ev.actor.org_id;
    let row = sqlx::query("SELECT audit_head, audit_count FROM organizations WHERE id = $1")
        .bind(org.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ControlError::Corrupt(format!("organization {org} missing")))?;
    let prev: Vec<u8> = row.try_get("audit_head")?;
    let index: i64 = row.try_get("audit_count")?;
    let id = ids::new_id("aevt");
    let time_ms = now_ms();
    let details = serde_json::to_string(&ev.details).unwrap_or_else(|_| "{}".into());
    let c = Canonical {
        id: &id,
        organization_id: org,
        chain_index: index,
        time_ms,
        actor: &ev.actor.name,
        action: ev.action,
        target: ev.target,
        source: &ev.actor.source,
        reason: ev.reason,
        details: &details,
    };
    let hash = chain_hash(&prev, &c);
    sqlx::query(
        "INSERT INTO audit_events (id, org_id, chain_index, time, actor, action, target, source, \
         reason, details, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
    )
    .bind(id.as_str())
    .bind(org.as_str())
    .bind(index)
    .bind(time_ms)
    .bind(ev.actor.name.as_str())
    .bind(ev.action)
    .bind(ev.target)
    .bind(ev.actor.source.as_str())
    .bind(ev.reason)
    .bind(details.as_str())
    .bind(prev)
    .bind(hash.to_vec())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE organizations SET audit_head = $1, audit_count = $2 WHERE id = $3")
        .bind(hash.to_vec())
        .bind(index + 1)
        .bind(org.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn event_from_row(r: &AnyRow) -> Result<AuditEvent> {
    let details: String = r.try_get("details")?;
    let time_ms: i64 = r.try_get("time")?;
    Ok(AuditEvent {
        kind: "audit_event".into(),
        id: r.try_get("id")?,
        organization_id: r.try_get("org_id")?,
        chain_index: r.try_get("chain_index")?,
        time: rfc3339_ms(time_ms),
        time_ms,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        source: r.try_get("source")?,
        reason: r.try_get("reason")?,
        details: serde_json::from_str(&details)
            .map_err(|e| ControlError::Corrupt(format!("audit details: {e}")))?,
        prev_hash: hex::encode(r.try_get::<Vec<u8>, _>("prev_hash")?),
        hash: hex::encode(r.try_get::<Vec<u8>, _>("hash")?),
    })
}

/// Checks one event against the previous hash; returns its own hash.
fn check_event(ev: &AuditEvent, expected_index: i64, prev: &[u8]) -> Result<Vec<u8>, String> {
    if ev.chain_index != expected_index {
        return Err(format!(
            "event {} has chain index {}, expected {expected_index}: an event was deleted or reordered",
            ev.id, ev.chain_index
        ));
    }
    if ev.prev_hash != hex::encode(prev) {
        return Err(format!(
            "event {} (index {}) does not link to the previous event: an event was deleted or altered",
            ev.id, ev.chain_index
        ));
    }
    // The stored text of `details` is serde_json's canonical form of the value.
    let details = serde_json::to_string(&ev.details).unwrap_or_default();
    let c = Canonical {
        id: &ev.id,
        organization_id: &ev.organization_id,
        chain_index: ev.chain_index,
        time_ms: ev.time_ms,
        actor: &ev.actor,
        action: &ev.action,
        target: &ev.target,
        source: &ev.source,
        reason: ev.reason.as_deref(),
        details: &details,
    };
    let hash = chain_hash(prev, &c);
    if hex::encode(hash) != ev.hash {
        return Err(format!(
            "event {} (index {}) was altered: its content does not match its hash",
            ev.id, ev.chain_index
        ));
    }
    Ok(hash.to_vec())
}

/// Verifies events given oldest first (e.g. a JSONL export), for one organization.
/// `head` is the expected final hash and count, when known.
pub fn verify_events<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    head: Option<(&[u8], i64)>,
) -> AuditVerification {
    let mut prev = vec![0u8; 32];
    let mut n: i64 = 0;
    for ev in events {
        match check_event(ev, n, &prev) {
            Ok(h) => prev = h,
            Err(e) => {
                return AuditVerification {
                    valid: false,
                    events: n as u64,
                    error: Some(e),
                };
            }
        }
        n += 1;
    }
    if let Some((head_hash, count)) = head
        && (count != n || head_hash != prev.as_slice())
    {
        return AuditVerification {
            valid: false,
            events: n as u64,
            error: Some(format!(
                "the log ends after {n} events but the organization records {count}: \
                 the newest events were deleted or altered"
            )),
        };
    }
    AuditVerification {
        valid: true,
        events: n as u64,
        error: None,
    }
}

/// Verifies a JSONL export (one event per line, oldest first).
pub fn verify_jsonl(text: &str) -> AuditVerification {
    let mut events = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<AuditEvent>(line) {
            Ok(ev) => events.push(ev),
            Err(e) => {
                return AuditVerification {
                    valid: false,
                    events: events.len() as u64,
                    error: Some(format!("line {}: not an audit event: {e}", i + 1)),
                };
            }
        }
    }
    verify_events(&events, None)
}

/// Narrows an audit listing: each present field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// `tunnel.` matches every tunnel action; `tunnel.create` only that one.
    pub action_prefix: Option<String>,
    /// Substring of the actor, e.g. `alice@` or `api_key:`.
    pub actor: Option<String>,
    /// Exact target id.
    pub target: Option<String>,
}

/// `s` as a LIKE pattern matching itself literally (escape character `\`).
fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl ControlStore {
    /// Events matching `filter`, newest first.
    pub async fn search_audit_events(
        &self,
        org_id: &str,
        filter: &AuditFilter,
        params: &ListParams,
    ) -> Result<Page<AuditEvent>> {
        let (limit, before) = params.bounds()?;
        let some = |o: &Option<String>| o.as_deref().filter(|s| !s.is_empty()).map(like_literal);
        let action = some(&filter.action_prefix).map(|a| format!("{a}%"));
        let actor = some(&filter.actor).map(|a| format!("%{a}%"));
        let target = filter.target.clone().filter(|t| !t.is_empty());
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE org_id = $1 AND seq < $2 \
             AND ($3 = 0 OR action LIKE $4 ESCAPE '\\') \
             AND ($5 = 0 OR actor LIKE $6 ESCAPE '\\') \
             AND ($7 = 0 OR target = $8) ORDER BY seq DESC LIMIT $9",
        )
        .bind(org_id)
        .bind(before)
        .bind(i64::from(action.is_some()))
        .bind(action.unwrap_or_default())
        .bind(i64::from(actor.is_some()))
        .bind(actor.unwrap_or_default())
        .bind(i64::from(target.is_some()))
        .bind(target.unwrap_or_default())
        .bind(limit + 1)
        .fetch_all(&self.db().pool)
        .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, event_from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(page_of(rows, limit))
    }

    /// Events of the organization, newest first.
    pub async fn list_audit_events(
        &self,
        org_id: &str,
        params: &ListParams,
    ) -> Result<Page<AuditEvent>> {
        let (limit, before) = params.bounds()?;
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE org_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(org_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.db().pool)
        .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, event_from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(page_of(rows, limit))
    }

    /// Every event of the organization, oldest first.
    pub async fn export_audit_events(&self, org_id: &str) -> Result<Vec<AuditEvent>> {
        let rows =
            sqlx::query("SELECT * FROM audit_events WHERE org_id = $1 ORDER BY chain_index ASC")
                .bind(org_id)
                .fetch_all(&self.db().pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Recomputes the organization's chain from the database.
    pub async fn verify_audit_chain(&self, org_id: &str) -> Result<AuditVerification> {
        let events = self.export_audit_events(org_id).await?;
        let row = sqlx::query("SELECT audit_head, audit_count FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or_else(|| ControlError::NotFound {
                kind: "organization",
                id: org_id.into(),
            })?;
        let head: Vec<u8> = row.try_get("audit_head")?;
        let count: i64 = row.try_get("audit_count")?;
        Ok(verify_events(&events, Some((&head, count))))
    }
}
