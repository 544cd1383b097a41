//! Remote write: `POST /api/v1/push` (Mimir) and `POST /api/v1/receive` (Thanos).
//!
//! Status codes follow Prometheus's retry rules: 5xx and 429 are retried by the sender,
//! other 4xx are dropped. So anything a retry cannot fix (bad encoding, invalid series,
//! limits on cardinality, out-of-order samples) is a 400 naming the first offender, and
//! the valid part of the same request is stored all the same.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use strata_proto::prometheus::WriteRequest;
use strata_proto::WriteRequestRef;
use strata_tsdb::head::{check_sample, AppendError, HeadSeriesRef, SeriesWithLast};
use strata_tsdb::histogram::is_custom_buckets;
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{MatchOp, Matcher};
use strata_tsdb::wal::{Record, RefFloatHistogram, RefHistogram};

use crate::exemplars::ExemplarsWritten;
use crate::histograms::HistSample;
use crate::rw_extras::Extras;
use crate::validate::{validate_known_labels, validate_labels, SeriesError};
use crate::Ingester;

/// The tenant of a request: `X-Scope-OrgID` (Mimir), else `THANOS-TENANT`, else
/// `anonymous`; the rule every server shares.
pub fn tenant_of(headers: &HeaderMap) -> Result<String, String> {
    Ok(strata_kit::tenant::tenant_from_headers(headers)?)
}

pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    (status, m).into_response()
}

/// Which remote write protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    V1,
    V2,
}

/// The protocol from `Content-Type`: none, or `application/x-protobuf` without `proto`
/// or with `proto=prometheus.WriteRequest`, is 1.0; `proto=io.prometheus.write.v2.Request`
/// is 2.0. Anything else is a 415, as the 2.0 spec asks, so the sender can fall back.
fn protocol(headers: &HeaderMap) -> Result<Protocol, String> {
    let Some(raw) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Ok(Protocol::V1);
    };
    let unsupported = |ct: &str| {
        format!(
            "unsupported Content-Type {ct:?}: Prometheus remote write 1.0 (application/x-protobuf;proto=prometheus.WriteRequest) and 2.0 (application/x-protobuf;proto=io.prometheus.write.v2.Request) are supported"
        )
    };
    let ct = raw.to_str().map_err(|_| unsupported("(not text)"))?;
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/x-protobuf") {
        return Err(unsupported(ct));
    }
    let mut proto = Protocol::V1;
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        if k.trim().eq_ignore_ascii_case("proto") {
            proto = match v.trim().trim_matches('"') {
                "prometheus.WriteRequest" => Protocol::V1,
                "io.prometheus.write.v2.Request" => Protocol::V2,
                _ => return Err(unsupported(ct)),
            };
        }
    }
    Ok(proto)
}

pub async fn push(State(ing): State<Arc<Ingester>>, headers: HeaderMap, body: Body) -> Response {
    // The whole request, reading its body included, counts against the push timeout.
    let timeout_ms = ing.config.limits.push_timeout_ms;
    let deadline = (timeout_ms > 0)
        .then(|| Instant::now() + std::time::Duration::from_millis(timeout_ms as u64));
    let timed_out = || {
        ing.metrics.rejected_requests.with(&["timeout"]).inc();
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            push_timeout_message(timeout_ms),
        )
    };
    let tenant = match tenant_of(&headers) {
        Ok(t) => t,
        Err(e) => {
            ing.metrics.rejected_requests.with(&["bad_tenant"]).inc();
            return text(StatusCode::BAD_REQUEST, e);
        }
    };
    let proto = match protocol(&headers) {
        Ok(p) => p,
        Err(msg) => {
            ing.metrics
                .rejected_requests
                .with(&["bad_content_type"])
                .inc();
            return text(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg);
        }
    };
    let limit = ing.config.limits.max_recv_msg_size;
    let too_large = || {
        ing.metrics.rejected_requests.with(&["too_large"]).inc();
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the incoming push request has been rejected because its message size is larger than the allowed limit of {limit} bytes (err-mimir-distributor-max-write-message-size); raise the limit with --distributor.max-recv-msg-size"
            ),
        )
    };
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let body = match within(deadline, axum::body::to_bytes(body, limit)).await {
        None => return timed_out(),
        Some(Ok(b)) => b,
        Some(Err(_)) => return too_large(),
    };
    if let Some(enc) = headers.get("content-encoding") {
        if !enc.as_bytes().eq_ignore_ascii_case(b"snappy") {
            ing.metrics.rejected_requests.with(&["bad_encoding"]).inc();
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content encoding {enc:?}: remote write is snappy-compressed"),
            );
        }
    }
    let ing2 = ing.clone();
    let work = tokio::task::spawn_blocking(move || {
        decode_and_ingest(&ing2, &tenant, &body, limit, deadline, proto)
    });
    // On time-out the blocking work stops by itself at its next deadline check, before
    // it logs anything; if it is already past its last check it completes, and the
    // client's retry finds its samples as duplicates (accepted, not stored twice).
    match within(deadline, work).await {
        None => timed_out(),
        Some(Ok(r)) => {
            if r.extensions().get::<TimedOut>().is_some() {
                ing.metrics.rejected_requests.with(&["timeout"]).inc();
            }
            r
        }
        Some(Err(e)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("push failed: {e}"),
        ),
    }
}

