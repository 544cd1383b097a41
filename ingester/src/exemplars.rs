//! Exemplars per tenant: remote write 1.0/2.0 exemplars of series in the head, kept in
//! a bounded circular store (`--tsdb.max-exemplars`), logged to the WAL as exemplar
//! records (replayed on start, carried into checkpoints) and answered over gRPC to the
//! querier's `/api/v1/query_exemplars`.
//!
//! As in Prometheus an exemplar needs its series in the head (it is stored after the
//! request's samples); a duplicate of a series' newest exemplar is accepted silently,
//! other refusals (out of order, label set too long, unknown series) are counted in
//! `strata_ingester_exemplars_rejected_total` and never fail the request.

use std::sync::Arc;

use clap::Args;
use strata_proto::metadata::exemplars_server::{Exemplars as ExemplarsRpc, ExemplarsServer};
use strata_proto::metadata::{ExemplarsRequest, ExemplarsResponse, SeriesExemplars};
use strata_proto::WriteRequestRef;
use strata_store::{labels_to_proto, matchers_from_proto};
use strata_tsdb::exemplars::{Exemplar, ExemplarError, RefExemplar};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use strata_tsdb::wal::Record;
use tonic::{Request, Status};

use crate::rw_extras::Extras;
use crate::Ingester;

/// Exemplar storage flags.
#[derive(Debug, Clone, Args)]
pub struct ExemplarArgs {
    /// Exemplars kept per tenant, in a circular store: when full, a new exemplar
    /// replaces the oldest. 0 disables exemplar storage (Thanos Receive's flag; its
    /// default is 0, Prometheus's storage holds 100000 once enabled, which is the
    /// default here so exemplars sent with `send_exemplars: true` show up).
    #[arg(long = "tsdb.max-exemplars", default_value_t = 100_000)]
    pub max_exemplars: usize,
}

impl Default for ExemplarArgs {
    fn default() -> Self {
        ExemplarArgs {
            max_exemplars: 100_000,
        }
    }
}

/// Exemplars a request stored, for the 2.0 `X-Prometheus-Remote-Write-Exemplars-Written`
/// answer (a response extension).
#[derive(Clone, Copy)]
pub struct ExemplarsWritten(pub usize);

/// Append the exemplars of `series` (indexes into `req`, sorted) to a forwarded
/// `WriteRequest` body as exemplar-only series (as Prometheus sends them), after the
/// samples.
pub fn encode_forwarded(
    body: &mut Vec<u8>,
    req: &WriteRequestRef<'_>,
    x: &Extras<'_>,
    series: &[usize],
) {
    use strata_proto::prometheus::{Exemplar as PExemplar, Label, TimeSeries};
    if x.exemplars.is_empty() {
        return;
    }
    let label = |(n, v): &(&str, &str)| Label {
        name: n.to_string(),
        value: v.to_string(),
    };
    let mut i = 0;
    while i < x.exemplars.len() {
        let s = x.exemplars[i].series;
        let mut j = i;
        while j < x.exemplars.len() && x.exemplars[j].series == s {
            j += 1;
        }
        if s < req.len() && series.binary_search(&s).is_ok() {
            let ts = TimeSeries {
                labels: req.series(s).0.iter().map(label).collect(),
                exemplars: x.exemplars[i..j]
                    .iter()
                    .map(|e| PExemplar {
                        labels: x.exemplar_labels(e).iter().map(label).collect(),
                        value: e.value,
                        timestamp: e.ts,
                    })
                    .collect(),
                ..Default::default()
            };
            prost::encoding::message::encode(1, &ts, body);
        }
        i = j;
    }
}

