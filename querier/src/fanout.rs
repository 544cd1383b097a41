//! The global view: every `--endpoint` Store API server and the bucket, asked in
//! parallel, merged per series, deduplicated by replica labels, and exposed to the
//! engine as a [`promql::Storage`](strata_promql::Storage).
//!
//! Store API calls are async while `Storage::select` is sync: the engine runs on a
//! thread of its own (a query thread, or `spawn_blocking`) and `select` drives the
//! fan-out there with [`Handle::block_on`], so the runtime's worker threads only do
//! I/O and a query never waits for a worker it occupies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use strata_promql::{Samples, SelectHints, SelectedSeries, Storage, StorageError, StorageSeries};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::{
    chunk, series_response, Func, InfoRequest, LabelNamesRequest, LabelValuesRequest,
    PartialResponseStrategy, QueryHints, Range, SeriesRequest,
};
use strata_store::{matchers_to_proto, ErrorKind, StoreError};
use strata_tsdb::chunkenc::Encoding;
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{MatchOp, Matcher};
use tokio::runtime::Handle;
use tonic::transport::Channel;

use crate::bucket::{add_external, labels_match, BucketReader, ReadFromBucket, SeriesData};
use crate::dedup;
use crate::metrics::QuerierMetrics;
use crate::series::{ChunksBuilder, EngineSeries, LazySeries, Part};
use crate::shard::ShardSelector;
use crate::stats::{Counter, QueryCost};

mod meta;
pub use meta::MetadataAnswer;

/// How long an endpoint's external labels (from `Info`) are reused.
const INFO_TTL: Duration = Duration::from_secs(60);
/// Largest gRPC message accepted from an endpoint.
const MAX_MESSAGE: usize = 256 << 20;

/// What one fan-out needs to know about the request it serves.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub tenant: String,
    /// A failing source becomes a warning (true) or fails the request (false).
    pub partial_response: bool,
    /// Replica labels to deduplicate by; `None` when dedup is off.
    pub replica_labels: Option<Vec<String>>,
    /// Coarsest downsampling resolution accepted (ms), sent to the stores.
    pub max_resolution_ms: i64,
    /// Deadline for each source.
    pub timeout: Duration,
    /// The request's cost and limits, counted by every source as its data arrives.
    pub cost: Arc<QueryCost>,
    /// The oldest time the tenant may read (`max_query_lookback`; `i64::MIN`: no
    /// limit): every fetch's start is moved up to it, and one ending before it asks
    /// no source and answers empty (Mimir's querier, not an error).
    pub min_time: i64,
}

impl FetchOptions {
    /// `[mint, maxt]` clamped to the tenant's lookback; `None` when nothing is left.
    fn clamp(&self, mint: i64, maxt: i64) -> Option<(i64, i64)> {
        let mint = mint.max(self.min_time);
        (maxt >= mint).then_some((mint, maxt))
    }

    /// The replica label names (none when dedup is off).
    fn replica_names(&self) -> Vec<&str> {
        self.replica_labels
            .iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

/// Why a fan-out failed: the message, and the kind of the store failure behind it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String, pub ErrorKind);

/// Series from every source, merged (and deduplicated when asked), plus warnings.
#[derive(Debug, Default)]
pub struct Fetched<S = Vec<(i64, f64)>> {
    pub series: Vec<(Labels, S)>,
    pub warnings: Vec<String>,
    /// Series (labels as answered, after dedup) read from downsampled blocks, with the
    /// coarsest resolution (ms) read.
    pub downsampled: HashMap<Labels, i64>,
}

type ExternalLabels = Vec<(String, String)>;

/// A Store API endpoint that lives in this process (the ingester of `strata all`):
/// series are read straight from it, without encoding every label and chunk into
/// protobuf and back (which was most of a query over 100k head series).
pub trait LocalStore: Send + Sync + std::fmt::Debug {
    /// Series of `tenant` matching `matchers` with samples in `[mint, maxt]`, sorted by
    /// labels and unique, samples decoded and in range (none with `skip_chunks`).
    fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
    ) -> Result<Vec<SeriesData>, String>;

    /// [`LocalStore::series`], counting each series into `count` (series, chunks and
    /// their bytes before they are decoded, then samples) and stopping at the first
    /// error it returns, so a limit stops the read before the samples are held. The
    /// default counts after reading everything.
    #[allow(clippy::too_many_arguments)]
    fn series_counted(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        count: &Counter,
    ) -> Result<Vec<SeriesData>, StoreError> {
        let out = self
            .series(tenant, matchers, mint, maxt, skip_chunks)
            .map_err(StoreError::Other)?;
        for (l, s) in &out {
            count.series(l)?;
            count.samples(s.len())?;
        }
        Ok(out)
    }

    /// [`LocalStore::series_counted`] with each series' samples as a [`Part`]: a store
    /// that can hand out encoded chunks keeps them encoded (the engine decodes a series
    /// when it consumes it). The default decodes.
    #[allow(clippy::too_many_arguments)]
    fn series_parts(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        count: &Counter,
    ) -> Result<Vec<(Labels, Part)>, StoreError> {
        Ok(self
            .series_counted(tenant, matchers, mint, maxt, skip_chunks, count)?
            .into_iter()
            .map(|(l, s)| (l, Part::Samples(s)))
            .collect())
    }

    /// [`LocalStore::series_parts`] leaving out the local blocks the bucket's read
    /// already answers for ([`ReadFromBucket::covers`]), so `strata all` does not read
    /// freshly shipped blocks twice. The default reads them anyway (the merge keeps the
    /// answer right, at twice the cost).
    #[allow(clippy::too_many_arguments)]
    fn series_parts_skipping(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        skip_chunks: bool,
        count: &Counter,
        _in_bucket: &ReadFromBucket,
    ) -> Result<Vec<(Labels, Part)>, StoreError> {
        self.series_parts(tenant, matchers, mint, maxt, skip_chunks, count)
    }

    /// The labels the endpoint's `Info` advertises (added to its series that lack them).
    fn external_labels(&self) -> Vec<(String, String)>;

    /// Metric metadata of `tenant` (`/api/v1/metadata`); none by default.
    fn metadata(
        &self,
        _tenant: &str,
        _req: &strata_proto::metadata::MetricMetadataRequest,
    ) -> Result<strata_proto::metadata::MetricMetadataResponse, String> {
        Ok(Default::default())
    }

    /// Exemplars of `tenant` (`/api/v1/query_exemplars`); none by default.
    fn exemplars(
        &self,
        _tenant: &str,
        _req: &strata_proto::metadata::ExemplarsRequest,
    ) -> Result<strata_proto::metadata::ExemplarsResponse, String> {
        Ok(Default::default())
    }
}

/// Compression of Store API calls to endpoints [`--grpc-compression`]: requests are
/// sent with it and responses asked for with it (a server without it answers plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GrpcCompression {
    #[default]
    None,
    Zstd,
    Gzip,
}