/// Marks a response the push timeout ended inside the blocking work (counted by the
/// handler, which counts its own time-outs too: one count per request).
#[derive(Clone, Copy)]
struct TimedOut;

/// `fut`, or `None` if `deadline` passes first.
async fn within<F: std::future::Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        None => Some(fut.await),
        Some(d) => tokio::time::timeout_at(d.into(), fut).await.ok(),
    }
}

fn push_timeout_message(timeout_ms: i64) -> String {
    format!(
        "the push request did not complete within {} (--distributor.push-timeout); nothing of it was stored that a retry would not store again",
        strata_kit::format_duration_ms(timeout_ms)
    )
}

/// Decompressed bodies up to this size keep their buffer for the thread's next request.
const KEEP_BUF: usize = 8 << 20;

thread_local! {
    static DECODE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decompress and decode (borrowing label strings from the decompressed buffer), then
/// [`ingest_ref`]. Runs on a blocking thread.
fn decode_and_ingest(
    ing: &Ingester,
    tenant: &str,
    body: &[u8],
    limit: usize,
    deadline: Option<Instant>,
    proto: Protocol,
) -> Response {
    let bad_body = |e: strata_proto::DecodeError| {
        ing.metrics.rejected_requests.with(&["bad_body"]).inc();
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        text(
            status,
            format!("failed to decode the remote write request: {e}"),
        )
    };
    let done = |res: crate::Result<Outcome>| match res {
        Ok(outcome) => outcome.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "push failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("push failed: {e}"),
            )
        }
    };
    let want_exemplars = ing.config.exemplars.max_exemplars > 0;
    DECODE_BUF.with(|cell| {
        let mut buf = cell.take();
        let resp = match strata_proto::decompress_snappy_into(body, limit, &mut buf) {
            Err(e) => bad_body(e),
            Ok(()) if proto == Protocol::V2 => match strata_proto::decode_write_v2_ref(&buf) {
                Ok((req, counted)) => {
                    let extras = if counted.exemplars + counted.metadata > 0 {
                        crate::rw_extras::scan_v2(&buf, want_exemplars)
                    } else {
                        Extras::default()
                    };
                    // 2.0 answers say what was written: the local ingest counts it; a
                    // distributed 2xx wrote every sample and histogram; exemplars as
                    // the local ingest stored.
                    let written = std::cell::Cell::new(None);
                    let done = |res: crate::Result<Outcome>| {
                        written.set(
                            res.as_ref()
                                .ok()
                                .map(|o| (o.accepted_samples, o.accepted_histograms)),
                        );
                        done(res)
                    };
                    let mut resp = ingest_ha(ing, tenant, &req, deadline, &extras, done);
                    let exemplars = resp
                        .extensions()
                        .get::<ExemplarsWritten>()
                        .map_or(0, |e| e.0);
                    let samples = written.get().or(resp
                        .status()
                        .is_success()
                        .then(|| (req.num_samples(), req.num_histograms())));
                    if let Some((n, hists)) = samples {
                        let h = resp.headers_mut();
                        for (k, v) in [
                            ("x-prometheus-remote-write-samples-written", n),
                            ("x-prometheus-remote-write-histograms-written", hists),
                            ("x-prometheus-remote-write-exemplars-written", exemplars),
                        ] {
                            h.insert(k, v.into());
                        }
                    }
                    resp
                }
                Err(e) => bad_body(e),
            },
            Ok(()) => match strata_proto::decode_write_request_ref(&buf) {
                Ok(req) => {
                    let extras = scan_v1_if_any(&req, &buf, want_exemplars);
                    ingest_ha(ing, tenant, &req, deadline, &extras, done)
                }
                Err(strata_proto::DecodeError::Unsupported) => {
                    match <WriteRequest as strata_proto::Message>::decode(buf.as_slice()) {
                        Ok(req) => {
                            let req = WriteRequestRef::from_owned(&req);
                            let extras = scan_v1_if_any(&req, &buf, want_exemplars);
                            ingest_ha(ing, tenant, &req, deadline, &extras, done)
                        }
                        Err(e) => bad_body(strata_proto::DecodeError::Protobuf(e)),
                    }
                }
                Err(e) => bad_body(e),
            },
        };
        if buf.capacity() <= KEEP_BUF {
            cell.replace(buf);
        }
        resp
    })
}

/// A 1.0 body's metadata and exemplars, looked for only when its decode counted some.
fn scan_v1_if_any<'a>(req: &WriteRequestRef<'_>, raw: &'a [u8], exemplars: bool) -> Extras<'a> {
    if req.num_extras() == 0 {
        return Extras::default();
    }
    crate::rw_extras::scan_v1(raw, exemplars)
}

