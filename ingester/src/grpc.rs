//! The ingester's Store API (gRPC): the head and the local blocks of a tenant, so a
//! querier sees samples the moment they are acknowledged, before any block reaches the
//! bucket. The tenant comes from the `x-scope-orgid` metadata (default `anonymous`).

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_proto::prometheus::Label;
use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    chunk, series_response, AggrChunk, Chunk, InfoRequest, InfoResponse, LabelNamesRequest,
    LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, Series, SeriesRequest,
    SeriesResponse, StoreType,
};
use strata_store::{labels_to_proto, matchers_from_proto};
use strata_tsdb::chunkenc::Encoding;
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;
use tonic::{Request, Response, Status};

use crate::Ingester;

pub struct StoreService {
    ing: Arc<Ingester>,
}

impl StoreService {
    pub fn new(ing: Arc<Ingester>) -> Self {
        StoreService { ing }
    }

    pub fn into_server(self) -> StoreServer<StoreService> {
        StoreServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }
}

use strata_store::tenant_of;

fn raw_chunk(min_time: i64, max_time: i64, enc: Encoding, data: bytes::Bytes) -> AggrChunk {
    let t = match enc {
        Encoding::Histogram => chunk::Encoding::Histogram,
        Encoding::FloatHistogram => chunk::Encoding::FloatHistogram,
        _ => chunk::Encoding::Xor,
    };
    AggrChunk {
        min_time,
        max_time,
        raw: Some(Chunk {
            r#type: t as i32,
            data,
            hash: 0,
        }),
        ..AggrChunk::default()
    }
}

/// One chunk of a selected series.
pub struct SelectedChunk {
    pub min_time: i64,
    pub max_time: i64,
    pub encoding: Encoding,
    pub data: bytes::Bytes,
}

/// Where a selected chunk's bytes are: in the head (all of one series' chunks there,
/// taken when the series is sent: closed ones shared, the open one copied), or in a
/// block's (memory-mapped) chunk files, read when its series is sent. Nothing is
/// copied while planning, so a streamed answer holds one series' chunks at a time.
enum ChunkSrc {
    Head(strata_tsdb::head::HeadSeriesRef),
    Block {
        block: usize,
        min_time: i64,
        max_time: i64,
        chunk_ref: u64,
    },
}

/// The series a selection found, their chunks not yet read.
struct Planned {
    tenant: Option<crate::tenant::Tenant>,
    mint: i64,
    maxt: i64,
    blocks: Vec<std::sync::Arc<strata_tsdb::block::Block>>,
    series: Vec<(Labels, Vec<ChunkSrc>)>,
}

impl Planned {
    /// One series' chunks, read from the blocks and taken from the head now, sorted
    /// by time.
    fn read(&self, srcs: Vec<ChunkSrc>) -> Result<Vec<SelectedChunk>, strata_tsdb::Error> {
        let mut out = Vec::with_capacity(srcs.len());
        let mut from_head = false;
        for src in srcs {
            match src {
                ChunkSrc::Head(r) => {
                    let Some(t) = &self.tenant else { continue };
                    from_head = true;
                    out.extend(
                        t.head
                            .series_chunks(r, self.mint, self.maxt)?
                            .into_iter()
                            .map(|c| SelectedChunk {
                                min_time: c.min_time,
                                max_time: c.max_time,
                                encoding: c.encoding,
                                data: c.data,
                            }),
                    );
                }
                ChunkSrc::Block {
                    block,
                    min_time,
                    max_time,
                    chunk_ref,
                } => {
                    let (encoding, data) = self.blocks[block].chunks().chunk(chunk_ref)?;
                    out.push(SelectedChunk {
                        min_time,
                        max_time,
                        encoding,
                        data: bytes::Bytes::copy_from_slice(data),
                    });
                }
            }
        }
        if from_head {
            out.sort_by_key(|c| (c.min_time, c.max_time));
        }
        Ok(out)
    }
}