impl GrpcCompression {
    fn encoding(self) -> Option<tonic::codec::CompressionEncoding> {
        match self {
            GrpcCompression::None => None,
            GrpcCompression::Zstd => Some(tonic::codec::CompressionEncoding::Zstd),
            GrpcCompression::Gzip => Some(tonic::codec::CompressionEncoding::Gzip),
        }
    }
}

/// One Store API endpoint, connected on first use.
pub struct Endpoint {
    addr: String,
    compression: GrpcCompression,
    client: OnceLock<Result<StoreClient<Channel>, String>>,
    /// External labels from `Info` and when they were fetched.
    ext: Mutex<Option<(Instant, ExternalLabels)>>,
    /// Set when the endpoint is this process: series are read without gRPC.
    local: Option<Arc<dyn LocalStore>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Endpoint {
    pub fn new(addr: impl Into<String>) -> Self {
        Endpoint {
            addr: addr.into(),
            compression: GrpcCompression::None,
            client: OnceLock::new(),
            ext: Mutex::new(None),
            local: None,
        }
    }

    /// Compress calls to the endpoint with `c` (before the first call).
    pub fn with_compression(mut self, c: GrpcCompression) -> Self {
        self.compression = c;
        self
    }

    /// Read series from `local` instead of calling the endpoint.
    pub fn with_local(mut self, local: Arc<dyn LocalStore>) -> Self {
        self.local = Some(local);
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The client; must run inside the runtime (the channel spawns its worker).
    fn client(&self, connect_timeout: Duration) -> Result<StoreClient<Channel>, String> {
        self.client
            .get_or_init(|| {
                let ch = strata_kit::grpc_tls::endpoint(&self.addr)
                    .map_err(|e| e.to_string())?
                    .connect_timeout(connect_timeout)
                    .connect_lazy();
                let mut c = StoreClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                if let Some(enc) = self.compression.encoding() {
                    // responses (the bulk of a Series call) come compressed only when
                    // asked for; the limits above apply to the decompressed message
                    c = c.send_compressed(enc).accept_compressed(enc);
                }
                Ok(c)
            })
            .clone()
    }

    fn request<T>(msg: T, tenant: &str, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Ok(v) = tenant.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>() {
            req.metadata_mut().insert("x-scope-orgid", v.clone());
            req.metadata_mut()
                .insert(strata_proto::store::TENANT_METADATA_KEY, v);
        }
        req.set_timeout(timeout);
        req
    }

    /// The endpoint's external labels: its single advertised label set (none when it
    /// advertises zero or several), added to its series that lack them so they line up
    /// with the blocks it uploaded (whose `meta.json` carries the same labels).
    async fn external_labels(
        &self,
        client: &mut StoreClient<Channel>,
        tenant: &str,
        timeout: Duration,
    ) -> Vec<(String, String)> {
        if let Some((at, ext)) = &*self.ext.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < INFO_TTL {
                return ext.clone();
            }
        }
        let Ok(resp) = client
            .info(Self::request(InfoRequest {}, tenant, timeout))
            .await
        else {
            return Vec::new();
        };
        let info = resp.into_inner();
        let sets = if info.label_sets.is_empty() && !info.labels.is_empty() {
            vec![info.labels]
        } else {
            info.label_sets.into_iter().map(|s| s.labels).collect()
        };
        let ext: Vec<(String, String)> = match sets.as_slice() {
            [one] => one
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
            _ => Vec::new(),
        };
        *self.ext.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), ext.clone()));
        ext
    }

    /// Series for `req` (whose matchers are `matchers`); an endpoint in this process
    /// leaves out its local blocks that `in_bucket` covers.
    async fn series(
        &self,
        req: SeriesRequest,
        matchers: &[Matcher],
        opts: &FetchOptions,
        count: &Counter,
        in_bucket: &ReadFromBucket,
    ) -> Result<(Vec<(Labels, Part)>, Vec<String>), StoreError> {
        if let Some(local) = &self.local {
            let mut out = local.series_parts_skipping(
                &opts.tenant,
                matchers,
                req.min_time,
                req.max_time,
                req.skip_chunks,
                count,
                in_bucket,
            )?;
            let ext = local.external_labels();
            if !ext.is_empty() {
                for s in &mut out {
                    s.0 = add_external(std::mem::take(&mut s.0), &ext);
                }
            }
            return Ok((out, Vec::new()));
        }
        let mut client = self.client(opts.timeout).map_err(StoreError::Other)?;
        let (mint, maxt) = (req.min_time, req.max_time);
        let skip_chunks = req.skip_chunks;
        let mut info_client = client.clone();
        let ext_fut = self.external_labels(&mut info_client, &opts.tenant, opts.timeout);
        let series_fut = async {
            let mut stream = client
                .series(Self::request(req, &opts.tenant, opts.timeout))
                .await
                .map_err(StoreError::from)?
                .into_inner();
            let mut out = Vec::new();
            let mut warnings = Vec::new();
            while let Some(msg) = stream.message().await.map_err(StoreError::from)? {
                match msg.result {
                    Some(series_response::Result::Series(s)) => {
                        let labels =
                            Labels::from_pairs(s.labels.iter().map(|l| (&l.name, &l.value)));
                        count.series(&labels)?;
                        // Chunks stay encoded (slices of the message): the engine
                        // decodes the series when it consumes it.
                        let mut part = ChunksBuilder::new(count, mint, maxt);
                        let corrupt =
                            |e| StoreError::Corrupt(format!("series {labels}: chunk data: {e}"));
                        for c in s.chunks {
                            // Raw chunks only: downsampled aggregates have no reading
                            // here. Histogram chunks are decoded as they arrive.
                            let Some(raw) = c.raw else { continue };
                            count.chunk(raw.data.len())?;
                            let hist = match chunk::Encoding::try_from(raw.r#type) {
                                Ok(chunk::Encoding::Xor) => None,
                                Ok(chunk::Encoding::Histogram) => Some(Encoding::Histogram),
                                Ok(chunk::Encoding::FloatHistogram) => {
                                    Some(Encoding::FloatHistogram)
                                }
                                Err(_) => continue,
                            };
                            if let Some(enc) = hist {
                                part.push_histogram(enc, &raw.data)
                                    .map_err(|e| e.unwrap_or_else(corrupt))?;
                                continue;
                            }
                            part.push(raw.data, (c.min_time, c.max_time))
                                .map_err(|e| e.unwrap_or_else(corrupt))?;
                        }
                        match part.finish().map_err(corrupt)? {
                            Some(p) => out.push((labels, p)),
                            None if skip_chunks => out.push((labels, Part::Samples(Vec::new()))),
                            None => {}
                        }
                    }
                    Some(series_response::Result::Warning(w)) => warnings.push(w),
                    Some(series_response::Result::Hints(_)) | None => {}
                }
            }
            Ok::<_, StoreError>((out, warnings))
        };
        let (ext, res) = futures::future::join(ext_fut, series_fut).await;
        let (mut out, warnings) = res?;
        if !ext.is_empty() {
            for s in &mut out {
                s.0 = add_external(std::mem::take(&mut s.0), &ext);
            }
        }
        Ok((out, warnings))
    }
}