/// [`ingest_ref`] behind the HA tracker: a non-elected replica's request is answered
/// 202 and dropped (Mimir's answer), an elected one is stored without its replica label.
fn ingest_ha(
    ing: &Ingester,
    tenant: &str,
    req: &WriteRequestRef<'_>,
    deadline: Option<Instant>,
    extras: &Extras<'_>,
    done: impl FnOnce(crate::Result<Outcome>) -> Response,
) -> Response {
    let decision = match req.iter().next() {
        Some((first, _)) => ing
            .ha
            .check(tenant, first.iter().copied(), std::time::Instant::now()),
        None => crate::ha::Decision::NotHa,
    };
    match decision {
        crate::ha::Decision::NotHa => store(ing, tenant, req, deadline, extras, done),
        crate::ha::Decision::Accept { changed } => {
            if changed {
                ing.metrics.ha_elected_changes.inc();
            }
            let stripped = req.without_label(&ing.ha.args.replica_label);
            store(ing, tenant, &stripped, deadline, extras, done)
        }
        crate::ha::Decision::Unavailable(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("HA tracker: could not reach the cluster's KV to elect a replica: {e}"),
        ),
        crate::ha::Decision::Reject { replica, elected } => {
            ing.metrics
                .ha_deduped_samples
                .inc_by(req.num_samples() as u64);
            text(
                StatusCode::ACCEPTED,
                format!("replicas did not match, rejecting sample: replica={replica}, elected={elected}"),
            )
        }
    }
}

/// Store a request: on the owners of each series when this ingester is in a ring
/// (it acts as the distributor), else here.
///
/// In a ring the forwards are bounded by `--distributor.remote-timeout` and the whole
/// request by the push handler's timeout.
fn store(
    ing: &Ingester,
    tenant: &str,
    req: &WriteRequestRef<'_>,
    deadline: Option<Instant>,
    extras: &Extras<'_>,
    done: impl FnOnce(crate::Result<Outcome>) -> Response,
) -> Response {
    // Metadata stays on the ingester that received it (the querier asks them all).
    crate::metadata::ingest(ing, tenant, &extras.metadata);
    match ing.distributor.get() {
        Some(d) => d.distribute(ing, tenant, req, extras),
        None => {
            let res = ingest_ref_until(ing, tenant, req, deadline);
            // after the samples: an exemplar needs its series in the head
            let written = match &res {
                Ok(o) if o.timed_out.is_none() => {
                    crate::exemplars::ingest(ing, tenant, req, extras, None)
                }
                _ => 0,
            };
            let mut resp = done(res);
            resp.extensions_mut().insert(ExemplarsWritten(written));
            resp
        }
    }
}

/// Store an uncompressed remote write 1.0 body (OTLP translates into one) as a push
/// would. Besides the answer: when samples were refused for reasons a retry cannot fix
/// (the rest stored), how many and the first reason.
pub(crate) fn ingest_v1_raw(
    ing: &Ingester,
    tenant: &str,
    raw: &[u8],
    deadline: Option<Instant>,
) -> (Response, Option<(usize, String)>) {
    let req = match strata_proto::decode_write_request_ref(raw) {
        Ok(r) => r,
        Err(e) => {
            return (
                text(StatusCode::BAD_REQUEST, format!("translated request: {e}")),
                None,
            )
        }
    };
    let extras = scan_v1_if_any(&req, raw, ing.config.exemplars.max_exemplars > 0);
    let refused = std::cell::RefCell::new(None);
    let done = |res: crate::Result<Outcome>| match res {
        Ok(o) => {
            if o.timed_out.is_none() && o.rate_limited.is_none() {
                if let Some(first) = &o.first_error {
                    let n: usize = o.rejected.values().map(|v| v.0).sum();
                    *refused.borrow_mut() = Some((n, first.clone()));
                }
            }
            o.into_response()
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("push failed: {e}"),
        ),
    };
    let resp = ingest_ha(ing, tenant, &req, deadline, &extras, done);
    (resp, refused.into_inner())
}

/// What happened to a request that was read and decoded.
#[derive(Debug, Default)]
pub struct Outcome {
    pub series: usize,
    /// Float and histogram samples received.
    pub samples: usize,
    /// Float samples stored (or already there).
    pub accepted_samples: usize,
    /// Native histogram samples stored (or already there).
    pub accepted_histograms: usize,
    pub rate_limited: Option<String>,
    /// Rejected series/samples by reason, with the first message for each.
    pub rejected: BTreeMap<&'static str, (usize, String)>,
    pub first_error: Option<String>,
    /// The push timeout passed before anything was logged: nothing was stored.
    pub timed_out: Option<String>,
}

impl Outcome {
    fn reject(&mut self, err: &SeriesError, labels: &dyn std::fmt::Display, n: usize) {
        let e = self
            .rejected
            .entry(err.reason())
            .or_insert_with(|| (0, String::new()));
        e.0 += n;
        if e.1.is_empty() {
            e.1 = format!("{err}. The affected series is {labels}");
        }
        if self.first_error.is_none() {
            self.first_error = Some(e.1.clone());
        }
    }

    pub fn into_response(self) -> Response {
        let timed_out = self.timed_out.is_some();
        let (status, msg) = self.status_message();
        if status == StatusCode::OK {
            return status.into_response();
        }
        let mut resp = text(status, msg);
        if timed_out {
            resp.extensions_mut().insert(TimedOut);
        }
        resp
    }