/// The series of the tenant matching `matchers` with data in `[mint, maxt]`, head and
/// local blocks merged, sorted by labels, chunks sorted by min time (none with
/// `skip_chunks`). Blocking: opens and reads local blocks; those `skip_block` accepts
/// are left out (the querier of `strata all` reads them from the bucket instead).
fn plan(
    ing: &Ingester,
    tenant: &str,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    skip_chunks: bool,
    skip_block: SkipBlock<'_>,
) -> Result<Planned, strata_tsdb::Error> {
    let Some(t) = ing.existing_tenant(tenant) else {
        return Ok(Planned {
            tenant: None,
            mint,
            maxt,
            blocks: Vec::new(),
            series: Vec::new(),
        });
    };
    // Only the blocks the query reads are opened: after a flush `strata all` reads
    // them all from the bucket, and opening each block's index per query was most of a
    // small query's cost.
    let blocks = t.block_cache.blocks_where(&t.blocks_dir(), |m| {
        !(m.max_time <= mint || m.min_time > maxt || skip_block(m))
    })?;
    if blocks.is_empty() {
        // Only the head: its series come sorted and unique, no merge map needed.
        let series = t
            .head
            .select_refs(matchers, mint, maxt)
            .into_iter()
            .map(|(r, l)| {
                let chunks = if skip_chunks {
                    Vec::new()
                } else {
                    vec![ChunkSrc::Head(r)]
                };
                (l, chunks)
            })
            .collect();
        return Ok(Planned {
            tenant: Some(t),
            mint,
            maxt,
            blocks,
            series,
        });
    }
    let mut out: BTreeMap<Labels, Vec<ChunkSrc>> = BTreeMap::new();
    for (bi, b) in blocks.iter().enumerate() {
        for s in b.select(matchers, mint, maxt)? {
            let s = s?;
            let entry = out.entry(s.labels.clone()).or_default();
            if skip_chunks {
                continue;
            }
            entry.extend(s.chunks.iter().map(|c| ChunkSrc::Block {
                block: bi,
                min_time: c.min_time,
                max_time: c.max_time,
                chunk_ref: c.chunk_ref,
            }));
        }
    }
    for (r, l) in t.head.select_refs(matchers, mint, maxt) {
        let entry = out.entry(l).or_default();
        if !skip_chunks {
            entry.push(ChunkSrc::Head(r));
        }
    }
    // block chunks in time order; the head's join them (and are sorted in) when read
    let key = |c: &ChunkSrc| match c {
        ChunkSrc::Head(_) => (i64::MAX, i64::MAX),
        ChunkSrc::Block {
            min_time, max_time, ..
        } => (*min_time, *max_time),
    };
    let series = out
        .into_iter()
        .filter(|(_, c)| skip_chunks || !c.is_empty())
        .map(|(l, mut chunks)| {
            chunks.sort_by_key(key);
            (l, chunks)
        })
        .collect();
    Ok(Planned {
        tenant: Some(t),
        mint,
        maxt,
        blocks,
        series,
    })
}

/// Every series of the tenant matching `matchers` with data in `[mint, maxt]`, head and
/// local blocks merged, sorted by labels, chunks sorted by min time (none with
/// `skip_chunks`).
pub fn select_chunks(
    ing: &Ingester,
    tenant: &str,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    skip_chunks: bool,
) -> Result<Vec<(Labels, Vec<SelectedChunk>)>, strata_tsdb::Error> {
    select_chunks_skipping(ing, tenant, matchers, mint, maxt, skip_chunks, &|_| false)
}

/// Which local blocks a selection leaves out (by their `meta.json`).
pub type SkipBlock<'a> = &'a dyn Fn(&strata_tsdb::meta::BlockMeta) -> bool;

