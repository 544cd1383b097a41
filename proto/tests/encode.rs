//! `WriteRequestRef::encode_series`: concatenated series decode (with prost) to the
//! same request, for any subset and order.

use strata_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};
use strata_proto::{Message, WriteRequestRef};

fn request() -> WriteRequest {
    let mut ts = Vec::new();
    for i in 0..50i64 {
        ts.push(TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: format!("metric_{i}"),
                },
                Label {
                    name: "long".into(),
                    value: "é".repeat(i as usize * 7),
                },
            ],
            samples: (0..i)
                .map(|j| Sample {
                    value: if j % 3 == 0 {
                        f64::NAN
                    } else {
                        j as f64 * -1.5
                    },
                    timestamp: if j == 1 {
                        -5
                    } else {
                        1_700_000_000_000 + j * 15_000
                    },
                })
                .collect(),
            ..Default::default()
        });
    }
    WriteRequest {
        timeseries: ts,
        metadata: vec![],
    }
}

#[test]
fn encoded_subset_decodes_to_the_same_series() {
    let req = request();
    let r = WriteRequestRef::from_owned(&req);
    let pick: Vec<usize> = (0..r.len()).filter(|i| i % 3 != 1).rev().collect();
    let mut buf = Vec::new();
    for &i in &pick {
        r.encode_series(i, &mut buf);
    }
    let back = WriteRequest::decode(buf.as_slice()).unwrap();
    assert_eq!(back.timeseries.len(), pick.len());
    for (got, &i) in back.timeseries.iter().zip(&pick) {
        let want = &req.timeseries[i];
        assert_eq!(got.labels, want.labels);
        assert_eq!(got.samples.len(), want.samples.len());
        for (a, b) in got.samples.iter().zip(&want.samples) {
            assert_eq!(a.timestamp, b.timestamp);
            assert_eq!(a.value.to_bits(), b.value.to_bits());
        }
    }
    // and through the borrowing decoder
    let again = strata_proto::decode_write_request_ref(&buf).unwrap();
    assert_eq!(again.len(), pick.len());
    assert_eq!(
        again.num_samples(),
        pick.iter()
            .map(|&i| req.timeseries[i].samples.len())
            .sum::<usize>()
    );
}
