//! What the querier reads, for the web UI and scripts:
//!
//! * `GET /api/v1/stores` (Thanos's shape): every Store API endpoint the querier reads
//!   (`--endpoint`s and healthy ring members), asked for `Info` now, grouped by component
//!   type (`receive`, `sidecar`, `store`, …), each with `name`, `lastCheck`, `lastError`,
//!   `labelSets`, `minTime`, `maxTime`; Strata adds the bucket under `bucket` and says
//!   whether an endpoint came from the ring (`ring: true`).
//! * `GET /api/v1/blocks` (Thanos's bucket web shape): `{"blocks":[meta.json…],"label":…,
//!   "refreshedAt":…,"err":null}`: the blocks of the tenant the request names, every
//!   tenant's without a tenant header; each `meta.json` object gains `tenant`,
//!   `deletionMark` and `noCompactMark`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{InfoRequest, StoreType};

use super::{ok, tenant_of, ApiError};
use crate::Querier;

/// How long one endpoint may take to answer `Info` before it is reported unhealthy.
const INFO_TIMEOUT: Duration = Duration::from_secs(3);

fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    strata_kit::date::format_rfc3339_ms(ms)
}

/// Thanos's component name for a store type.
fn component(t: i32) -> &'static str {
    match StoreType::try_from(t).unwrap_or(StoreType::Unknown) {
        StoreType::Query => "query",
        StoreType::Rule => "rule",
        StoreType::Sidecar => "sidecar",
        StoreType::Store => "store",
        StoreType::Receive => "receive",
        StoreType::Debug => "debug",
        StoreType::Unknown => "unknown",
    }
}

/// Ask one endpoint for `Info`: its component type and status entry.
async fn endpoint_status(addr: String, tenant: String, ring: bool) -> (&'static str, Value) {
    let last_check = now_rfc3339();
    let asked = async {
        let ch = strata_kit::grpc_tls::endpoint(&addr)
            .map_err(|e| e.to_string())?
            .connect_timeout(INFO_TIMEOUT)
            .connect_lazy();
        let mut req = tonic::Request::new(InfoRequest {});
        if let Ok(v) = tenant.parse() {
            req.metadata_mut().insert("x-scope-orgid", v);
        }
        match tokio::time::timeout(INFO_TIMEOUT, StoreClient::new(ch).info(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(s.message().to_string()),
            Err(_) => Err(format!("Info timed out after {INFO_TIMEOUT:?}")),
        }
    };
    match asked.await {
        Ok(info) => {
            let label_sets: Vec<Value> = info
                .label_sets
                .iter()
                .map(|s| {
                    let m: BTreeMap<&str, &str> = s
                        .labels
                        .iter()
                        .map(|l| (l.name.as_str(), l.value.as_str()))
                        .collect();
                    json!(m)
                })
                .collect();
            (
                component(info.store_type),
                json!({
                    "name": addr, "lastCheck": last_check, "lastError": null,
                    "labelSets": label_sets, "minTime": info.min_time,
                    "maxTime": info.max_time, "ring": ring,
                }),
            )
        }
        // Thanos lists an endpoint it cannot reach with its error and no data.
        Err(e) => (
            "unknown",
            json!({
                "name": addr, "lastCheck": last_check, "lastError": e,
                "labelSets": [], "minTime": 0, "maxTime": 0, "ring": ring,
            }),
        ),
    }
}

/// The tenants of a bucket: `<tenant>/<ULID>/` directories, and `""` for a Thanos
/// bucket with blocks at the root.
async fn tenants(b: &strata_objstore::Bucket) -> Result<Vec<String>, String> {
    let mut t: Vec<String> = b
        .list_dirs("")
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|d| d.parse::<ulid::Ulid>().is_err())
        .collect();
    t.insert(0, String::new());
    Ok(t)
}

/// Every block of the bucket (or of `only` tenant): `meta.json` plus tenant and marks.
async fn list_blocks(
    b: &strata_objstore::Bucket,
    only: Option<&str>,
) -> Result<Vec<Value>, String> {
    let tenants = match only {
        Some(t) => vec![t.to_string()],
        None => tenants(b).await?,
    };
    let mut out = Vec::new();
    for tenant in tenants {
        for blk in b.list_blocks(&tenant).await.map_err(|e| e.to_string())? {
            let mut v: Value = match serde_json::from_slice(&blk.meta_json) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    tracing::warn!(tenant = %tenant, block = %blk.ulid, "unreadable meta.json; not listed");
                    continue;
                }
            };
            v["tenant"] = json!(tenant);
            v["deletionMark"] = json!(blk.deletion_marked);
            v["noCompactMark"] = json!(blk.no_compact_marked);
            out.push(v);
        }
    }
    Ok(out)
}

