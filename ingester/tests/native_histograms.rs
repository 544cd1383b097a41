//! Native histograms on the write path, in process: remote write histograms validated
//! (Prometheus's rules, Mimir's bucket limit), logged to the WAL before the head,
//! replayed after a crash and kept across a checkpoint.

use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use strata_ingester::{push, Ingester, IngesterArgs};
use strata_kit::metrics::Registry;
use strata_objstore::Bucket;
use strata_proto::prometheus::histogram::{Count, ZeroCount};
use strata_proto::prometheus::{BucketSpan, Histogram, Label, Sample, TimeSeries, WriteRequest};
use strata_tsdb::histogram::FloatHistogram;
use strata_tsdb::matcher::Matcher;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: IngesterArgs,
}

fn open(dir: &Path, flags: &[&str]) -> Arc<Ingester> {
    let mut argv = vec![
        "ingester".to_string(),
        format!("--tsdb.path={}", dir.display()),
        "--tsdb.wal-fsync=never".to_string(),
    ];
    argv.extend(flags.iter().map(|f| f.to_string()));
    let cli = Cli::try_parse_from(argv).unwrap();
    let bucket = Bucket::filesystem(dir.join("bucket")).unwrap();
    Ingester::open(cli.args, bucket, &Registry::new()).unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn labels(name: &str) -> Vec<Label> {
    vec![
        Label {
            name: "__name__".into(),
            value: name.into(),
        },
        Label {
            name: "job".into(),
            value: "test".into(),
        },
    ]
}

/// An integer histogram at schema 3 whose buckets grow with `i`.
fn int_hist(t: i64, i: u64) -> Histogram {
    // buckets (absolute) 1+i, 2+i, 3+i at indexes -1, 0, 3; zero bucket 1
    let abs = [1 + i as i64, 2 + i as i64, 3 + i as i64];
    Histogram {
        count: Some(Count::CountInt(abs.iter().sum::<i64>() as u64 + 1)),
        sum: 10.0 * (i + 1) as f64,
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: Some(ZeroCount::ZeroCountInt(1)),
        positive_spans: vec![
            BucketSpan {
                offset: -1,
                length: 2,
            },
            BucketSpan {
                offset: 2,
                length: 1,
            },
        ],
        positive_deltas: vec![abs[0], abs[1] - abs[0], abs[2] - abs[1]],
        timestamp: t,
        ..Default::default()
    }
}

fn series(name: &str, samples: &[(i64, f64)], hists: Vec<Histogram>) -> TimeSeries {
    TimeSeries {
        labels: labels(name),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
        histograms: hists,
        ..Default::default()
    }
}

fn request(series: Vec<TimeSeries>) -> WriteRequest {
    WriteRequest {
        timeseries: series,
        metadata: vec![],
    }
}

/// The head's histograms of `name`, counter reset hints cleared (the chunk sets its
/// own).
fn head_histograms(ing: &Ingester, name: &str) -> Vec<(i64, FloatHistogram)> {
    let t = ing.tenant("team").unwrap();
    t.head
        .select(&[Matcher::equal("__name__", name)], i64::MIN, i64::MAX)
        .unwrap()
        .iter()
        .flat_map(|s| s.histograms())
        .map(|(t, mut h)| {
            h.counter_reset_hint = Default::default();
            (t, h)
        })
        .collect()
}

fn want(t: i64, i: u64) -> (i64, FloatHistogram) {
    let view = strata_proto::WriteRequestRef::from_owned(&request(vec![series(
        "x",
        &[],
        vec![int_hist(t, i)],
    )]))
    .histograms_of(0)
    .map(|h| strata_ingester::histograms::from_view(&h))
    .next()
    .unwrap();
    let strata_ingester::histograms::HistSample::Int(h) = view else {
        panic!()
    };
    (t, h.to_float())
}

#[test]
fn histograms_are_stored_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    {
        let ing = open(dir.path(), &[]);
        // floats and histograms of different series, several histograms per request
        let out = push::ingest(
            &ing,
            "team",
            request(vec![
                series(
                    "lat",
                    &[],
                    (0..3).map(|i| int_hist(t0 + i * 1000, i as u64)).collect(),
                ),
                series("up", &[(t0, 1.0)], vec![]),
            ]),
        )
        .unwrap();
        assert!(out.first_error.is_none(), "{:?}", out.first_error);
        assert_eq!((out.accepted_samples, out.accepted_histograms), (1, 3));
        // a float histogram and a stale marker on another series
        let mut f = Histogram {
            count: Some(Count::CountFloat(2.5)),
            sum: 1.25,
            schema: 0,
            positive_spans: vec![BucketSpan {
                offset: 0,
                length: 2,
            }],
            positive_counts: vec![1.0, 1.5],
            timestamp: t0,
            ..Default::default()
        };
        let stale = Histogram {
            sum: f64::from_bits(0x7ff0_0000_0000_0002),
            timestamp: t0 + 1000,
            ..Default::default()
        };
        let out = push::ingest(
            &ing,
            "team",
            request(vec![series("flt", &[], vec![f.clone(), stale])]),
        )
        .unwrap();
        assert_eq!(out.accepted_histograms, 2, "{:?}", out.first_error);
        // out of order and a duplicate timestamp are refused, as for floats
        f.timestamp = t0 - 1;
        let out = push::ingest(&ing, "team", request(vec![series("flt", &[], vec![f])])).unwrap();
        assert_eq!(out.accepted_histograms, 0);
        assert!(
            out.rejected.contains_key("sample_out_of_order"),
            "{:?}",
            out.rejected
        );
        // an exact retry is accepted and not stored twice
        let out = push::ingest(
            &ing,
            "team",
            request(vec![series("lat", &[], vec![int_hist(t0 + 2000, 2)])]),
        )
        .unwrap();
        assert!(out.first_error.is_none(), "{:?}", out.first_error);
        assert_eq!(
            head_histograms(&ing, "lat"),
            (0..3)
                .map(|i| want(t0 + i * 1000, i as u64))
                .collect::<Vec<_>>()
        );
        // dropped without a sync or a shutdown: kill -9
    }
    let ing = open(dir.path(), &[]);
    assert_eq!(
        head_histograms(&ing, "lat"),
        (0..3)
            .map(|i| want(t0 + i * 1000, i as u64))
            .collect::<Vec<_>>()
    );
    let flt = head_histograms(&ing, "flt");
    assert_eq!(flt.len(), 2);
    assert_eq!(flt[0].1.positive_buckets, vec![1.0, 1.5]);
    assert_eq!(flt[1].1.sum.to_bits(), 0x7ff0_0000_0000_0002);
    // appends continue after the replay
    let out = push::ingest(
        &ing,
        "team",
        request(vec![series("lat", &[], vec![int_hist(t0 + 3000, 3)])]),
    )
    .unwrap();
    assert_eq!(out.accepted_histograms, 1, "{:?}", out.first_error);
}

