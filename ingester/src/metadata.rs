//! Metric metadata (type, help, unit per metric family) per tenant: taken from remote
//! write 1.0 `metadata` and 2.0 per-series `Metadata`, bounded, kept on disk in
//! `tenants/<tenant>/metadata.json`, and answered as Prometheus's `/api/v1/metadata`
//! (on the ingester's HTTP port and over gRPC to the querier).
//!
//! A file rather than WAL records: metadata is a small map where the last word wins,
//! Prometheus sends all of it again every `send_interval`, and it changes rarely. The
//! file is rewritten (atomically) only when an entry is added or removed, so the steady
//! state costs a lookup per entry and no I/O, and block cuts need not carry it forward
//! in WAL checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clap::Args;
use serde::{Deserialize, Serialize};
use strata_proto::metadata::metadata_server::{Metadata as MetadataRpc, MetadataServer};
use strata_proto::metadata::{MetricFamily, MetricMetadataRequest, MetricMetadataResponse};
use tonic::{Request, Status};

use crate::rw_extras::MetaRef;
use crate::{Error, Ingester, Result};

const FILE: &str = "metadata.json";

/// Metadata limits (Cortex's ingester flag names).
#[derive(Debug, Clone, Args)]
pub struct MetadataArgs {
    /// Metric families with metadata kept per tenant; metadata of further families is
    /// dropped (counted in `strata_ingester_metadata_dropped_total`). 0: no limit.
    #[arg(long = "ingester.max-metadata-per-user", default_value_t = 10_000)]
    pub max_per_user: usize,
    /// Distinct metadata (type, help, unit) kept per metric family; the least recently
    /// received goes first. 0: no limit.
    #[arg(long = "ingester.max-metadata-per-metric", default_value_t = 10)]
    pub max_per_metric: usize,
    /// Metadata not received again for this long is forgotten (Mimir's
    /// `-ingester.metadata-retain-period`): a family's old help text goes once the
    /// sender only sends the new one.
    #[arg(long = "ingester.metadata-retain-period", default_value = "10m", value_parser = strata_kit::parse_duration_ms)]
    pub retain_period_ms: i64,
}

impl Default for MetadataArgs {
    fn default() -> Self {
        MetadataArgs {
            max_per_user: 10_000,
            max_per_metric: 10,
            retain_period_ms: 600_000,
        }
    }
}

/// One entry as Prometheus's API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Meta {
    #[serde(rename = "type")]
    pub kind: String,
    pub help: String,
    pub unit: String,
}

/// Prometheus's name of a metadata type number (remote write 1.0 and 2.0 share them).
pub fn type_name(kind: u64) -> &'static str {
    match kind {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

#[derive(Debug)]
struct Variant {
    meta: Meta,
    seen: Instant,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    families: BTreeMap<String, Vec<Meta>>,
}

/// One tenant's metadata.
#[derive(Debug)]
pub struct TenantMetadata {
    path: PathBuf,
    families: Mutex<HashMap<String, Vec<Variant>>>,
    /// Serialises file writes (outside the map's lock) so the newest state lands last.
    write: Mutex<()>,
}

/// What [`TenantMetadata::add`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub stored: usize,
    pub dropped: usize,
}

