//! The querier as a Store API endpoint (Thanos's querier `--grpc-address`): a global
//! querier can list per-cluster queriers with `--endpoint` and see everything they see,
//! merged and deduplicated by them. Series carry their samples as XOR chunks cut as a
//! TSDB cuts them.

use std::sync::Arc;

use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    chunk, series_response, AggrChunk, Chunk, InfoRequest, InfoResponse, LabelNamesRequest,
    LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, PartialResponseStrategy, Series,
    SeriesRequest, SeriesResponse, StoreType,
};
use strata_store::{labels_to_proto, matchers_from_proto};
use strata_tsdb::chunkenc::{ChunkCutter, Encoding};
use tonic::{Request, Response, Status};

use crate::fanout::FetchOptions;
use crate::Querier;

pub struct QuerierStore {
    q: Arc<Querier>,
}

impl QuerierStore {
    pub fn new(q: Arc<Querier>) -> Self {
        QuerierStore { q }
    }

    pub fn into_server(self) -> StoreServer<QuerierStore> {
        StoreServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// The querier's own defaults for the request's tenant; a request that disables
    /// partial responses (the strategy `ABORT`, or the older flag) gets them disabled.
    fn options<T>(
        &self,
        req: &Request<T>,
        strategy: i32,
        disabled: bool,
    ) -> Result<FetchOptions, Status> {
        let tenant = strata_store::tenant_of(req)?;
        let mut opts = self.q.default_fetch_options(&tenant);
        if disabled || strategy == PartialResponseStrategy::Abort as i32 {
            opts.partial_response = false;
        }
        Ok(opts)
    }

    /// Label names (`name` None) or the values of `name`, and warnings.
    async fn labels(
        &self,
        opts: FetchOptions,
        name: Option<&str>,
        matchers: &[strata_proto::prometheus::LabelMatcher],
        start: i64,
        end: i64,
    ) -> Result<(Vec<String>, Vec<String>), Status> {
        let matchers = matchers_from_proto(matchers)?;
        self.q
            .sources
            .labels(&opts, name, &matchers, start, end)
            .await
            .map_err(|e| Status::unavailable(e.0))
    }
}

type SeriesStream = tokio_stream::Iter<std::vec::IntoIter<Result<SeriesResponse, Status>>>;

#[tonic::async_trait]
impl Store for QuerierStore {
    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        // Its stores' label sets differ: advertise none, and every time.
        Ok(Response::new(InfoResponse {
            min_time: i64::MIN,
            max_time: i64::MAX,
            store_type: StoreType::Query as i32,
            ..Default::default()
        }))
    }

    type SeriesStream = SeriesStream;

    async fn series(
        &self,
        req: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let (strategy, disabled) = (
            req.get_ref().partial_response_strategy,
            req.get_ref().partial_response_disabled,
        );
        let opts = self.options(&req, strategy, disabled)?;
        let r = req.into_inner();
        let matchers = matchers_from_proto(&r.matchers)?;
        let fetched = self
            .q
            .sources
            .fetch_lazy(
                &opts,
                &matchers,
                r.min_time,
                r.max_time,
                None,
                r.skip_chunks,
            )
            .await
            .map_err(|e| Status::unavailable(e.0))?;
        let mut frames: Vec<Result<SeriesResponse, Status>> = fetched
            .warnings
            .into_iter()
            .map(|w| {
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Warning(w)),
                })
            })
            .collect();
        for (labels, series) in fetched.series {
            let mut hists = Vec::new();
            series.decode_histograms_to(&mut hists);
            let samples = series
                .decode()
                .map_err(|e| Status::internal(format!("series {labels}: chunk data: {e}")))?;
            let raw =
                |(min_time, max_time, encoding, data): (i64, i64, chunk::Encoding, Vec<u8>)| {
                    AggrChunk {
                        min_time,
                        max_time,
                        raw: Some(Chunk {
                            r#type: encoding as i32,
                            data: data.into(),
                            hash: 0,
                        }),
                        ..AggrChunk::default()
                    }
                };
            let chunks: Vec<AggrChunk> = if hists.is_empty() {
                let mut cutter = ChunkCutter::new(2 * 3_600_000);
                for (t, v) in samples {
                    cutter.append(t, v);
                }
                cutter
                    .finish()
                    .into_iter()
                    .map(|c| raw((c.min_time, c.max_time, chunk::Encoding::Xor, c.data)))
                    .collect()
            } else {
                // Thanos's numbering: XOR 0, HISTOGRAM 1, FLOAT_HISTOGRAM 2
                crate::series::cut_mixed(samples, hists)
                    .into_iter()
                    .map(|c| {
                        let enc = match c.encoding {
                            Encoding::Histogram => chunk::Encoding::Histogram,
                            Encoding::FloatHistogram => chunk::Encoding::FloatHistogram,
                            _ => chunk::Encoding::Xor,
                        };
                        raw((c.min_time, c.max_time, enc, c.data))
                    })
                    .collect()
            };
            frames.push(Ok(SeriesResponse {
                result: Some(series_response::Result::Series(Series {
                    labels: labels_to_proto(&labels),
                    chunks,
                })),
            }));
        }
        Ok(Response::new(tokio_stream::iter(frames)))
    }

    async fn label_names(
        &self,
        req: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let r = req.get_ref();
        let opts = self.options(
            &req,
            r.partial_response_strategy,
            r.partial_response_disabled,
        )?;
        let (names, warnings) = self.labels(opts, None, &r.matchers, r.start, r.end).await?;
        Ok(Response::new(LabelNamesResponse {
            names,
            warnings,
            ..Default::default()
        }))
    }

    async fn label_values(
        &self,
        req: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let r = req.get_ref();
        let opts = self.options(
            &req,
            r.partial_response_strategy,
            r.partial_response_disabled,
        )?;
        let (values, warnings) = self
            .labels(opts, Some(&r.label), &r.matchers, r.start, r.end)
            .await?;
        Ok(Response::new(LabelValuesResponse {
            values,
            warnings,
            ..Default::default()
        }))
    }
}