/// Merge series from several sources: same labels → samples merged by timestamp, the
/// first source's sample kept on equal timestamps. Sorted by labels.
pub fn merge_sources(parts: Vec<Vec<SeriesData>>, keep_empty: bool) -> Vec<SeriesData> {
    let parts = parts
        .into_iter()
        .map(|p| p.into_iter().map(|(l, s)| (l, Part::Samples(s))).collect())
        .collect();
    crate::series::merge_sources(parts, keep_empty)
        .into_iter()
        .map(|(l, ps)| {
            let s = LazySeries {
                replicas: vec![ps],
                counter: false,
            };
            (l, s.decode().expect("decoded samples"))
        })
        .collect()
}

/// The set of sources a querier reads.
#[derive(Debug)]
pub struct Sources {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Ingesters found on the ring (beside `endpoints`).
    pub ring: Option<Arc<crate::ring::RingEndpoints>>,
    pub bucket: Option<BucketReader>,
    pub metrics: QuerierMetrics,
}

impl Sources {
    /// A source failed: count it, then fail the query, or (with partial responses, and
    /// for any failure but a limit) return the warning to answer with.
    fn source_failed(
        &self,
        opts: &FetchOptions,
        name: &str,
        e: &StoreError,
    ) -> Result<String, FetchError> {
        self.metrics
            .store_failures
            .with(&[source_label(name)])
            .inc();
        let msg = format!("{name}: {e}");
        if !opts.partial_response || !e.allows_partial_response() {
            return Err(FetchError(msg, e.kind()));
        }
        tracing::warn!(source = %name, error = %e, "store failed; answering with partial data");
        Ok(msg)
    }