pub(super) async fn stores(State(q): State<Arc<Querier>>, headers: HeaderMap) -> Response {
    let tenant = match tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let mut addrs: Vec<(String, bool)> = q
        .sources
        .endpoints
        .iter()
        .map(|e| (e.addr().to_string(), false))
        .collect();
    if let Some(ring) = &q.sources.ring {
        for m in ring.current().0 {
            match addrs.iter_mut().find(|(a, _)| a == m.addr()) {
                Some(slot) => slot.1 = true,
                None => addrs.push((m.addr().to_string(), true)),
            }
        }
    }
    let asks = addrs
        .into_iter()
        .map(|(a, ring)| endpoint_status(a, tenant.clone(), ring));
    let mut data: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (kind, v) in futures::future::join_all(asks).await {
        data.entry(kind).or_default().push(v);
    }
    if let Some(b) = &q.sources.bucket {
        let last_check = now_rfc3339();
        let entry = match list_blocks(b.bucket(), Some(&tenant)).await {
            Ok(blocks) => {
                let live = blocks.iter().filter(|m| m["deletionMark"] != json!(true));
                let (mut min, mut max) = (i64::MAX, i64::MIN);
                let mut sets: Vec<Value> = Vec::new();
                for m in live {
                    min = min.min(m["minTime"].as_i64().unwrap_or(i64::MAX));
                    max = max.max(m["maxTime"].as_i64().unwrap_or(i64::MIN));
                    let l = m["thanos"]["labels"].clone();
                    if !sets.contains(&l) {
                        sets.push(l);
                    }
                }
                if min > max {
                    (min, max) = (0, 0);
                }
                json!({"name": "bucket", "lastCheck": last_check, "lastError": null,
                       "labelSets": sets, "minTime": min, "maxTime": max, "blocks": blocks.len()})
            }
            Err(e) => json!({"name": "bucket", "lastCheck": last_check, "lastError": e,
                             "labelSets": [], "minTime": 0, "maxTime": 0}),
        };
        data.entry("bucket").or_default().push(entry);
    }
    ok(&json!(data).to_string(), &[])
}

/// A request that names a tenant (`X-Scope-OrgID`, `THANOS-TENANT`) sees only that
/// tenant's blocks; one without a tenant header (an operator, the web UI) sees every
/// tenant's, as Thanos's bucket web does. Behind a gateway that sets the header, no
/// tenant lists another's.
pub(super) async fn blocks(State(q): State<Arc<Querier>>, headers: HeaderMap) -> Response {
    let named = strata_kit::tenant::TENANT_HEADERS
        .iter()
        .any(|h| headers.contains_key(*h));
    let only = match named.then(|| tenant_of(&headers)).transpose() {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let Some(b) = &q.sources.bucket else {
        return ApiError {
            error_type: "not_found",
            status: 404,
            message: "this querier reads no bucket (no --objstore.config-file)".into(),
        }
        .into_response();
    };
    let refreshed = now_rfc3339();
    let (blocks, err) = match list_blocks(b.bucket(), only.as_deref()).await {
        Ok(v) => (v, Value::Null),
        Err(e) => (Vec::new(), json!(e)),
    };
    let data = json!({"blocks": blocks, "label": "", "refreshedAt": refreshed, "err": err});
    ok(&data.to_string(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_objstore::{Bucket, DELETION_MARK, NO_COMPACT_MARK};
    use strata_tsdb::meta::BlockMeta;

    #[tokio::test]
    async fn blocks_of_every_tenant_with_marks() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bucket::filesystem(dir.path()).unwrap();
        let put = |path: String, data: Vec<u8>| {
            let b = b.clone();
            async move { b.put(&path, data.into()).await.unwrap() }
        };
        let (x, y, root) = (ulid::Ulid::new(), ulid::Ulid::new(), ulid::Ulid::new());
        put(
            format!("team-a/{x}/meta.json"),
            BlockMeta::new(x, 0, 1000).to_json(),
        )
        .await;
        put(format!("team-a/{x}/{NO_COMPACT_MARK}"), b"{}".to_vec()).await;
        put(
            format!("team-b/{y}/meta.json"),
            BlockMeta::new(y, 5, 10).to_json(),
        )
        .await;
        put(format!("team-b/{y}/{DELETION_MARK}"), b"{}".to_vec()).await;
        // Thanos's layout: a block at the root belongs to no tenant.
        put(
            format!("{root}/meta.json"),
            BlockMeta::new(root, 1, 2).to_json(),
        )
        .await;
        let mut got = list_blocks(&b, None).await.unwrap();
        got.sort_by_key(|m| m["tenant"].as_str().unwrap().to_string());
        let summary: Vec<(String, String, bool, bool, i64)> = got
            .iter()
            .map(|m| {
                (
                    m["tenant"].as_str().unwrap().to_string(),
                    m["ulid"].as_str().unwrap().to_string(),
                    m["deletionMark"].as_bool().unwrap(),
                    m["noCompactMark"].as_bool().unwrap(),
                    m["maxTime"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (String::new(), root.to_string(), false, false, 2),
                ("team-a".into(), x.to_string(), false, true, 1000),
                ("team-b".into(), y.to_string(), true, false, 10),
            ]
        );
        let only_b = list_blocks(&b, Some("team-b")).await.unwrap();
        assert_eq!(only_b.len(), 1);
    }

    #[test]
    fn component_names_are_thanos() {
        assert_eq!(component(StoreType::Receive as i32), "receive");
        assert_eq!(component(StoreType::Sidecar as i32), "sidecar");
        assert_eq!(component(StoreType::Store as i32), "store");
        assert_eq!(component(99), "unknown");
    }
}
