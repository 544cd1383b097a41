//! Metric metadata and exemplars over the endpoints: every Store API endpoint (and
//! ring member) is asked with the `strata.metadata.v1` services, in parallel; one that
//! does not offer them (a sidecar, a store gateway) answers Unimplemented and is
//! skipped, others' failures follow the partial-response rules of series reads. The
//! bucket holds neither, so it is not asked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use strata_proto::metadata::exemplars_client::ExemplarsClient;
use strata_proto::metadata::metadata_client::MetadataClient;
use strata_proto::metadata::{
    ExemplarsRequest, ExemplarsResponse, Meta, MetricMetadataRequest, MetricMetadataResponse,
};
use strata_store::StoreError;
use tonic::transport::Channel;

use super::{Endpoint, FetchError, FetchOptions, Sources, MAX_MESSAGE};

/// Per family: the union of every source's entries, as (type, help, unit).
pub type MetadataAnswer = BTreeMap<String, BTreeSet<(String, String, String)>>;

/// A lazily connected channel per endpoint address, shared by these calls.
fn channel(addr: &str, connect_timeout: Duration) -> Result<Channel, String> {
    static CHANNELS: OnceLock<Mutex<HashMap<String, Channel>>> = OnceLock::new();
    let mut g = CHANNELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = g.get(addr) {
        return Ok(c.clone());
    }
    // with the process's --grpc-client-tls-* settings, as the Store API calls
    let ch = strata_kit::grpc_tls::endpoint(addr)
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout)
        .connect_lazy();
    g.insert(addr.to_string(), ch.clone());
    Ok(ch)
}

fn rpc_error(s: tonic::Status) -> Option<StoreError> {
    match s.code() {
        // the endpoint does not keep metadata or exemplars: nothing to add
        tonic::Code::Unimplemented => None,
        _ => Some(StoreError::Transient(s.message().to_string())),
    }
}

impl Endpoint {
    async fn metadata(
        &self,
        req: MetricMetadataRequest,
        opts: &FetchOptions,
    ) -> Result<MetricMetadataResponse, StoreError> {
        if let Some(local) = &self.local {
            return local
                .metadata(&opts.tenant, &req)
                .map_err(StoreError::Other);
        }
        let ch = channel(&self.addr, opts.timeout).map_err(StoreError::Other)?;
        let mut c = MetadataClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
        match c
            .metric_metadata(Self::request(req, &opts.tenant, opts.timeout))
            .await
        {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => rpc_error(s).map_or(Ok(Default::default()), Err),
        }
    }

    async fn exemplars(
        &self,
        req: ExemplarsRequest,
        opts: &FetchOptions,
    ) -> Result<ExemplarsResponse, StoreError> {
        if let Some(local) = &self.local {
            return local
                .exemplars(&opts.tenant, &req)
                .map_err(StoreError::Other);
        }
        let ch = channel(&self.addr, opts.timeout).map_err(StoreError::Other)?;
        let mut c = ExemplarsClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
        match c
            .exemplars(Self::request(req, &opts.tenant, opts.timeout))
            .await
        {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => rpc_error(s).map_or(Ok(Default::default()), Err),
        }
    }
}

impl Sources {
    /// Ask every endpoint in parallel; failures follow the partial-response rules.
    async fn ask_all<T, F, Fut>(
        &self,
        opts: &FetchOptions,
        call: F,
    ) -> Result<(Vec<T>, Vec<String>), FetchError>
    where
        F: Fn(std::sync::Arc<Endpoint>) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let (all_eps, tolerated) = self.all_endpoints();
        let in_ring: Vec<bool> = all_eps.iter().map(|(_, r)| *r).collect();
        let calls = all_eps.iter().map(|(ep, _)| {
            let fut = call(ep.clone());
            async move {
                let r = tokio::time::timeout(opts.timeout, fut)
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Transient(format!(
                            "no response within {:?}",
                            opts.timeout
                        )))
                    });
                (format!("endpoint {}", ep.addr), r)
            }
        });
        let mut results = futures::future::join_all(calls).await;
        self.forgive_ring_failures(&mut results, &in_ring, tolerated);
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        for (src, r) in results {
            match r {
                Ok(v) => out.push(v),
                Err(e) => warnings.push(self.source_failed(opts, &src, &e)?),
            }
        }
        Ok((out, warnings))
    }

    /// `/api/v1/metadata` over every endpoint: the union of their entries per family
    /// (limits are applied by the caller to the union, and passed on so each source
    /// sends no more than could be kept).
    pub async fn metadata(
        &self,
        opts: &FetchOptions,
        req: MetricMetadataRequest,
    ) -> Result<(MetadataAnswer, Vec<String>), FetchError> {
        let (parts, warnings) = self
            .ask_all(opts, |ep| {
                let req = req.clone();
                async move { ep.metadata(req, opts).await }
            })
            .await?;
        let mut out = MetadataAnswer::new();
        for p in parts {
            for f in p.families {
                let e = out.entry(f.name).or_default();
                for Meta { r#type, help, unit } in f.metadata {
                    e.insert((r#type, help, unit));
                }
            }
        }
        Ok((out, warnings))
    }

    /// `/api/v1/query_exemplars` over every endpoint: per series (by labels), the
    /// exemplars of all sources, sorted by time and without duplicates (replicas of a
    /// series hold the same ones).
    pub async fn exemplars(
        &self,
        opts: &FetchOptions,
        mut req: ExemplarsRequest,
    ) -> Result<(ExemplarsResponse, Vec<String>), FetchError> {
        match opts.clamp(req.start, req.end) {
            Some((start, _)) => req.start = start,
            None => return Ok(Default::default()),
        }
        let (parts, warnings) = self
            .ask_all(opts, |ep| {
                let req = req.clone();
                async move { ep.exemplars(req, opts).await }
            })
            .await?;
        type Key = Vec<(String, String)>;
        let mut by_series: BTreeMap<Key, Vec<strata_proto::prometheus::Exemplar>> = BTreeMap::new();
        for p in parts {
            for s in p.series {
                let mut key: Key = s
                    .series_labels
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect();
                key.sort();
                by_series.entry(key).or_default().extend(s.exemplars);
            }
        }
        let series = by_series
            .into_iter()
            .map(|(k, mut exs)| {
                exs.sort_by(|a, b| {
                    a.timestamp
                        .cmp(&b.timestamp)
                        .then(a.value.total_cmp(&b.value))
                });
                exs.dedup_by(|a, b| {
                    a.timestamp == b.timestamp
                        && a.value.to_bits() == b.value.to_bits()
                        && a.labels == b.labels
                });
                strata_proto::metadata::SeriesExemplars {
                    series_labels: k
                        .into_iter()
                        .map(|(name, value)| strata_proto::prometheus::Label { name, value })
                        .collect(),
                    exemplars: exs,
                }
            })
            .collect();
        Ok((ExemplarsResponse { series }, warnings))
    }
}