    /// The endpoints to ask: the flags' and the ring's (each address once), with how
    /// many ring members may fail without losing data, and whether each is a ring
    /// member.
    fn all_endpoints(&self) -> (Vec<(Arc<Endpoint>, bool)>, usize) {
        let mut out: Vec<(Arc<Endpoint>, bool)> =
            self.endpoints.iter().map(|e| (e.clone(), false)).collect();
        let Some(ring) = &self.ring else {
            return (out, 0);
        };
        let (members, tolerated) = ring.current();
        for m in members {
            match out.iter_mut().find(|(e, _)| e.addr() == m.addr()) {
                Some(slot) => slot.1 = true,
                None => out.push((m, true)),
            }
        }
        (out, tolerated)
    }

    /// Results of the ring members that failed, up to the number that may fail, are
    /// dropped (the other replicas have their series); the rest stay to be reported.
    fn forgive_ring_failures<T>(
        &self,
        results: &mut Vec<(String, Result<T, StoreError>)>,
        in_ring: &[bool],
        tolerated: usize,
    ) {
        let failed = results
            .iter()
            .zip(in_ring)
            .filter(|((_, r), ring)| **ring && r.is_err())
            .count();
        if failed == 0 || failed > tolerated {
            return;
        }
        let mut i = 0;
        results.retain(|(name, r)| {
            // A limit is not forgiven: the other replicas would refuse alike.
            let drop = in_ring[i] && r.as_ref().is_err_and(StoreError::allows_partial_response);
            i += 1;
            if drop {
                self.metrics.store_failures.with(&["ring_tolerated"]).inc();
                tracing::debug!(source = %name, "ring member failed; its replicas answer for it");
            }
            !drop
        });
    }

    /// Ask every source for series matching `matchers` in `[mint, maxt]`, in parallel;
    /// samples decoded.
    pub async fn fetch(
        &self,
        opts: &FetchOptions,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: Option<&SelectHints>,
        skip_chunks: bool,
    ) -> Result<Fetched, FetchError> {
        let f = self
            .fetch_lazy(opts, matchers, mint, maxt, hints, skip_chunks)
            .await?;
        let mut series = Vec::with_capacity(f.series.len());
        for (l, s) in f.series {
            let samples = s.decode().map_err(|e| {
                FetchError(format!("series {l}: chunk data: {e}"), ErrorKind::Corrupt)
            })?;
            series.push((l, samples));
        }
        Ok(Fetched {
            series,
            warnings: f.warnings,
            downsampled: f.downsampled,
        })
    }

    /// [`Sources::fetch`] with samples left as the sources answered them (chunks
    /// encoded), merged and deduplicated per series only when it is decoded.
    pub async fn fetch_lazy(
        &self,
        opts: &FetchOptions,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: Option<&SelectHints>,
        skip_chunks: bool,
    ) -> Result<Fetched<LazySeries>, FetchError> {
        self.fetch_shard(opts, matchers, None, mint, maxt, hints, skip_chunks)
            .await
    }