/// [`select_chunks`] leaving out the local blocks `skip_block` accepts.
pub fn select_chunks_skipping(
    ing: &Ingester,
    tenant: &str,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    skip_chunks: bool,
    skip_block: SkipBlock<'_>,
) -> Result<Vec<(Labels, Vec<SelectedChunk>)>, strata_tsdb::Error> {
    let mut p = plan(ing, tenant, matchers, mint, maxt, skip_chunks, skip_block)?;
    let series = std::mem::take(&mut p.series);
    let mut out = Vec::with_capacity(series.len());
    for (l, srcs) in series {
        let chunks = p.read(srcs)?;
        // a head series garbage-collected since planning has nothing left to give
        if skip_chunks || !chunks.is_empty() {
            out.push((l, chunks));
        }
    }
    Ok(out)
}

/// [`select_chunks`] with the float samples in `[mint, maxt]` decoded (overlapping
/// chunks merged by time, the first copy of a timestamp kept): how the querier of
/// `strata all` reads its own ingester, with no gRPC round trip or protobuf copies.
#[allow(clippy::type_complexity)]
pub fn select_samples(
    ing: &Ingester,
    tenant: &str,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    skip_chunks: bool,
) -> Result<Vec<(Labels, Vec<(i64, f64)>)>, strata_tsdb::Error> {
    let series = select_chunks(ing, tenant, matchers, mint, maxt, skip_chunks)?;
    let mut out = Vec::with_capacity(series.len());
    for (labels, chunks) in series {
        let mut samples = Vec::new();
        let mut overlap = false;
        let mut prev_max = i64::MIN;
        for c in chunks.iter().filter(|c| c.encoding == Encoding::Xor) {
            overlap |= c.min_time <= prev_max;
            prev_max = prev_max.max(c.max_time);
            if let Err(e) =
                strata_tsdb::chunkenc::append_xor_in_range(&c.data, mint, maxt, &mut samples)
            {
                return Err(strata_tsdb::Error::Invalid(format!(
                    "series {labels}: chunk [{}, {}]: {e}",
                    c.min_time, c.max_time
                )));
            }
        }
        if overlap {
            samples.sort_by_key(|p| p.0); // stable: the first copy stays first
            samples.dedup_by_key(|p| p.0);
        }
        if skip_chunks || !samples.is_empty() {
            out.push((labels, samples));
        }
    }
    Ok(out)
}

/// Series frames queued between the blocking producer and the gRPC response: a client
/// that reads slowly stops the producer once this many (plus what the transport
/// buffers) wait, so a large answer is never built whole in memory.
pub const SERIES_FRAMES_IN_FLIGHT: usize = 16;

