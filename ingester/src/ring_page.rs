//! `GET /ingester/ring` (Mimir's path): the ring's members, zones, states, token
//! ownership and heartbeat ages — an HTML table for a person, JSON with
//! `Accept: application/json`. `GET /cluster/raft`: the raft node's view (JSON).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::Ingester;

fn not_in_cluster() -> Response {
    (
        StatusCode::NOT_FOUND,
        "this ingester is not in a cluster (no ring)\n",
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) async fn ring_page(State(ing): State<Arc<Ingester>>, headers: HeaderMap) -> Response {
    let Some(d) = ing.distributor.get() else {
        return not_in_cluster();
    };
    let node = &d.node;
    let ring = node.ring();
    let own = ring.ownership();
    let now = strata_cluster::now_ms();
    let timeout = node.config.heartbeat_timeout_ms;
    let rows: Vec<serde_json::Value> = ring
        .instances()
        .iter()
        .zip(&own)
        .map(|(m, o)| {
            let healthy = m.is_healthy(now, timeout);
            serde_json::json!({
                "id": m.id,
                "address": m.addr,
                "httpAddress": m.http_addr,
                "zone": m.zone,
                "state": m.state.to_string(),
                "healthy": healthy,
                "status": if healthy { m.state.to_string() } else { "UNHEALTHY".to_string() },
                "tokens": m.tokens.len(),
                "ownership": o * 100.0,
                "heartbeatAgeSeconds": (now - m.heartbeat_ms) as f64 / 1000.0,
                "registeredAt": m.registered_ms,
            })
        })
        .collect();
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        let body = serde_json::json!({
            "replicationFactor": d.replication_factor,
            "zoneAwareness": d.zone_awareness,
            "heartbeatTimeoutSeconds": timeout as f64 / 1000.0,
            "members": rows,
        });
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Strata ingester ring</title>\
         <style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
         .UNHEALTHY{background:#fdd}.LEAVING,.JOINING{background:#ffd}</style></head><body><h1>Ingester ring</h1>",
    );
    let _ = write!(
        html,
        "<p>Replication factor {}, zone awareness {}, heartbeat timeout {} s. This page as JSON: <code>Accept: application/json</code>.</p>\
         <table><tr><th>Instance</th><th>Zone</th><th>State</th><th>Address</th><th>Last heartbeat</th><th>Tokens</th><th>Ownership</th></tr>",
        d.replication_factor,
        if d.zone_awareness { "on" } else { "off" },
        timeout / 1000
    );
    for (m, o) in ring.instances().iter().zip(&own) {
        let healthy = m.is_healthy(now, timeout);
        let status = if healthy {
            m.state.to_string()
        } else {
            "UNHEALTHY".into()
        };
        let _ = write!(
            html,
            "<tr class=\"{status}\"><td>{}</td><td>{}</td><td>{status}</td><td>{}</td><td>{:.1} s ago</td><td>{}</td><td>{:.1}%</td></tr>",
            escape(&m.id),
            escape(&m.zone),
            escape(&m.addr),
            (now - m.heartbeat_ms) as f64 / 1000.0,
            m.tokens.len(),
            o * 100.0
        );
    }
    html.push_str("</table></body></html>\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

pub(crate) async fn raft_status(State(ing): State<Arc<Ingester>>) -> Response {
    let Some(d) = ing.distributor.get() else {
        return not_in_cluster();
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        d.node.raft_status().to_string(),
    )
        .into_response()
}