    /// [`Sources::fetch_lazy`] for one query shard (when given): the bucket reads only
    /// the shard's series; the caller keeps only them from the other sources.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_shard(
        &self,
        opts: &FetchOptions,
        matchers: &[Matcher],
        shard: Option<ShardSelector>,
        mint: i64,
        maxt: i64,
        hints: Option<&SelectHints>,
        skip_chunks: bool,
    ) -> Result<Fetched<LazySeries>, FetchError> {
        let Some((mint, maxt)) = opts.clamp(mint, maxt) else {
            return Ok(Fetched {
                series: Vec::new(),
                warnings: Vec::new(),
                downsampled: HashMap::new(),
            });
        };
        let shard = shard.map(|shard| crate::bucket::ShardFilter {
            shard,
            replica_labels: opts.replica_labels.clone().unwrap_or_default(),
        });
        let req = SeriesRequest {
            min_time: mint,
            max_time: maxt,
            matchers: matchers_to_proto(matchers),
            max_resolution_window: opts.max_resolution_ms,
            partial_response_disabled: !opts.partial_response,
            partial_response_strategy: if opts.partial_response {
                PartialResponseStrategy::Warn
            } else {
                PartialResponseStrategy::Abort
            } as i32,
            skip_chunks,
            step: hints.map_or(0, |h| h.step),
            range: hints.map_or(0, |h| h.range),
            query_hints: hints.map(|h| QueryHints {
                step_millis: h.step,
                func: h.func.as_ref().map(|f| Func { name: f.clone() }),
                grouping: None,
                range: Some(Range { millis: h.range }),
            }),
            ..Default::default()
        };
        let func = hints.and_then(|h| h.func.as_deref());
        let timed_out = || StoreError::Transient(format!("no response within {:?}", opts.timeout));
        // The bucket's blocks are planned first (from the cached listing) so that an
        // endpoint in this process (`strata all`'s ingester) leaves out exactly the
        // local blocks the bucket will read: freshly shipped blocks are read once, and
        // a block deleted locally or uploaded meanwhile is still read from one side.
        // (Only with such an endpoint: otherwise the listing, when its cache expires,
        // runs beside the endpoints' reads as before.)
        let (all_eps, tolerated) = self.all_endpoints();
        let bucket_count = self
            .bucket
            .as_ref()
            .map(|b| (b, opts.cost.source(&format!("bucket {}", b.bucket()))));
        let bc = &bucket_count;
        let plan = move || async move {
            let (b, count) = bc.as_ref().expect("planned only with a bucket");
            tokio::time::timeout(
                opts.timeout,
                b.plan_read(
                    &opts.tenant,
                    mint,
                    maxt,
                    skip_chunks,
                    opts.max_resolution_ms,
                    func,
                    count,
                ),
            )
            .await
            .unwrap_or_else(|_| Err(timed_out()))
        };
        let planned = match &bucket_count {
            Some(_) if all_eps.iter().any(|(e, _)| e.local.is_some()) => Some(plan().await),
            _ => None,
        };
        let in_bucket = match &planned {
            Some(Ok(p)) => p.raw_sources(),
            _ => ReadFromBucket::default(),
        };
        let in_ring: Vec<bool> = all_eps.iter().map(|(_, r)| *r).collect();
        let read_endpoint = |ep: &Arc<Endpoint>, in_bucket: &ReadFromBucket| {
            let req = req.clone();
            let name = format!("endpoint {}", ep.addr);
            let count = opts.cost.source(&name);
            let (ep, in_bucket) = (ep.clone(), in_bucket.clone());
            async move {
                let r = tokio::time::timeout(
                    opts.timeout,
                    ep.series(req, matchers, opts, &count, &in_bucket),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out()));
                (name, r)
            }
        };
        let eps = all_eps.iter().map(|(ep, _)| read_endpoint(ep, &in_bucket));
        let bucket = async {
            let (b, count) = bucket_count.as_ref()?;
            let planned = match planned {
                Some(p) => p,
                None => plan().await,
            };
            let r = match planned {
                Ok(plan) => tokio::time::timeout(
                    opts.timeout,
                    b.read_plan(
                        plan,
                        &opts.tenant,
                        matchers,
                        skip_chunks,
                        count,
                        shard.as_ref(),
                    ),
                )
                .await
                .unwrap_or_else(|_| Err(timed_out())),
                Err(e) => Err(e),
            };
            Some((format!("bucket {}", b.bucket()), r))
        };
        let (mut results, bucket) =
            futures::future::join(futures::future::join_all(eps), bucket).await;
        // The bucket failed (or skipped a corrupt block) after the local endpoints left
        // its blocks to it: with a partial answer allowed, read them again in full, so
        // the local copies fill in as they did before the bucket was asked first.
        let bucket_failed = match &bucket {
            Some((_, Err(e))) => e.allows_partial_response(),
            Some((_, Ok(bs))) => !bs.warnings.is_empty(),
            None => false,
        };
        if bucket_failed && opts.partial_response && !in_bucket.is_empty() {
            for (i, (ep, _)) in all_eps.iter().enumerate() {
                if ep.local.is_some() {
                    results[i] = read_endpoint(ep, &ReadFromBucket::default()).await;
                }
            }
        }
        // The query's own limit: its message as it is, whichever source hit it.
        if let Some(msg) = opts.cost.tripped() {
            self.metrics.limited.with(&[limit_label(msg)]).inc();
            return Err(FetchError(msg.to_string(), ErrorKind::Limit));
        }
        self.forgive_ring_failures(&mut results, &in_ring, tolerated);
        let mut downsampled: HashMap<Labels, i64> = HashMap::new();
        let replica = opts.replica_names();
        let bucket = bucket.map(|(name, r)| {
            let r = r.map(|bs| {
                if !bs.downsampled.is_empty() {
                    let res = bs.blocks_read.iter().copied().max().unwrap_or(0);
                    for (l, _) in &bs.series {
                        let key = if replica.is_empty() {
                            l.clone()
                        } else {
                            l.without(&replica)
                        };
                        downsampled.insert(key, res);
                    }
                }
                for res in &bs.blocks_read {
                    self.metrics
                        .bucket_blocks
                        .with(&[resolution_label(*res)])
                        .inc();
                }
                if !bs.downsampled.is_empty() {
                    // Where a series is read downsampled, raw samples of the same series
                    // from other sources would interleave with its aggregates: the
                    // bucket's answer wins there.
                    let names: std::collections::HashSet<&Labels> =
                        bs.series.iter().map(|(l, _)| l).collect();
                    for (_, r) in results.iter_mut() {
                        let Ok((series, _)) = r else { continue };
                        for (l, part) in series.iter_mut() {
                            if !names.contains(&*l) {
                                continue;
                            }
                            let p = std::mem::replace(part, Part::Samples(Vec::new()));
                            let mut s = match p.decode() {
                                Ok(s) => s,
                                Err(e) => {
                                    *r = Err(StoreError::Corrupt(format!(
                                        "series {l}: chunk data: {e}"
                                    )));
                                    break;
                                }
                            };
                            s.retain(|p| {
                                !bs.downsampled.iter().any(|&(a, b)| p.0 >= a && p.0 <= b)
                            });
                            *part = Part::Samples(s);
                        }
                    }
                }
                (bs.series, bs.warnings)
            });
            // a corrupt block is a warning only where partial answers are allowed
            let r = match r {
                Ok((_, w)) if !opts.partial_response && !w.is_empty() => {
                    Err(StoreError::Corrupt(w.join("; ")))
                }
                r => r.map(|(s, w)| {
                    let w: Vec<String> = w.into_iter().map(|w| format!("{name}: {w}")).collect();
                    (s, w)
                }),
            };
            (name, r)
        });
        let mut parts = Vec::new();
        let mut warnings = Vec::new();
        for (name, r) in results.into_iter().chain(bucket) {
            match r {
                Ok((series, w)) => {
                    parts.push(series);
                    warnings.extend(w);
                }
                Err(e) => warnings.push(self.source_failed(opts, &name, &e)?),
            }
        }
        // Stores may ignore matchers they cannot apply: filter once more.
        for p in &mut parts {
            p.retain(|(l, _)| labels_match(l, matchers));
        }
        let merged = crate::series::merge_sources(parts, skip_chunks);
        let series = match &opts.replica_labels {
            Some(rl) if !rl.is_empty() => {
                let counter = dedup::is_counter_func(hints.and_then(|h| h.func.as_deref()));
                crate::series::dedup(merged, rl, counter)
            }
            _ => merged
                .into_iter()
                .map(|(l, ps)| {
                    let s = LazySeries {
                        replicas: vec![ps],
                        counter: false,
                    };
                    (l, s)
                })
                .collect(),
        };
        Ok(Fetched {
            series,
            warnings,
            downsampled,
        })
    }

    /// Label names (or the values of `name`) of series matching `matchers` in
    /// `[mint, maxt]`. Without matchers the stores' label APIs and the block indexes
    /// answer; with matchers, the matching series do.
    pub async fn labels(
        &self,
        opts: &FetchOptions,
        name: Option<&str>,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<(Vec<String>, Vec<String>), FetchError> {
        let Some((mint, maxt)) = opts.clamp(mint, maxt) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut out = std::collections::BTreeSet::new();
        let mut warnings = Vec::new();
        let replica = opts.replica_names();
        if !matchers.is_empty() {
            let f = self.fetch(opts, matchers, mint, maxt, None, true).await?;
            for (l, _) in &f.series {
                match name {
                    Some(n) => out.extend(l.get(n).map(str::to_string)),
                    None => out.extend(l.iter().map(|l| l.name.to_string())),
                }
            }
            return Ok((out.into_iter().collect(), f.warnings));
        }
        let (all_eps, tolerated) = self.all_endpoints();
        let in_ring: Vec<bool> = all_eps.iter().map(|(_, r)| *r).collect();
        let eps = all_eps.iter().map(|(ep, _)| async move {
            let r = tokio::time::timeout(opts.timeout, ep.labels(opts, name, mint, maxt))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Transient(format!(
                        "no response within {:?}",
                        opts.timeout
                    )))
                });
            (format!("endpoint {}", ep.addr), r)
        });
        let bucket = async {
            let b = self.bucket.as_ref()?;
            let r = tokio::time::timeout(
                opts.timeout,
                bucket_labels(b, &opts.tenant, name, mint, maxt),
            )
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Transient(format!(
                    "no response within {:?}",
                    opts.timeout
                )))
            });
            Some((format!("bucket {}", b.bucket()), r.map(|v| (v, Vec::new()))))
        };
        let (mut results, bucket) =
            futures::future::join(futures::future::join_all(eps), bucket).await;
        self.forgive_ring_failures(&mut results, &in_ring, tolerated);
        for (src, r) in results.into_iter().chain(bucket) {
            match r {
                Ok((v, w)) => {
                    out.extend(v);
                    warnings.extend(w);
                }
                Err(e) => warnings.push(self.source_failed(opts, &src, &e)?),
            }
        }
        if name.is_none() {
            for r in replica {
                out.remove(r);
            }
        }
        Ok((out.into_iter().collect(), warnings))
    }
}