/// Store the exemplars of a request whose samples were just ingested (only those of
/// `series`, indexes into `req` sorted, when given); returns how many were stored.
/// Runs on a blocking thread.
pub fn ingest(
    ing: &Ingester,
    tenant_id: &str,
    req: &WriteRequestRef<'_>,
    x: &Extras<'_>,
    series: Option<&[usize]>,
) -> usize {
    if x.exemplars.is_empty() || ing.config.exemplars.max_exemplars == 0 {
        return 0;
    }
    let tenant = match ing.tenant(tenant_id) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(tenant = tenant_id, error = %e, "storing exemplars failed");
            return 0;
        }
    };
    let m = &ing.metrics;
    let mut w = tenant.lock_write();
    let mut store = tenant.lock_exemplars();
    let mut logged: Vec<RefExemplar> = Vec::new();
    let mut last_series: Option<(usize, Option<(u64, Labels)>)> = None;
    for e in &x.exemplars {
        if e.series >= req.len() || series.is_some_and(|s| s.binary_search(&e.series).is_err()) {
            continue;
        }
        // exemplars of one series come together: look it up once
        if last_series.as_ref().is_none_or(|(i, _)| *i != e.series) {
            let pairs = req.series(e.series).0;
            let labels = Labels::from_pairs(pairs.iter().copied());
            let found = tenant.head.get(&labels).and_then(|r| {
                // a series whose record is not in the WAL yet cannot be referred to
                (!w.series_buf.iter().any(|(p, _)| *p == r.0)).then_some((r.0, labels))
            });
            last_series = Some((e.series, found));
        }
        let Some((_, Some((r, series)))) = &last_series else {
            m.exemplars_rejected.with(&["unknown_series"]).inc();
            continue;
        };
        let ex = Exemplar {
            labels: Labels::from_pairs(x.exemplar_labels(e).iter().copied()),
            value: e.value,
            ts: e.ts,
        };
        let labels = ex.labels.clone();
        match store.add(series, ex) {
            Ok(true) => logged.push(RefExemplar {
                series: *r,
                ts: e.ts,
                value: e.value,
                labels,
            }),
            Ok(false) => {}
            Err(err) => m.exemplars_rejected.with(&[reason(&err)]).inc(),
        }
    }
    drop(store);
    if logged.is_empty() {
        return 0;
    }
    if let Err(e) = w.wal.append(&[Record::Exemplars { entries: &logged }]) {
        tracing::warn!(tenant = tenant_id, error = %e, "logging exemplars failed");
        return 0;
    }
    w.written_seq += 1;
    let seq = w.written_seq;
    drop(w);
    if ing.config.wal_fsync == crate::WalFsync::Always {
        if let Err(e) = tenant.sync_up_to(seq) {
            tracing::warn!(tenant = tenant_id, error = %e, "WAL fsync after exemplars failed");
        }
    }
    m.exemplars_appended.inc_by(logged.len() as u64);
    logged.len()
}

fn reason(e: &ExemplarError) -> &'static str {
    match e {
        ExemplarError::OutOfOrder => "out_of_order",
        ExemplarError::LabelSetTooLong => "label_set_too_long",
    }
}

/// The tenant's exemplars of series matching any of `matcher_sets` in `[start, end]`.
pub fn select(
    ing: &Ingester,
    tenant: &str,
    start: i64,
    end: i64,
    matcher_sets: &[Vec<Matcher>],
) -> Vec<(Labels, Vec<Exemplar>)> {
    match ing.existing_tenant(tenant) {
        Some(t) => t.lock_exemplars().select(start, end, matcher_sets),
        None => Vec::new(),
    }
}

/// The gRPC `Exemplars` service of an ingester.
pub struct ExemplarsService {
    ing: Arc<Ingester>,
}

impl ExemplarsService {
    pub fn new(ing: Arc<Ingester>) -> Self {
        ExemplarsService { ing }
    }

    pub fn into_server(self) -> ExemplarsServer<ExemplarsService> {
        ExemplarsServer::new(self)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(16 << 20)
    }
}

/// The answer to an [`ExemplarsRequest`] for `tenant`.
pub fn answer(
    ing: &Ingester,
    tenant: &str,
    r: &ExemplarsRequest,
) -> Result<ExemplarsResponse, Status> {
    let mut sets = Vec::with_capacity(r.matcher_sets.len());
    for s in &r.matcher_sets {
        sets.push(matchers_from_proto(&s.matchers)?);
    }
    let found = select(ing, tenant, r.start, r.end, &sets);
    Ok(ExemplarsResponse {
        series: found
            .into_iter()
            .map(|(l, exs)| SeriesExemplars {
                series_labels: labels_to_proto(&l),
                exemplars: exs
                    .into_iter()
                    .map(|e| strata_proto::prometheus::Exemplar {
                        labels: labels_to_proto(&e.labels),
                        value: e.value,
                        timestamp: e.ts,
                    })
                    .collect(),
            })
            .collect(),
    })
}

#[tonic::async_trait]
impl ExemplarsRpc for ExemplarsService {
    async fn exemplars(
        &self,
        req: Request<ExemplarsRequest>,
    ) -> Result<tonic::Response<ExemplarsResponse>, Status> {
        let tenant = strata_store::tenant_of(&req)?;
        let ing = self.ing.clone();
        let r = req.into_inner();
        let ans = tokio::task::spawn_blocking(move || answer(&ing, &tenant, &r))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(tonic::Response::new(ans))
    }
}