#[test]
fn invalid_histograms_are_refused_with_prometheus_messages() {
    let dir = tempfile::tempdir().unwrap();
    let ing = open(dir.path(), &[]);
    let t0 = now_ms() - 60_000;
    let mut bad_spans = int_hist(t0, 0);
    bad_spans.positive_deltas.pop();
    let mut bad_count = int_hist(t0 + 1000, 0);
    bad_count.count = Some(Count::CountInt(3));
    let mut negative = int_hist(t0 + 2000, 0);
    negative.positive_deltas = vec![1, -5, 0];
    let out = push::ingest(
        &ing,
        "team",
        request(vec![
            series("a", &[], vec![bad_spans]),
            series("b", &[], vec![bad_count]),
            series("c", &[(t0, 1.0)], vec![negative]),
        ]),
    )
    .unwrap();
    assert_eq!(out.accepted_samples, 1);
    assert_eq!(out.accepted_histograms, 0);
    let msg = out.first_error.clone().unwrap();
    assert!(
        msg.contains("spans need 3 buckets, have 2 buckets"),
        "{msg}"
    );
    assert!(
        msg.contains("err-mimir-native-histogram-spans-buckets-mismatch"),
        "{msg}"
    );
    for r in [
        "native_histogram_spans_buckets_mismatch",
        "native_histogram_count_mismatch",
        "native_histogram_negative_bucket_count",
    ] {
        assert_eq!(
            out.rejected.get(r).map(|e| e.0),
            Some(1),
            "{r}: {:?}",
            out.rejected
        );
    }
    // nothing of the refused histograms reached the head, and their series were not created
    assert!(head_histograms(&ing, "a").is_empty());
    assert_eq!(ing.tenant("team").unwrap().head.num_series(), 1);
}