/// Produce the frames of a `Series` answer into `tx`, one series at a time (its block
/// chunks read just before it is sent). Blocking: runs on a blocking thread. Stops when
/// the client has gone (the receiver is dropped).
fn produce_series(
    ing: &Ingester,
    tenant: &str,
    req: &SeriesRequest,
    tx: &tokio::sync::mpsc::Sender<Result<SeriesResponse, Status>>,
) -> Result<(), Status> {
    let matchers = matchers_from_proto(&req.matchers)?;
    let internal = |e: strata_tsdb::Error| Status::internal(e.to_string());
    let mut p = plan(
        ing,
        tenant,
        &matchers,
        req.min_time,
        req.max_time,
        req.skip_chunks,
        &|_| false,
    )
    .map_err(internal)?;
    let m = &ing.metrics;
    for (l, srcs) in std::mem::take(&mut p.series) {
        let chunks: Vec<AggrChunk> = p
            .read(srcs)
            .map_err(internal)?
            .into_iter()
            .map(|c| raw_chunk(c.min_time, c.max_time, c.encoding, c.data))
            .collect();
        if !req.skip_chunks && chunks.is_empty() {
            continue;
        }
        let frame = Ok(SeriesResponse {
            result: Some(series_response::Result::Series(Series {
                labels: labels_to_proto(&l),
                chunks,
            })),
        });
        m.store_series_frames.inc();
        let frame = match tx.try_send(frame) {
            Ok(()) => continue,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(f)) => f,
        };
        // The client is behind: wait for it (counted, so backpressure is visible).
        m.store_series_backpressure_waits.inc();
        if tx.blocking_send(frame).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// The label sets of the tenant's series matching the request (no chunks read).
/// Blocking: opens local blocks.
fn select_labels(
    ing: &Ingester,
    tenant: &str,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
) -> Result<Vec<Labels>, Status> {
    let p = plan(ing, tenant, matchers, mint, maxt, true, &|_| false)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(p.series.into_iter().map(|(l, _)| l).collect())
}

/// Run blocking Store API work off the async runtime's worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

type SeriesStream = tokio_stream::wrappers::ReceiverStream<Result<SeriesResponse, Status>>;

#[tonic::async_trait]
impl Store for StoreService {
    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ing = self.ing.clone();
        // Opens every tenant's local blocks: off the runtime's worker threads.
        let (min, _max) = blocking(move || {
            let mut min = i64::MAX;
            let mut max = i64::MIN;
            for t in ing.tenants() {
                if t.head.num_series() > 0 {
                    min = min.min(t.head.min_time());
                    max = max.max(t.head.max_time());
                }
                if let Ok(bs) = t.block_cache.blocks_where(&t.blocks_dir(), |_| true) {
                    for b in bs {
                        min = min.min(b.meta().min_time);
                        max = max.max(b.meta().max_time);
                    }
                }
            }
            Ok((min, max))
        })
        .await?;
        let labels: Vec<Label> = self
            .ing
            .config
            .labels
            .iter()
            .map(|(n, v)| Label {
                name: n.clone(),
                value: v.clone(),
            })
            .collect();
        Ok(Response::new(InfoResponse {
            labels: labels.clone(),
            // an ingester accepts new data at any moment: advertise an open range
            min_time: if min == i64::MAX { i64::MIN } else { min },
            max_time: i64::MAX,
            store_type: StoreType::Receive as i32,
            label_sets: vec![strata_proto::store::LabelSet { labels }],
            supports_without_replica_labels: false,
        }))
    }

    type SeriesStream = SeriesStream;

    async fn series(
        &self,
        req: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let tenant = tenant_of(&req)?;
        let r = req.into_inner();
        // Refuse bad matchers as the call's status, before the stream starts.
        matchers_from_proto(&r.matchers)?;
        let ing = self.ing.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(SERIES_FRAMES_IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = produce_series(&ing, &tenant, &r, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn label_names(
        &self,
        req: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let r = req.into_inner();
        let matchers = matchers_from_proto(&r.matchers)?;
        let ing = self.ing.clone();
        let names = blocking(move || {
            // The names of the series with data in [start, end], head and blocks alike
            // (the head's own name index ignores time: a range outside its data listed
            // every name), as label values and the other Store API servers answer.
            let mut names = std::collections::BTreeSet::new();
            for l in select_labels(&ing, &tenant, &matchers, r.start, r.end)? {
                names.extend(l.iter().map(|l| l.name.to_string()));
            }
            Ok(names)
        })
        .await?;
        Ok(Response::new(LabelNamesResponse {
            names: names.into_iter().collect(),
            ..Default::default()
        }))
    }

    async fn label_values(
        &self,
        req: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let r = req.into_inner();
        let matchers = matchers_from_proto(&r.matchers)?;
        let ing = self.ing.clone();
        let values = blocking(move || {
            let mut values = std::collections::BTreeSet::new();
            for l in select_labels(&ing, &tenant, &matchers, r.start, r.end)? {
                if let Some(v) = l.get(&r.label) {
                    values.insert(v.to_string());
                }
            }
            Ok(values)
        })
        .await?;
        Ok(Response::new(LabelValuesResponse {
            values: values.into_iter().collect(),
            ..Default::default()
        }))
    }
}