/// `resolution` label of `strata_querier_bucket_blocks_read_total`.
pub fn resolution_label(res: i64) -> &'static str {
    match res {
        0 => "raw",
        300_000 => "5m",
        3_600_000 => "1h",
        _ => "other",
    }
}

/// `limit` label of `strata_querier_queries_limited_total`.
fn limit_label(msg: &str) -> &'static str {
    if msg.contains("err-mimir-max-series-per-query") {
        "max_fetched_series"
    } else if msg.contains("err-mimir-max-chunks-bytes-per-query") {
        "max_fetched_chunk_bytes"
    } else {
        "max_samples"
    }
}

fn source_label(name: &str) -> &str {
    name.strip_prefix("endpoint ").unwrap_or("bucket")
}

impl Endpoint {
    async fn labels(
        &self,
        opts: &FetchOptions,
        name: Option<&str>,
        mint: i64,
        maxt: i64,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let mut client = self.client(opts.timeout).map_err(StoreError::Other)?;
        let mut info_client = client.clone();
        let ext = self
            .external_labels(&mut info_client, &opts.tenant, opts.timeout)
            .await;
        let (mut vals, warnings) = match name {
            None => {
                let r = client
                    .label_names(Endpoint::request(
                        LabelNamesRequest {
                            start: mint,
                            end: maxt,
                            ..Default::default()
                        },
                        &opts.tenant,
                        opts.timeout,
                    ))
                    .await
                    .map_err(StoreError::from)?
                    .into_inner();
                (r.names, r.warnings)
            }
            Some(n) => {
                let r = client
                    .label_values(Endpoint::request(
                        LabelValuesRequest {
                            label: n.to_string(),
                            start: mint,
                            end: maxt,
                            ..Default::default()
                        },
                        &opts.tenant,
                        opts.timeout,
                    ))
                    .await
                    .map_err(StoreError::from)?
                    .into_inner();
                (r.values, r.warnings)
            }
        };
        // An endpoint with data has its external labels on every series.
        if !vals.is_empty() {
            for (n, v) in &ext {
                match name {
                    None => vals.push(n.clone()),
                    Some(want) if want == n => vals = vec![v.clone()],
                    Some(_) => {}
                }
            }
        }
        Ok((vals, warnings))
    }
}