impl TenantMetadata {
    /// Load `dir/metadata.json` (none: empty). Entries read count as just received.
    pub fn open(dir: &Path) -> Result<TenantMetadata> {
        let path = dir.join(FILE);
        let mut families = HashMap::new();
        match std::fs::read(&path) {
            Ok(b) => {
                let d: OnDisk = serde_json::from_slice(&b)
                    .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
                let now = Instant::now();
                for (name, metas) in d.families {
                    let v = metas
                        .into_iter()
                        .map(|meta| Variant { meta, seen: now })
                        .collect();
                    families.insert(name, v);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        Ok(TenantMetadata {
            path,
            families: Mutex::new(families),
            write: Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Variant>>> {
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record `entries` (received now); the file is rewritten when anything changed.
    pub fn add(&self, entries: &[MetaRef<'_>], limits: &MetadataArgs) -> Result<Added> {
        let now = Instant::now();
        let mut out = Added::default();
        let mut changed = false;
        {
            let mut g = self.lock();
            changed |= prune(&mut g, now, limits);
            for e in entries {
                if e.family.is_empty() {
                    out.dropped += 1;
                    continue;
                }
                let kind = type_name(e.kind);
                if !g.contains_key(e.family) {
                    if limits.max_per_user > 0 && g.len() >= limits.max_per_user {
                        out.dropped += 1;
                        continue;
                    }
                    g.insert(e.family.to_string(), Vec::new());
                }
                let vs = g.get_mut(e.family).expect("inserted above");
                match vs
                    .iter_mut()
                    .find(|v| v.meta.kind == kind && v.meta.help == e.help && v.meta.unit == e.unit)
                {
                    Some(v) => v.seen = now,
                    None => {
                        if limits.max_per_metric > 0 && vs.len() >= limits.max_per_metric {
                            // the least recently received variant makes room
                            if let Some(i) = (0..vs.len()).min_by_key(|&i| vs[i].seen) {
                                vs.remove(i);
                            }
                        }
                        vs.push(Variant {
                            meta: Meta {
                                kind: kind.to_string(),
                                help: e.help.to_string(),
                                unit: e.unit.to_string(),
                            },
                            seen: now,
                        });
                        changed = true;
                    }
                }
                out.stored += 1;
            }
        }
        if changed {
            self.save()?;
        }
        Ok(out)
    }

    fn save(&self) -> Result<()> {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let d = OnDisk {
            version: 1,
            families: self.snapshot(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let data = serde_json::to_vec(&d).expect("metadata serialises");
        std::fs::write(&tmp, data).map_err(|e| Error::io(&tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(())
    }

    fn snapshot(&self) -> BTreeMap<String, Vec<Meta>> {
        self.lock()
            .iter()
            .map(|(k, v)| {
                let mut m: Vec<Meta> = v.iter().map(|v| v.meta.clone()).collect();
                m.sort();
                (k.clone(), m)
            })
            .collect()
    }

    /// The answer to `/api/v1/metadata`: families sorted by name, `metric` alone when
    /// set, at most `limit` families (negative: all; 0: none, as Prometheus) and
    /// `limit_per_metric` entries each (0 or negative: all).
    pub fn query(
        &self,
        metric: &str,
        limit: i64,
        limit_per_metric: i64,
        limits: &MetadataArgs,
    ) -> BTreeMap<String, Vec<Meta>> {
        {
            let mut g = self.lock();
            prune(&mut g, Instant::now(), limits);
        }
        let mut all = self.snapshot();
        if !metric.is_empty() {
            all.retain(|k, _| k == metric);
        }
        let take = if limit < 0 {
            usize::MAX
        } else {
            limit as usize
        };
        all.into_iter()
            .take(take)
            .map(|(k, mut v)| {
                if limit_per_metric > 0 {
                    v.truncate(limit_per_metric as usize);
                }
                (k, v)
            })
            .collect()
    }
}

/// Forget variants not received within the retain period; true if any went.
fn prune(g: &mut HashMap<String, Vec<Variant>>, now: Instant, limits: &MetadataArgs) -> bool {
    if limits.retain_period_ms <= 0 {
        return false;
    }
    let keep = Duration::from_millis(limits.retain_period_ms as u64);
    let before: usize = g.values().map(Vec::len).sum();
    g.retain(|_, vs| {
        vs.retain(|v| now.duration_since(v.seen) <= keep);
        !vs.is_empty()
    });
    g.values().map(Vec::len).sum::<usize>() != before
}

/// Merge answers of several sources (ingesters): union per family, sorted, then the
/// limits applied as one source would.
pub fn merge(
    parts: impl IntoIterator<Item = BTreeMap<String, Vec<Meta>>>,
    limit: i64,
    limit_per_metric: i64,
) -> BTreeMap<String, Vec<Meta>> {
    let mut all: BTreeMap<String, std::collections::BTreeSet<Meta>> = BTreeMap::new();
    for p in parts {
        for (k, v) in p {
            all.entry(k).or_default().extend(v);
        }
    }
    let take = if limit < 0 {
        usize::MAX
    } else {
        limit as usize
    };
    all.into_iter()
        .take(take)
        .map(|(k, v)| {
            let mut v: Vec<Meta> = v.into_iter().collect();
            if limit_per_metric > 0 {
                v.truncate(limit_per_metric as usize);
            }
            (k, v)
        })
        .collect()
}

/// Store a request's metadata for `tenant` (on the ingester that received it: the
/// querier asks every ingester, so where it lands does not matter).
pub fn ingest(ing: &Ingester, tenant: &str, entries: &[MetaRef<'_>]) {
    if entries.is_empty() {
        return;
    }
    let r = ing
        .tenant(tenant)
        .and_then(|t| t.metadata.add(entries, &ing.config.metadata));
    match r {
        Ok(a) => {
            ing.metrics.metadata_received.inc_by(a.stored as u64);
            ing.metrics.metadata_dropped.inc_by(a.dropped as u64);
        }
        Err(e) => tracing::warn!(tenant, error = %e, "storing metric metadata failed"),
    }
}

/// The tenant's answer (empty for a tenant never seen).
pub fn query(
    ing: &Ingester,
    tenant: &str,
    metric: &str,
    limit: i64,
    limit_per_metric: i64,
) -> BTreeMap<String, Vec<Meta>> {
    match ing.existing_tenant(tenant) {
        Some(t) => t
            .metadata
            .query(metric, limit, limit_per_metric, &ing.config.metadata),
        None => BTreeMap::new(),
    }
}

/// `limit` / `limit_per_metric` as Prometheus reads them: absent is -1, anything not an
/// integer is a 400 naming the parameter.
pub fn int_param(params: &[(String, String)], name: &str) -> Result<i64, String> {
    match params.iter().rev().find(|(k, _)| k == name) {
        None => Ok(-1),
        Some((_, v)) if v.is_empty() => Ok(-1),
        Some((_, v)) => v
            .parse::<i64>()
            .map_err(|_| format!("{name} must be a number")),
    }
}

pub(crate) fn api_error(status: StatusCode, kind: &str, msg: &str) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": kind, "error": msg});
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn api_ok(data: serde_json::Value) -> Response {
    let body = serde_json::json!({"status": "success", "data": data});
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    url_pairs(raw.unwrap_or(""))
}

fn url_pairs(s: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str(s).unwrap_or_default()
}

/// `GET /api/v1/metadata` on the ingester: this ingester's metadata of the tenant.
pub async fn http_metadata(
    State(ing): State<Arc<Ingester>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let tenant = match crate::push::tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_data", &e),
    };
    let params = query_pairs(raw.as_deref());
    let (limit, per) = match (
        int_param(&params, "limit"),
        int_param(&params, "limit_per_metric"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return api_error(StatusCode::BAD_REQUEST, "bad_data", &e),
    };
    let metric = params
        .iter()
        .rev()
        .find(|(k, _)| k == "metric")
        .map_or("", |(_, v)| v.as_str());
    let ans = query(&ing, &tenant, metric, limit, per);
    api_ok(serde_json::to_value(ans).expect("metadata serialises"))
}

/// The gRPC `Metadata` service of an ingester.
pub struct MetadataService {
    ing: Arc<Ingester>,
}

impl MetadataService {
    pub fn new(ing: Arc<Ingester>) -> Self {
        MetadataService { ing }
    }

    pub fn into_server(self) -> MetadataServer<MetadataService> {
        MetadataServer::new(self)
    }
}

#[tonic::async_trait]
impl MetadataRpc for MetadataService {
    async fn metric_metadata(
        &self,
        req: Request<MetricMetadataRequest>,
    ) -> Result<tonic::Response<MetricMetadataResponse>, Status> {
        let tenant = strata_store::tenant_of(&req)?;
        let r = req.into_inner();
        let ans = query(&self.ing, &tenant, &r.metric, r.limit, r.limit_per_metric);
        Ok(tonic::Response::new(to_proto(ans)))
    }
}

pub fn to_proto(m: BTreeMap<String, Vec<Meta>>) -> MetricMetadataResponse {
    MetricMetadataResponse {
        families: m
            .into_iter()
            .map(|(name, v)| MetricFamily {
                name,
                metadata: v
                    .into_iter()
                    .map(|m| strata_proto::metadata::Meta {
                        r#type: m.kind,
                        help: m.help,
                        unit: m.unit,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m<'a>(family: &'a str, kind: u64, help: &'a str) -> MetaRef<'a> {
        MetaRef {
            family,
            kind,
            help,
            unit: "",
        }
    }

    #[test]
    fn bounded_persisted_and_queried_as_prometheus() {
        let dir = tempfile::tempdir().unwrap();
        let limits = MetadataArgs {
            max_per_user: 2,
            max_per_metric: 2,
            retain_period_ms: 600_000,
        };
        let t = TenantMetadata::open(dir.path()).unwrap();
        let a = t
            .add(
                &[
                    m("a", 1, "A."),
                    m("b", 2, "B."),
                    m("c", 2, "C."),
                    m("", 0, ""),
                ],
                &limits,
            )
            .unwrap();
        assert_eq!(
            a,
            Added {
                stored: 2,
                dropped: 2
            }
        );
        t.add(&[m("a", 1, "A2."), m("a", 1, "A3.")], &limits)
            .unwrap();
        let q = t.query("", -1, -1, &limits);
        assert_eq!(q.len(), 2);
        assert_eq!(q["a"].len(), 2, "oldest variant evicted: {q:?}");
        assert!(q["a"].iter().all(|v| v.help != "A."));
        assert_eq!(q["b"][0].kind, "gauge");
        assert_eq!(t.query("b", -1, -1, &limits).len(), 1);
        assert_eq!(t.query("", 0, -1, &limits).len(), 0);
        assert_eq!(t.query("", 1, -1, &limits).len(), 1);
        assert_eq!(t.query("", -1, 1, &limits)["a"].len(), 1);
        // survives a restart
        let again = TenantMetadata::open(dir.path()).unwrap();
        assert_eq!(again.query("", -1, -1, &limits), q);
        let json = serde_json::to_string(&again.query("b", -1, -1, &limits)).unwrap();
        assert_eq!(json, r#"{"b":[{"type":"gauge","help":"B.","unit":""}]}"#);
    }

    #[test]
    fn params() {
        let p = url_pairs("limit=2&metric=a%5Fb&limit_per_metric=x");
        assert_eq!(int_param(&p, "limit"), Ok(2));
        assert_eq!(
            int_param(&p, "limit_per_metric"),
            Err("limit_per_metric must be a number".into())
        );
        assert_eq!(p[1].1, "a_b");
        assert_eq!(int_param(&p, "other"), Ok(-1));
    }
}