    /// The answer's status and text (empty for 200): what a client is told, and what an
    /// owner tells the distributor that forwarded the series.
    pub fn status_message(self) -> (StatusCode, String) {
        if let Some(msg) = self.timed_out {
            return (StatusCode::SERVICE_UNAVAILABLE, msg);
        }
        if let Some(msg) = self.rate_limited {
            return (StatusCode::TOO_MANY_REQUESTS, msg);
        }
        let Some(first) = self.first_error else {
            return (StatusCode::OK, String::new());
        };
        let mut msg = first;
        let total: usize = self.rejected.values().map(|v| v.0).sum();
        let _ = write!(
            msg,
            "\n{total} of {} samples in {} series were rejected (",
            self.samples, self.series
        );
        for (i, (reason, (n, _))) in self.rejected.iter().enumerate() {
            if i > 0 {
                msg.push_str(", ");
            }
            let _ = write!(msg, "{n} {reason}");
        }
        let _ = write!(
            msg,
            "); the other {} samples were stored",
            self.accepted_samples
        );
        (StatusCode::BAD_REQUEST, msg)
    }
}

fn append_error(e: AppendError) -> SeriesError {
    match e {
        AppendError::TooOld { t, min_valid_t } => SeriesError::TooOld {
            t,
            min_valid: min_valid_t,
        },
        AppendError::OutOfOrder { t, last_t } => SeriesError::OutOfOrder { t, last: last_t },
        AppendError::DuplicateTimestamp { t, .. } => SeriesError::DuplicateTimestamp { t },
        AppendError::TooOldForWindow { t, window_ms } => {
            SeriesError::TooOldForWindow { t, window_ms }
        }
        // the series was garbage-collected between lookup and append: treat as too old
        AppendError::UnknownSeries(_) => SeriesError::TooOld { t: 0, min_valid: 0 },
    }
}

/// An out-of-order float at `t`: `Ok(true)` to take it, `Ok(false)` when the same value
/// is already held (dropped silently), else its refusal. `buf[first..]` holds what this
/// occurrence of the series took so far, `buf[..first]` the rest of the request (where
/// the series occurred before when `seen`), then the head decides.
fn check_out_of_order(
    head: &strata_tsdb::head::Head,
    buf: &[(u64, i64, f64)],
    first: usize,
    series: Option<HeadSeriesRef>,
    seen: bool,
    t: i64,
    v: f64,
) -> Result<bool, AppendError> {
    let vb = v.to_bits();
    let held = buf[first..].iter().find(|s| s.1 == t).or_else(|| {
        let r = series.filter(|_| seen)?;
        buf[..first].iter().find(|s| s.0 == r.0 && s.1 == t)
    });
    match (held, series) {
        (Some(s), _) if s.2.to_bits() == vb => Ok(false),
        (Some(_), _) => Err(AppendError::DuplicateTimestamp { t, last_t: t }),
        (None, Some(r)) => head.check_out_of_order(r, t, vb),
        (None, None) => Ok(true),
    }
}

/// The accepted histogram samples of a request in request order, as runs of one WAL
/// record type each (integer or float, exponential or custom buckets): replay appends
/// them in the order they were accepted. Series refs are placeholders until a new
/// series exists.
#[derive(Default)]
pub(crate) struct HistBuf {
    runs: Vec<HistRun>,
}

enum HistRun {
    Int(bool, Vec<RefHistogram>),
    Float(bool, Vec<RefFloatHistogram>),
}

impl HistRun {
    fn len(&self) -> usize {
        match self {
            HistRun::Int(_, v) => v.len(),
            HistRun::Float(_, v) => v.len(),
        }
    }

    /// `(ref, t)` of the entries from `from` on.
    fn refs_from(&mut self, from: usize) -> Box<dyn Iterator<Item = (&mut u64, i64)> + '_> {
        match self {
            HistRun::Int(_, v) => Box::new(v[from..].iter_mut().map(|e| (&mut e.0, e.1))),
            HistRun::Float(_, v) => Box::new(v[from..].iter_mut().map(|e| (&mut e.0, e.1))),
        }
    }
}

/// A position in a [`HistBuf`]: the number of runs, and the last run's length.
type HistMark = (usize, usize);

impl HistBuf {
    fn mark(&self) -> HistMark {
        (self.runs.len(), self.runs.last().map_or(0, HistRun::len))
    }

    pub(crate) fn push(&mut self, r: u64, t: i64, h: HistSample) {
        match (self.runs.last_mut(), h) {
            (Some(HistRun::Int(c, v)), HistSample::Int(h)) if *c == is_custom_buckets(h.schema) => {
                v.push((r, t, h))
            }
            (Some(HistRun::Float(c, v)), HistSample::Float(h))
                if *c == is_custom_buckets(h.schema) =>
            {
                v.push((r, t, h))
            }
            (_, HistSample::Int(h)) => self
                .runs
                .push(HistRun::Int(is_custom_buckets(h.schema), vec![(r, t, h)])),
            (_, HistSample::Float(h)) => self
                .runs
                .push(HistRun::Float(is_custom_buckets(h.schema), vec![(r, t, h)])),
        }
    }

