//! The sidecar's Store API: Prometheus's recent data through its remote-read endpoint
//! (streamed XOR chunks, passed through without re-encoding), with the external labels
//! on every series, so the querier sees the last hours before any block exists.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_proto::prometheus::{chunk, label_matcher, Label, LabelMatcher};
use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    series_response, AggrChunk, Chunk, InfoRequest, InfoResponse, LabelNamesRequest,
    LabelNamesResponse, LabelSet, LabelValuesRequest, LabelValuesResponse, Series, SeriesRequest,
    SeriesResponse, StoreType,
};
use strata_store::matcher_from_proto;
use tonic::{Request, Response, Status};

use crate::Sidecar;

pub struct StoreService {
    sc: Arc<Sidecar>,
}

impl StoreService {
    pub fn new(sc: Arc<Sidecar>) -> Self {
        StoreService { sc }
    }

    pub fn into_server(self) -> StoreServer<StoreService> {
        StoreServer::new(self).max_encoding_message_size(64 << 20)
    }
}

impl StoreService {
    /// The label sets of the series matching `matchers` in `[start, end]` (none when
    /// the request is for another tenant or other external labels).
    async fn matching_labels(
        &self,
        tenant: Option<&str>,
        matchers: Vec<LabelMatcher>,
        start: i64,
        end: i64,
    ) -> Result<Vec<Vec<Label>>, Status> {
        if !self.applies(tenant, &matchers)? {
            return Ok(Vec::new());
        }
        self.series_labels(SeriesRequest {
            min_time: start,
            max_time: end,
            matchers,
            skip_chunks: true,
            ..Default::default()
        })
        .await
    }

    /// Whether the request is for this sidecar's tenant and its external labels.
    fn applies(&self, tenant: Option<&str>, matchers: &[LabelMatcher]) -> Result<bool, Status> {
        if let Some(t) = tenant {
            if t != self.sc.tenant {
                return Ok(false);
            }
        }
        let ext = self.sc.external_labels();
        for m in matchers {
            if let Some(v) = ext.get(&m.name) {
                if !matcher_from_proto(m)?.matches(v) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// The tenant a request names, by the rule every server shares (a bad one is
/// `InvalidArgument`); `None` when it names none: the sidecar serves its one tenant to
/// a request that does not say.
fn tenant_of<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    strata_store::requested_tenant(req)
}

/// Refuse bad matchers (a regex that does not compile) as `InvalidArgument`, as every
/// Store API server does, instead of passing them to Prometheus and answering its 500
/// as `Unavailable`.
fn validate(matchers: &[LabelMatcher]) -> Result<(), Status> {
    strata_store::matchers_from_proto(matchers).map(drop)
}

/// The matchers of a remote read: the request's, or without any one that matches every
/// series (Prometheus answers a remote read without matchers with no series, where
/// the other Store API servers answer every series).
fn read_matchers(mut matchers: Vec<LabelMatcher>) -> Vec<LabelMatcher> {
    if matchers.is_empty() {
        matchers.push(LabelMatcher {
            r#type: label_matcher::Type::Re as i32,
            name: "__name__".into(),
            value: ".+".into(),
        });
    }
    matchers
}

/// Add the external labels a series lacks (Prometheus adds its own configured ones;
/// labels given with `--label` are added here), keeping the labels sorted.
fn with_external(mut labels: Vec<Label>, ext: &BTreeMap<String, String>) -> Vec<Label> {
    for (k, v) in ext {
        if !labels.iter().any(|l| &l.name == k) {
            labels.push(Label {
                name: k.clone(),
                value: v.clone(),
            });
        }
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

type SeriesStream = tokio_stream::Iter<std::vec::IntoIter<Result<SeriesResponse, Status>>>;

#[tonic::async_trait]
impl Store for StoreService {
    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let labels: Vec<Label> = self
            .sc
            .external_labels()
            .into_iter()
            .map(|(name, value)| Label { name, value })
            .collect();
        Ok(Response::new(InfoResponse {
            labels: labels.clone(),
            min_time: i64::MIN,
            max_time: i64::MAX,
            store_type: StoreType::Sidecar as i32,
            label_sets: vec![LabelSet { labels }],
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
        validate(&r.matchers)?;
        if !self.applies(tenant.as_deref(), &r.matchers)? {
            return Ok(Response::new(tokio_stream::iter(Vec::new())));
        }
        let frames = self
            .sc
            .prom
            .read_chunked(r.min_time, r.max_time, read_matchers(r.matchers.clone()))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let ext = self.sc.external_labels();
        // A series may come split over consecutive frames: merge by labels.
        let mut out: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
        for f in frames {
            for cs in f.chunked_series {
                let labels = with_external(cs.labels, &ext);
                let key: Vec<(String, String)> = labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                let entry = out.entry(key).or_insert_with(|| Series {
                    labels,
                    chunks: Vec::new(),
                });
                if r.skip_chunks {
                    continue;
                }
                for c in cs.chunks {
                    let t = match chunk::Encoding::try_from(c.r#type) {
                        Ok(chunk::Encoding::Xor) => strata_proto::store::chunk::Encoding::Xor,
                        Ok(chunk::Encoding::Histogram) => {
                            strata_proto::store::chunk::Encoding::Histogram
                        }
                        Ok(chunk::Encoding::FloatHistogram) => {
                            strata_proto::store::chunk::Encoding::FloatHistogram
                        }
                        _ => continue,
                    };
                    entry.chunks.push(AggrChunk {
                        min_time: c.min_time_ms,
                        max_time: c.max_time_ms,
                        raw: Some(Chunk {
                            r#type: t as i32,
                            data: c.data,
                            hash: 0,
                        }),
                        ..AggrChunk::default()
                    });
                }
            }
        }
        let frames: Vec<Result<SeriesResponse, Status>> = out
            .into_values()
            .map(|s| {
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Series(s)),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(frames)))
    }

    async fn label_names(
        &self,
        req: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let tenant = tenant_of(&req)?;
        let r = req.into_inner();
        validate(&r.matchers)?;
        let mut names = std::collections::BTreeSet::new();
        for s in self
            .matching_labels(tenant.as_deref(), r.matchers, r.start, r.end)
            .await?
        {
            names.extend(s.into_iter().map(|l| l.name));
        }
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
        validate(&r.matchers)?;
        let mut values = std::collections::BTreeSet::new();
        for s in self
            .matching_labels(tenant.as_deref(), r.matchers, r.start, r.end)
            .await?
        {
            if let Some(l) = s.into_iter().find(|l| l.name == r.label) {
                values.insert(l.value);
            }
        }
        Ok(Response::new(LabelValuesResponse {
            values: values.into_iter().collect(),
            ..Default::default()
        }))
    }
}

impl StoreService {
    async fn series_labels(&self, req: SeriesRequest) -> Result<Vec<Vec<Label>>, Status> {
        let frames = self
            .sc
            .prom
            .read_chunked(req.min_time, req.max_time, read_matchers(req.matchers))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let ext = self.sc.external_labels();
        Ok(frames
            .into_iter()
            .flat_map(|f| f.chunked_series)
            .map(|cs| with_external(cs.labels, &ext))
            .collect())
    }
}
