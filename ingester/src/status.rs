//! `GET /api/v1/status/tsdb`: Prometheus's cardinality report, per tenant, so
//! `curl …/api/v1/status/tsdb | jq '.data.seriesCountByMetricName'` works unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::push::tenant_of;
use crate::Ingester;

fn pairs(v: &[(String, u64)]) -> Value {
    Value::Array(
        v.iter()
            .map(|(n, c)| json!({"name": n, "value": c}))
            .collect(),
    )
}

pub async fn tsdb_status(
    State(ing): State<Arc<Ingester>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let bad = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "error", "errorType": "bad_data", "error": msg})),
        )
            .into_response()
    };
    let tenant = match tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if n > 0 => n,
        _ => return bad("limit must be a positive number".into()),
    };
    let data = match ing.existing_tenant(&tenant) {
        Some(t) => {
            let s = t.head.stats(limit);
            let guard: Vec<Value> = t
                .lock_write()
                .guard
                .state()
                .into_iter()
                .map(|g| {
                    json!({
                        "metric": g.metric,
                        "label": g.label,
                        "active": g.active,
                        "since": g.since_ms,
                        "refusedSeries": g.refused_series,
                    })
                })
                .collect();
            let mut v = json!({
                "headStats": {
                    "numSeries": s.num_series,
                    "numLabelPairs": s.num_label_pairs,
                    "chunkCount": s.chunk_count,
                    "minTime": if s.num_series == 0 { i64::MAX } else { s.min_time },
                    "maxTime": if s.num_series == 0 { i64::MIN } else { s.max_time },
                },
                "seriesCountByMetricName": pairs(&s.series_count_by_metric_name),
                "labelValueCountByLabelName": pairs(&s.label_value_count_by_label_name),
                "memoryInBytesByLabelName": pairs(&s.memory_in_bytes_by_label_name),
                "seriesCountByLabelValuePair": pairs(&s.series_count_by_label_value_pair),
            });
            // Strata's own field, only once the guard has acted (Prometheus's answer
            // otherwise, unchanged)
            if !guard.is_empty() {
                v["cardinalityGuard"] = Value::Array(guard);
            }
            v
        }
        None => json!({
            "headStats": {"numSeries": 0, "numLabelPairs": 0, "chunkCount": 0, "minTime": i64::MAX, "maxTime": i64::MIN},
            "seriesCountByMetricName": [],
            "labelValueCountByLabelName": [],
            "memoryInBytesByLabelName": [],
            "seriesCountByLabelValuePair": [],
        }),
    };
    Json(json!({"status": "success", "data": data})).into_response()
}