    /// `(ref, t)` of every entry pushed since `m`.
    fn since(&mut self, m: HistMark) -> impl Iterator<Item = (&mut u64, i64)> + '_ {
        let first = m.0.saturating_sub(1);
        self.runs[first..]
            .iter_mut()
            .enumerate()
            .flat_map(move |(k, run)| run.refs_from(if k == 0 && m.0 > 0 { m.1 } else { 0 }))
    }

    fn stored_since(&mut self, m: HistMark) -> usize {
        self.since(m).count()
    }

    fn truncate(&mut self, m: HistMark) {
        self.runs.truncate(m.0);
        match self.runs.last_mut() {
            Some(HistRun::Int(_, v)) => v.truncate(m.1),
            Some(HistRun::Float(_, v)) => v.truncate(m.1),
            None => {}
        }
    }

    fn set_ref(&mut self, m: HistMark, r: u64) {
        self.since(m).for_each(|(e, _)| *e = r);
    }

    /// The newest timestamp pushed since `m` (one series' histograms, in order).
    fn last_t(&mut self, m: HistMark) -> Option<i64> {
        self.since(m).map(|(_, t)| t).max()
    }

    /// The WAL records, one per run (or per `max` entries of a run), in order.
    pub(crate) fn records<'a>(&'a self, max: usize, recs: &mut Vec<Record<'a>>) {
        for run in &self.runs {
            match run {
                HistRun::Int(custom_buckets, entries) => {
                    recs.extend(entries.chunks(max).map(|e| Record::Histograms {
                        custom_buckets: *custom_buckets,
                        entries: e,
                    }))
                }
                HistRun::Float(custom_buckets, entries) => {
                    recs.extend(entries.chunks(max).map(|e| Record::FloatHistograms {
                        custom_buckets: *custom_buckets,
                        entries: e,
                    }))
                }
            }
        }
    }

    /// Append what the WAL now has to the head, in the same order.
    fn append_to(&self, head: &strata_tsdb::head::Head, tenant_id: &str) {
        let log = |r: u64, t: i64, e: AppendError| {
            // cannot happen while the write lock is held since validation
            tracing::error!(tenant = tenant_id, series = r, t, error = %e, "logged histogram refused by the head");
        };
        for run in &self.runs {
            match run {
                HistRun::Int(_, v) => {
                    for (r, t, h) in v {
                        if let Err(e) = head.append_histogram_validated(HeadSeriesRef(*r), *t, h) {
                            log(*r, *t, e);
                        }
                    }
                }
                HistRun::Float(_, v) => {
                    for (r, t, h) in v {
                        if let Err(e) =
                            head.append_float_histogram_validated(HeadSeriesRef(*r), *t, h)
                        {
                            log(*r, *t, e);
                        }
                    }
                }
            }
        }
    }
}

/// Series looked up together by [`ingest_ref`].
const LOOKUP_BATCH: usize = 512;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Validate, log to the WAL, append to the head, fsync. Runs on a blocking thread.
pub fn ingest(ing: &Ingester, tenant_id: &str, req: WriteRequest) -> crate::Result<Outcome> {
    ingest_ref(ing, tenant_id, &WriteRequestRef::from_owned(&req))
}

/// [`ingest`] of a request whose label strings are borrowed. Existing series are found
/// from the raw pairs; [`Labels`] are only built for new or rejected series.
///
/// Under the tenant's write lock: every sample is checked against the head without
/// changing it, the accepted ones are written to the WAL, and only then appended to the
/// head. If the WAL write fails nothing is appended (the answer is 500), so the
/// client's retry is checked, logged and acknowledged as if it were the first attempt.
pub fn ingest_ref(
    ing: &Ingester,
    tenant_id: &str,
    req: &WriteRequestRef<'_>,
) -> crate::Result<Outcome> {
    ingest_ref_until(ing, tenant_id, req, None)
}