async fn bucket_labels(
    b: &BucketReader,
    tenant: &str,
    name: Option<&str>,
    mint: i64,
    maxt: i64,
) -> Result<Vec<String>, StoreError> {
    // All series of the range: the index's label tables would also list series whose
    // chunks lie outside it; reading series labels keeps the answer exact.
    let all = Matcher::new(MatchOp::RegexMatch, "__name__", ".+")
        .map_err(|e| StoreError::Other(e.to_string()))?;
    // Any resolution will do: downsampled blocks may outlive raw ones (retention).
    let series = b
        .series_at(
            tenant,
            &[all],
            mint,
            maxt,
            true,
            strata_tsdb::downsample::RES_1H,
            None,
        )
        .await?
        .series;
    let mut out = std::collections::BTreeSet::new();
    for (l, _) in series {
        match name {
            Some(n) => out.extend(l.get(n).map(str::to_string)),
            None => out.extend(l.iter().map(|l| l.name.to_string())),
        }
    }
    Ok(out.into_iter().collect())
}

/// A query's cancel signal: a flag the engine polls in its loops, and a wake-up that
/// cuts short a store read in progress.
#[derive(Debug, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    notify: tokio::sync::Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_canceled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The flag, for [`strata_promql::Engine::with_cancel`].
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// Resolves once [`Cancel::cancel`] was called.
    pub async fn canceled(&self) {
        // Registered before the flag is read, so a cancel in between still wakes it.
        let woken = self.notify.notified();
        if self.is_canceled() {
            return;
        }
        woken.await;
    }
}

/// A failed fan-out as the engine sees it: a store's limit stays a limit.
fn storage_error(e: FetchError) -> StorageError {
    match e.1 {
        ErrorKind::Limit => StorageError::Limit(e.0),
        _ => StorageError::Unavailable(e.0),
    }
}

/// The engine's view of the sources for one query.
pub struct FanoutStorage {
    sources: Arc<Sources>,
    opts: FetchOptions,
    handle: Handle,
    warnings: Mutex<Vec<String>>,
    cancel: Option<Arc<Cancel>>,
}

impl FanoutStorage {
    /// `handle`: the runtime the fan-out runs on; `select` must be called from a thread
    /// that is not one of its workers (e.g. inside `spawn_blocking`).
    pub fn new(sources: Arc<Sources>, opts: FetchOptions, handle: Handle) -> Self {
        FanoutStorage {
            sources,
            opts,
            handle,
            warnings: Mutex::new(Vec::new()),
            cancel: None,
        }
    }

    /// Reads in progress stop (and fail) when `cancel` fires: a canceled query does
    /// not wait out a slow store.
    pub fn with_cancel(mut self, cancel: Arc<Cancel>) -> Self {
        self.cancel = Some(cancel);
        self
    }
}

/// Samples a query must have fetched for its end to hand freed memory back to the
/// operating system (≈ 64 MiB decoded).
const TRIM_AFTER_SAMPLES: u64 = 4 << 20;

impl Drop for FanoutStorage {
    /// After a large query: glibc keeps freed memory in its arenas (the high-water
    /// mark stays resident); `malloc_trim` returns what is free to the kernel.
    fn drop(&mut self) {
        if self.opts.cost.total().samples >= TRIM_AFTER_SAMPLES {
            release_free_memory();
        }
    }
}

/// How the process's allocator returns its free memory, when the binary chose one
/// other than glibc's malloc (set once, at start).
static RELEASE_FREE_MEMORY: OnceLock<fn()> = OnceLock::new();

/// Install the global allocator's way to return free memory (the binary calls this
/// before serving when it is not glibc's malloc); later calls are ignored.
pub fn set_free_memory_releaser(release: fn()) {
    let _ = RELEASE_FREE_MEMORY.set(release);
}

