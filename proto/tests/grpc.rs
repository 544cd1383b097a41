//! The generated Store client and server talk to each other over a real socket.

use std::pin::Pin;

use futures::Stream;
use strata_proto::prometheus::{label_matcher, Label, LabelMatcher};
use strata_proto::store::store_client::StoreClient;
use strata_proto::store::store_server::{Store, StoreServer};
use strata_proto::store::{
    chunk, series_response, AggrChunk, Chunk, InfoRequest, InfoResponse, LabelNamesRequest,
    LabelNamesResponse, LabelSet, LabelValuesRequest, LabelValuesResponse, Series, SeriesRequest,
    SeriesResponse, StoreType, TENANT_METADATA_KEY,
};
use tonic::{Request, Response, Status};

struct Fake;

#[tonic::async_trait]
impl Store for Fake {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            min_time: 1,
            max_time: 2,
            store_type: StoreType::Receive as i32,
            label_sets: vec![LabelSet {
                labels: vec![lbl("replica", "a")],
            }],
            ..Default::default()
        }))
    }

    type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

    async fn series(
        &self,
        req: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let tenant = req
            .metadata()
            .get(TENANT_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .to_string();
        let req = req.into_inner();
        let name = req
            .matchers
            .first()
            .map(|m| m.value.clone())
            .unwrap_or_default();
        let series = Series {
            labels: vec![lbl("__name__", &name), lbl("tenant", &tenant)],
            chunks: vec![AggrChunk {
                min_time: req.min_time,
                max_time: req.max_time,
                raw: Some(Chunk {
                    r#type: chunk::Encoding::Xor as i32,
                    data: bytes::Bytes::from_static(b"\x00\x01"),
                    hash: 0,
                }),
                ..Default::default()
            }],
        };
        let frames = vec![
            Ok(SeriesResponse {
                result: Some(series_response::Result::Series(series)),
            }),
            Ok(SeriesResponse {
                result: Some(series_response::Result::Warning("partial".into())),
            }),
        ];
        Ok(Response::new(Box::pin(futures::stream::iter(frames))))
    }

    async fn label_names(
        &self,
        _: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        Err(Status::unimplemented("label names"))
    }

    async fn label_values(
        &self,
        req: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        Ok(Response::new(LabelValuesResponse {
            values: vec![req.into_inner().label],
            ..Default::default()
        }))
    }
}

fn lbl(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

#[tokio::test]
async fn store_client_and_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(StoreServer::new(Fake))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );

    let mut client = StoreClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.min_time, info.max_time), (1, 2));
    assert_eq!(info.store_type(), StoreType::Receive);
    assert_eq!(info.label_sets[0].labels, vec![lbl("replica", "a")]);

    let mut req = Request::new(SeriesRequest {
        min_time: 10,
        max_time: 20,
        matchers: vec![LabelMatcher {
            r#type: label_matcher::Type::Eq as i32,
            name: "__name__".into(),
            value: "up".into(),
        }],
        ..Default::default()
    });
    req.metadata_mut()
        .insert(TENANT_METADATA_KEY, "team-a".parse().unwrap());
    let mut stream = client.series(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(frame) = stream.message().await.unwrap() {
        got.push(frame.result.unwrap());
    }
    assert_eq!(got.len(), 2);
    let series_response::Result::Series(s) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(
        s.labels,
        vec![lbl("__name__", "up"), lbl("tenant", "team-a")]
    );
    assert_eq!(s.chunks[0].raw.as_ref().unwrap().data.as_ref(), b"\x00\x01");
    assert_eq!((s.chunks[0].min_time, s.chunks[0].max_time), (10, 20));
    assert_eq!(got[1], series_response::Result::Warning("partial".into()));

    let values = client
        .label_values(LabelValuesRequest {
            label: "job".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(values.values, vec!["job".to_string()]);

    let err = client
        .label_names(LabelNamesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