#[test]
fn the_bucket_limit_reduces_resolution_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    // 3 buckets at schema 3 (indexes -1, 0, 3): at schema 2 they become 2 (0 and 2)
    let ing = open(dir.path(), &["--validation.max-native-histogram-buckets=2"]);
    let out = push::ingest(
        &ing,
        "team",
        request(vec![series("lat", &[], vec![int_hist(t0, 0)])]),
    )
    .unwrap();
    assert_eq!(out.accepted_histograms, 1, "{:?}", out.first_error);
    let got = head_histograms(&ing, "lat");
    assert_eq!(got[0].1.schema, 2);
    assert_eq!(got[0].1.positive_buckets.len(), 2);
    assert_eq!(got[0].1.count, 7.0);
    assert_eq!(got[0].1.positive_buckets.iter().sum::<f64>(), 6.0);
    drop(ing);

    let dir = tempfile::tempdir().unwrap();
    let ing = open(
        dir.path(),
        &[
            "--validation.max-native-histogram-buckets=2",
            "--validation.reduce-native-histogram-over-max-buckets=false",
        ],
    );
    let out = push::ingest(
        &ing,
        "team",
        request(vec![series("lat", &[], vec![int_hist(t0, 0)])]),
    )
    .unwrap();
    assert_eq!(out.accepted_histograms, 0);
    let msg = out.first_error.unwrap();
    assert!(
        msg.contains("too many buckets")
            && msg.contains("--validation.max-native-histogram-buckets"),
        "{msg}"
    );
}

/// A block cut rewrites the WAL as a checkpoint of what the head keeps: histograms kept
/// there (a series switching from float to integer histograms included) replay after a
/// crash as they were.
#[test]
fn a_checkpoint_keeps_histograms_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = 60_000;
    let b0 = (now_ms() - 40 * m).div_euclid(10 * m) * 10 * m;
    let float_hist = |t: i64, i: i64| Histogram {
        count: Some(Count::CountFloat(2.0 + i as f64)),
        sum: 1.0,
        schema: 0,
        positive_spans: vec![BucketSpan {
            offset: 0,
            length: 1,
        }],
        positive_counts: vec![2.0 + i as f64],
        timestamp: t,
        ..Default::default()
    };
    let before;
    {
        let ing = open(dir.path(), &["--tsdb.block-duration=10m"]);
        for i in 0..30 {
            let t = b0 + i * m;
            // minutes 0..24 float, 25..29 integer histograms (a checkpoint writing
            // all integer ones first would replay the float ones as out of order)
            let h = if i < 25 {
                float_hist(t, i)
            } else {
                int_hist(t, i as u64)
            };
            let out =
                push::ingest(&ing, "team", request(vec![series("lat", &[], vec![h])])).unwrap();
            assert_eq!(out.accepted_histograms, 1, "{:?}", out.first_error);
        }
        before = head_histograms(&ing, "lat");
        let cut = ing.tenant("team").unwrap().cut_blocks(false).unwrap();
        assert_eq!(cut.len(), 2);
    }
    let ing = open(dir.path(), &["--tsdb.block-duration=10m"]);
    let after = head_histograms(&ing, "lat");
    let kept: Vec<_> = before
        .into_iter()
        .filter(|(t, _)| *t >= b0 + 20 * m)
        .collect();
    assert_eq!(after.len(), 10);
    assert_eq!(after, kept);
}