/// [`ingest_ref`] that gives up (answering 503, logging and applying nothing) once
/// `deadline` has passed; checked every [`LOOKUP_BATCH`] series.
pub fn ingest_ref_until(
    ing: &Ingester,
    tenant_id: &str,
    req: &WriteRequestRef<'_>,
    deadline: Option<Instant>,
) -> crate::Result<Outcome> {
    let tenant = ing.tenant(tenant_id)?;
    let limits = &ing.overrides.limits(tenant_id);
    let mut out = Outcome {
        series: req.len(),
        samples: req.num_samples() + req.num_histograms(),
        ..Outcome::default()
    };
    let m = &ing.metrics;
    m.received_series.inc_by(out.series as u64);
    m.received_samples.inc_by(out.samples as u64);
    let now = now_ms();
    let max_t = now.saturating_add(limits.create_grace_period_ms);

    let mut w = tenant.lock_write();
    // the tenant's rate may have changed with the runtime configuration
    w.limiter
        .set_limits(limits.ingestion_rate, limits.ingestion_burst);
    if !w.limiter.try_take(out.samples as u64) {
        m.rejected_samples
            .with(&["rate_limited"])
            .inc_by(out.samples as u64);
        out.rate_limited = Some(format!(
            "the request has been rejected because the tenant exceeded the ingestion rate limit, set to {} samples/s with a maximum allowed burst of {}; this limit is applied on the total number of samples received across all ingesters (err-mimir-tenant-max-ingestion-rate); raise it with --distributor.ingestion-rate-limit",
            w.limiter.rate(),
            w.limiter.burst()
        ));
        return Ok(out);
    }
    let head = &tenant.head;
    // `series_buf` may still hold series whose record a failed WAL write did not log.
    let mut series_buf = std::mem::take(&mut w.series_buf);
    let mut samples_buf = std::mem::take(&mut w.samples_buf);
    let mut req_last = std::mem::take(&mut w.req_last);
    samples_buf.clear();
    samples_buf.reserve(out.samples);
    req_last.clear();
    // Fixed for the request, as Prometheus fixes it when an appender is created; anchored
    // at the clock so no sample from the future can move it.
    let min_valid = head.min_valid_time_at(now);
    // With an out-of-order window, a float older than its series' newest sample is
    // accepted down to here (Prometheus's `headMaxt - oooTimeWindow`).
    let ooo_window = limits.out_of_order_time_window_ms;
    let ooo_min = if ooo_window > 0 {
        head.ooo_min_valid_time_at(now, ooo_window)
    } else {
        i64::MAX
    };
    let lowest = min_valid.min(ooo_min);
    // Older than the last cut block: such out-of-order samples are logged in records of
    // their own (see `Record::OooSamples`) and go into blocks overlapping the cut ones.
    let floor = head.min_valid_block();
    let mut below_floor: Vec<(u64, i64, f64)> = Vec::new();
    let mut ooo_accepted = 0usize;
    let mut accepted = 0usize;
    let mut accepted_hists = 0usize;
    // Histograms to log and append, and each series' newest one in this request
    // (allocated only for requests with histograms).
    let mut hists_buf = HistBuf::default();
    let mut hist_last: crate::tenant::RefMap<i64> = Default::default();

    // Look existing series up in batches (see `Head::get_many_by_pairs`), small enough
    // that what the lookups bring into the cache is still there for the checks. Each
    // comes with its newest sample, so validating needs no second lookup.
    let mut existing: Vec<Option<SeriesWithLast>> = Vec::new();
    let mut batch: Vec<&[(&str, &str)]> = Vec::with_capacity(LOOKUP_BATCH);
    for (i, (pairs, samples)) in req.iter().enumerate() {
        if i % LOOKUP_BATCH == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                out.timed_out = Some(push_timeout_message(limits.push_timeout_ms));
                break;
            }
            batch.clear();
            // By index: `req.iter().skip(i)` walked i series per batch, quadratic in
            // the request's series.
            let end = (i + LOOKUP_BATCH).min(req.len());
            batch.extend((i..end).map(|j| req.series(j).0));
            head.get_many_by_pairs_with_last(&batch, &mut existing);
        }
        let (existing, existing_last) = match existing[i % LOOKUP_BATCH] {
            Some((r, l)) => (Some(r), Some(l)),
            None => (None, None),
        };
        // A series the head holds passed every rule when it was created: only the
        // limits are checked again (the full check was a tenth of the push's CPU). The
        // metric name is only needed to create a series.
        let checked = match existing {
            Some(_) => validate_known_labels(pairs, limits).map(|()| None),
            None => validate_labels(pairs.iter().copied(), limits).map(Some),
        };
        let metric = match checked {
            Ok(m) => m,
            Err(e) => {
                let n = samples.len() + req.histograms(i);
                let shown = Labels::from_pairs(pairs.iter().copied());
                out.reject(&e, &shown, n);
                m.rejected_samples.with(&[e.reason()]).inc_by(n as u64);
                continue;
            }
        };
        let nhists = req.histograms(i);
        if samples.is_empty() && nhists == 0 {
            continue;
        }
        // The series and its newest sample: from earlier in this request, else the head.
        let mut new_labels: Option<Labels> = None;
        let mut series: Option<HeadSeriesRef> = existing.or_else(|| {
            let labels = Labels::from_pairs(pairs.iter().copied());
            let r = head.get(&labels);
            new_labels = Some(labels);
            r
        });
        let mut last = None;
        if let Some(r) = series {
            match req_last.get(&r.0) {
                Some(l) => last = Some(*l),
                // under the write lock a series found cannot vanish; if it did, treat
                // it as new rather than log samples for a ref replay would not know
                // read by the batch lookup: under the write lock nothing reached the
                // head since
                None => match existing_last {
                    Some(l) => last = l,
                    None => match head.last_sample(r) {
                        Ok(l) => last = l,
                        Err(_) => series = None,
                    },
                },
            }
        }
        // Check every sample against the window and the series' newest sample (kept
        // up to date through the request); new series get their ref once one passes.
        let first = samples_buf.len();
        let below_first = below_floor.len();
        let ooo_before = ooo_accepted;
        let placeholder = series.map_or(0, |r| r.0);
        let mut dups = 0usize;
        let mut shown: Option<Labels> = None;
        for s in samples {
            let (t, v) = (s.timestamp, s.value);
            let err = if t > max_t {
                Some(SeriesError::TooFarInFuture {
                    t,
                    grace_ms: limits.create_grace_period_ms,
                })
            } else if ooo_window > 0 && t < floor && t >= ooo_min {
                let seen = series.is_some_and(|r| req_last.contains_key(&r.0));
                match check_out_of_order(head, &below_floor, below_first, series, seen, t, v) {
                    Ok(true) => {
                        ooo_accepted += 1;
                        below_floor.push((placeholder, t, v));
                        None
                    }
                    Ok(false) => {
                        dups += 1;
                        None
                    }
                    Err(e) => Some(append_error(e)),
                }
            } else if t < lowest {
                Some(if ooo_window > 0 {
                    SeriesError::TooOldForWindow {
                        t,
                        window_ms: ooo_window,
                    }
                } else {
                    SeriesError::TooOld {
                        t,
                        min_valid: lowest,
                    }
                })
            } else {
                let vb = v.to_bits();
                let checked = match check_sample(last, t, vb) {
                    Err(AppendError::OutOfOrder { .. }) if ooo_window > 0 => {
                        if t < ooo_min {
                            Err(AppendError::TooOldForWindow {
                                t,
                                window_ms: ooo_window,
                            })
                        } else {
                            let seen = series.is_some_and(|r| req_last.contains_key(&r.0));
                            let c =
                                check_out_of_order(head, &samples_buf, first, series, seen, t, v);
                            if c == Ok(true) {
                                ooo_accepted += 1;
                                samples_buf.push((placeholder, t, v));
                                continue;
                            }
                            c
                        }
                    }
                    c => c,
                };
                match checked {
                    Ok(true) => {
                        samples_buf.push((placeholder, t, v));
                        last = Some((t, vb));
                        None
                    }
                    Ok(false) => {
                        // already in the head (and so in the WAL): accepted as is
                        dups += 1;
                        None
                    }
                    Err(e) => Some(append_error(e)),
                }
            };
            if let Some(e) = err {
                let shown = shown.get_or_insert_with(|| Labels::from_pairs(pairs.iter().copied()));
                out.reject(&e, shown, 1);
                m.rejected_samples.with(&[e.reason()]).inc();
            }
        }
        let stored = samples_buf.len() - first + below_floor.len() - below_first;
        // Native histograms after the floats (as Prometheus's write handler does): each
        // must be newer than the series' samples so far, in the head and this request.
        let hfirst = hists_buf.mark();
        let mut hdups = 0usize;
        if nhists > 0 {
            // the newest float so far (out-of-order ones are older)
            let mut bound = samples_buf[first..]
                .iter()
                .map(|s| s.1)
                .max()
                .max(series.and_then(|r| req_last.get(&r.0).map(|l| l.0)))
                .max(series.and_then(|r| hist_last.get(&r.0).copied()));
            for v in req.histograms_of(i) {
                let t = v.h.timestamp;
                let mut h = crate::histograms::from_view(&v);
                let err = if t > max_t {
                    Some(SeriesError::TooFarInFuture {
                        t,
                        grace_ms: limits.create_grace_period_ms,
                    })
                } else if t < min_valid {
                    Some(SeriesError::TooOld { t, min_valid })
                } else if let Err(e) = crate::histograms::prepare(
                    &mut h,
                    limits.max_native_histogram_buckets,
                    limits.reduce_native_histogram_over_max_buckets,
                ) {
                    Some(SeriesError::Histogram(e))
                } else if let Some(b) = bound.filter(|b| t <= *b) {
                    Some(if t == b {
                        SeriesError::DuplicateTimestamp { t }
                    } else {
                        SeriesError::OutOfOrder { t, last: b }
                    })
                } else {
                    let checked = match (series, &h) {
                        (None, _) => Ok(true),
                        (Some(r), HistSample::Int(h)) => head.check_histogram(r, t, h),
                        (Some(r), HistSample::Float(h)) => head.check_float_histogram(r, t, h),
                    };
                    match checked {
                        Ok(true) => {
                            hists_buf.push(placeholder, t, h);
                            bound = Some(t);
                            None
                        }
                        Ok(false) => {
                            hdups += 1;
                            None
                        }
                        Err(e) => Some(append_error(e)),
                    }
                };
                if let Some(e) = err {
                    let shown =
                        shown.get_or_insert_with(|| Labels::from_pairs(pairs.iter().copied()));
                    out.reject(&e, shown, 1);
                    m.rejected_samples.with(&[e.reason()]).inc();
                }
            }
        }
        let hstored = hists_buf.stored_since(hfirst);
        let r = match series {
            Some(r) => r,
            // Don't create a series none of whose samples can be stored.
            None if stored + hstored == 0 => continue,
            None => {
                // (found, then gone: cannot happen under the write lock; see above)
                let metric = metric.unwrap_or_else(|| {
                    pairs.iter().find(|p| p.0 == "__name__").map_or("", |p| p.1)
                });
                let labels =
                    new_labels.unwrap_or_else(|| Labels::from_pairs(pairs.iter().copied()));
                let limit_err = if limits.max_series_per_user > 0
                    && head.num_series() >= limits.max_series_per_user
                {
                    Some(SeriesError::PerUserSeriesLimit)
                } else if limits.max_series_per_metric > 0
                    && head.series_count_for_metric(metric) >= limits.max_series_per_metric
                {
                    Some(SeriesError::PerMetricSeriesLimit)
                } else {
                    w.guard
                        .check(
                            &ing.overrides.guard(tenant_id),
                            metric,
                            pairs,
                            now,
                            |label| {
                                let m = Matcher::new(MatchOp::Equal, "__name__", metric)
                                    .expect("an equality matcher");
                                head.label_values(label, &[m])
                            },
                        )
                        .err()
                        .map(|r| {
                            m.cardinality_guard_refused
                                .with(&[tenant_id, &r.metric, &r.label])
                                .inc();
                            SeriesError::CardinalityGuard(Box::new(r))
                        })
                };
                if let Some(e) = limit_err {
                    samples_buf.truncate(first);
                    below_floor.truncate(below_first);
                    ooo_accepted = ooo_before;
                    hists_buf.truncate(hfirst);
                    let n = stored + dups + hstored + hdups;
                    out.reject(&e, &labels, n);
                    m.rejected_samples.with(&[e.reason()]).inc_by(n as u64);
                    continue;
                }
                // Created before its record is logged (it holds no sample until the WAL
                // has both); the record stays pending until a WAL write succeeds.
                let (r, created) = head.get_or_create(&labels);
                if created {
                    series_buf.push((r.0, labels));
                    m.series_created.inc();
                }
                for e in &mut samples_buf[first..] {
                    e.0 = r.0;
                }
                for e in &mut below_floor[below_first..] {
                    e.0 = r.0;
                }
                hists_buf.set_ref(hfirst, r.0);
                r
            }
        };
        if let Some(l) = last {
            req_last.insert(r.0, l);
        }
        if let Some(t) = hists_buf.last_t(hfirst) {
            hist_last.insert(r.0, t);
        }
        accepted += stored + dups;
        accepted_hists += hstored + hdups;
    }

    if out.timed_out.is_some() {
        // Nothing logged, nothing appended; records of series created above stay
        // pending, as after a failed WAL write.
        samples_buf.clear();
        w.series_buf = series_buf;
        w.samples_buf = samples_buf;
        w.req_last = req_last;
        return Ok(out);
    }
    let series_entries: Vec<(u64, &Labels)> = series_buf.iter().map(|(r, l)| (*r, l)).collect();
    let mut recs: Vec<Record<'_>> = Vec::with_capacity(2);
    if !series_entries.is_empty() {
        recs.push(Record::Series {
            entries: &series_entries,
        });
    }
    if !samples_buf.is_empty() {
        recs.push(Record::Samples {
            entries: &samples_buf,
        });
    }
    if !below_floor.is_empty() {
        recs.push(Record::OooSamples {
            entries: &below_floor,
        });
    }
    hists_buf.records(usize::MAX, &mut recs);
    // Log first, under the lock; fsync after releasing it so concurrent pushes share one
    // fsync (group commit).
    let logged = if recs.is_empty() {
        Ok(())
    } else {
        w.wal.append(&recs)
    };
    let wrote = !recs.is_empty();
    drop(recs);
    drop(series_entries);
    if logged.is_ok() {
        if wrote {
            w.written_seq += 1;
        }
        series_buf.clear();
        // The head takes exactly what the WAL now has.
        // grouped by series shard, one shard lock per group
        head.append_validated_many(&samples_buf, &mut w.append_order, |r, t, e| {
            // cannot happen while the write lock is held since validation
            tracing::error!(tenant = tenant_id, series = r, t, error = %e, "logged sample refused by the head");
        });
        for &(r, t, v) in &below_floor {
            if let Err(e) = head.append_below_floor(HeadSeriesRef(r), t, v, false) {
                tracing::error!(tenant = tenant_id, series = r, t, error = %e, "logged sample refused by the head");
            }
        }
        hists_buf.append_to(head, tenant_id);
        out.accepted_samples = accepted;
        out.accepted_histograms = accepted_hists;
        if ooo_accepted > 0 {
            m.ooo_samples.with(&[tenant_id]).inc_by(ooo_accepted as u64);
        }
    }
    let seq = w.written_seq;
    let stats = w.wal.stats();
    w.series_buf = series_buf;
    w.samples_buf = samples_buf;
    w.req_last = req_last;
    drop(w);
    logged?;
    if ing.config.wal_fsync == crate::WalFsync::Always {
        if let Some(d) = tenant.sync_up_to(seq)? {
            m.wal_fsync_duration.observe(d.as_secs_f64());
        }
    }
    m.wal_size.with(&[tenant_id]).set(stats.size as f64);
    m.accepted_samples.inc_by(out.accepted_samples as u64);
    if out.accepted_histograms > 0 {
        m.ingested_histogram_samples
            .with(&[tenant_id])
            .inc_by(out.accepted_histograms as u64);
    }
    m.head_series
        .with(&[tenant_id])
        .set(head.num_series() as f64);
    Ok(out)
}