/// Return the allocator's free memory to the operating system (glibc's `malloc_trim`
/// unless [`set_free_memory_releaser`] installed another allocator's).
pub fn release_free_memory() {
    if let Some(release) = RELEASE_FREE_MEMORY.get() {
        release();
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Storage for FanoutStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<Vec<StorageSeries>, StorageError> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for s in self.select_lazy(matchers, mint, maxt, hints)? {
            let named = |e: StorageError| e.of_series(&s.labels);
            s.samples.decode_into(&mut buf).map_err(named)?;
            let mut histograms = Vec::new();
            s.histograms.decode_into(&mut histograms).map_err(named)?;
            out.push(StorageSeries {
                labels: s.labels,
                samples: std::mem::take(&mut buf),
                histograms,
                resolution: s.resolution,
            });
        }
        Ok(out)
    }

    /// Series whose chunks stay encoded until the engine consumes each; merged across
    /// sources and deduplicated then ([`crate::series`]).
    fn select_lazy(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        // A query shard's matcher names no label of any series: it is taken off here,
        // and the shard's series kept once they are merged and deduplicated.
        let (shard, matchers) = match ShardSelector::take_from(matchers) {
            Ok(Some((s, rest))) => (Some(s), std::borrow::Cow::Owned(rest)),
            Ok(None) => (None, std::borrow::Cow::Borrowed(matchers)),
            Err(e) => return Err(StorageError::Unavailable(e.to_string())),
        };
        let fetched = self.handle.block_on(async {
            let fetch = self.sources.fetch_shard(
                &self.opts,
                &matchers,
                shard,
                mint,
                maxt,
                Some(hints),
                false,
            );
            self.opts.cost.begin_select();
            let Some(cancel) = &self.cancel else {
                return fetch.await.map_err(storage_error);
            };
            tokio::select! {
                r = fetch => r.map_err(storage_error),
                () = cancel.canceled() => Err(StorageError::Unavailable("query canceled".into())),
            }
        })?;
        if !fetched.warnings.is_empty() {
            let mut w = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
            for x in fetched.warnings {
                if !w.contains(&x) {
                    w.push(x);
                }
            }
        }
        Ok(fetched
            .series
            .into_iter()
            .filter(|(l, s)| !s.is_empty() && shard.is_none_or(|sh| sh.owns(l)))
            .map(|(labels, series)| {
                let resolution = fetched.downsampled.get(&labels).copied().unwrap_or(0);
                // Histograms were decoded as their chunks arrived.
                let histograms = if series.has_histograms() {
                    let mut h = Vec::new();
                    series.decode_histograms_to(&mut h);
                    strata_promql::HistogramSamples::Decoded(h)
                } else {
                    Default::default()
                };
                let samples = match series.replicas.as_slice() {
                    // Decoded already (downsampled aggregates): nothing to defer.
                    [p] if matches!(p.as_slice(), [Part::Samples(_)]) => {
                        Samples::Decoded(series.decode().expect("decoded samples"))
                    }
                    _ => Samples::Lazy(Box::new(EngineSeries { series })),
                };
                SelectedSeries {
                    labels,
                    samples,
                    histograms,
                    resolution,
                }
            })
            .collect())
    }

    fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_never_double_counts() {
        let l = Labels::from_pairs([("__name__", "up")]);
        let a = vec![(l.clone(), vec![(1, 1.0), (2, 2.0), (3, 3.0)])];
        let b = vec![(l.clone(), vec![(2, 20.0), (3, 30.0), (4, 4.0)])];
        let m = merge_sources(vec![a, b], false);
        assert_eq!(m, vec![(l, vec![(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)])]);
    }

    /// A store's limit fails the query even with partial responses (the answer would
    /// silently lack what was cut off) and stays a limit for the engine; other failures
    /// are warnings.
    #[test]
    fn a_limit_is_never_a_partial_response() {
        let sources = Sources {
            endpoints: Vec::new(),
            ring: None,
            bucket: None,
            metrics: QuerierMetrics::new(&strata_kit::metrics::Registry::new()),
        };
        let opts = FetchOptions {
            tenant: "t".into(),
            partial_response: true,
            replica_labels: None,
            max_resolution_ms: 0,
            timeout: Duration::from_secs(1),
            cost: Default::default(),
            min_time: i64::MIN,
        };
        let limit = StoreError::from_status(&tonic::Status::resource_exhausted("too many series"));
        let e = sources
            .source_failed(&opts, "endpoint a:1", &limit)
            .unwrap_err();
        assert_eq!(e.1, ErrorKind::Limit);
        assert_eq!(
            e.0,
            "endpoint a:1: rpc error: code = ResourceExhausted desc = too many series"
        );
        assert!(matches!(storage_error(e), StorageError::Limit(_)));
        let down = StoreError::from_status(&tonic::Status::unavailable("connection refused"));
        let w = sources.source_failed(&opts, "endpoint a:1", &down).unwrap();
        assert_eq!(
            w,
            "endpoint a:1: rpc error: code = Unavailable desc = connection refused"
        );
    }
}
