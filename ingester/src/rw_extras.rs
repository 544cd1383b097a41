//! What a remote write request carries besides series and float samples: metric
//! metadata (1.0's `WriteRequest.metadata`, 2.0's per-series `Metadata`) and exemplars,
//! read from the decompressed body with strings borrowed from it.
//!
//! A second, light pass over a body the sample decoder already accepted: label and
//! sample fields are skipped by length, so it costs a key and a length per field, and
//! the per-series pass is made only when exemplars are wanted. Anything malformed ends
//! the scan with what was read so far (the decoder has answered for the body already).

/// One metadata entry: family name, Prometheus's type number, help, unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaRef<'a> {
    pub family: &'a str,
    pub kind: u64,
    pub help: &'a str,
    pub unit: &'a str,
}

/// One exemplar of series number `series` of the request (its index in
/// `WriteRequestRef`); its labels are `labels[range]` of [`Extras::labels`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExemplarRef {
    pub series: usize,
    pub labels: (u32, u32),
    pub value: f64,
    pub ts: i64,
}

#[derive(Debug, Default)]
pub struct Extras<'a> {
    pub metadata: Vec<MetaRef<'a>>,
    pub exemplars: Vec<ExemplarRef>,
    pub labels: Vec<(&'a str, &'a str)>,
}

impl<'a> Extras<'a> {
    pub fn exemplar_labels(&self, e: &ExemplarRef) -> &[(&'a str, &'a str)] {
        &self.labels[e.labels.0 as usize..e.labels.1 as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.metadata.is_empty() && self.exemplars.is_empty()
    }
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = *b.get(i)?;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

fn key(b: &mut &[u8]) -> Option<(u64, u64)> {
    let k = varint(b)?;
    Some((k >> 3, k & 7))
}

fn bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::try_from(varint(b)?).ok()?;
    if n > b.len() {
        return None;
    }
    let (v, rest) = b.split_at(n);
    *b = rest;
    Some(v)
}

fn fixed64(b: &mut &[u8]) -> Option<u64> {
    let v = b.get(..8)?;
    *b = &b[8..];
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

fn skip(b: &mut &[u8], wt: u64) -> Option<()> {
    match wt {
        VARINT => varint(b).map(|_| ()),
        FIXED64 => fixed64(b).map(|_| ()),
        LEN => bytes(b).map(|_| ()),
        FIXED32 => {
            *b = b.get(4..)?;
            Some(())
        }
        _ => None,
    }
}

fn string<'a>(b: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(bytes(b)?).ok()
}

/// Metadata and (with `exemplars`) exemplars of a remote write 1.0 `WriteRequest`.
pub fn scan_v1(raw: &[u8], exemplars: bool) -> Extras<'_> {
    let mut out = Extras::default();
    let _ = scan_v1_into(raw, exemplars, &mut out);
    out
}

fn scan_v1_into<'a>(mut b: &'a [u8], exemplars: bool, out: &mut Extras<'a>) -> Option<()> {
    let mut series = 0usize;
    while !b.is_empty() {
        let (tag, wt) = key(&mut b)?;
        match (tag, wt) {
            (1, LEN) => {
                let ts = bytes(&mut b)?;
                if exemplars {
                    series_v1(ts, series, out)?;
                }
                series += 1;
            }
            (3, LEN) => out.metadata.push(metadata_v1(bytes(&mut b)?)?),
            _ => skip(&mut b, wt)?,
        }
    }
    Some(())
}

fn metadata_v1(mut b: &[u8]) -> Option<MetaRef<'_>> {
    let mut m = MetaRef {
        family: "",
        kind: 0,
        help: "",
        unit: "",
    };
    while !b.is_empty() {
        match key(&mut b)? {
            (1, VARINT) => m.kind = varint(&mut b)?,
            (2, LEN) => m.family = string(&mut b)?,
            (4, LEN) => m.help = string(&mut b)?,
            (5, LEN) => m.unit = string(&mut b)?,
            (_, wt) => skip(&mut b, wt)?,
        }
    }
    Some(m)
}

fn series_v1<'a>(mut b: &'a [u8], series: usize, out: &mut Extras<'a>) -> Option<()> {
    while !b.is_empty() {
        match key(&mut b)? {
            (3, LEN) => {
                let mut e = bytes(&mut b)?;
                let l0 = out.labels.len() as u32;
                let (mut value, mut ts) = (0.0, 0);
                while !e.is_empty() {
                    match key(&mut e)? {
                        (1, LEN) => {
                            let mut l = bytes(&mut e)?;
                            let (mut n, mut v) = ("", "");
                            while !l.is_empty() {
                                match key(&mut l)? {
                                    (1, LEN) => n = string(&mut l)?,
                                    (2, LEN) => v = string(&mut l)?,
                                    (_, wt) => skip(&mut l, wt)?,
                                }
                            }
                            out.labels.push((n, v));
                        }
                        (2, FIXED64) => value = f64::from_bits(fixed64(&mut e)?),
                        (3, VARINT) => ts = varint(&mut e)? as i64,
                        (_, wt) => skip(&mut e, wt)?,
                    }
                }
                out.exemplars.push(ExemplarRef {
                    series,
                    labels: (l0, out.labels.len() as u32),
                    value,
                    ts,
                });
            }
            (_, wt) => skip(&mut b, wt)?,
        }
    }
    Some(())
}

/// Metadata and (with `exemplars`) exemplars of a remote write 2.0 `Request`. A
/// series' metadata is named after its `__name__`, without the `_bucket`, `_sum` and
/// `_count` suffixes of a histogram or summary (2.0 has no family names).
pub fn scan_v2(raw: &[u8], exemplars: bool) -> Extras<'_> {
    let mut out = Extras::default();
    let _ = scan_v2_into(raw, exemplars, &mut out);
    out
}

fn scan_v2_into<'a>(raw: &'a [u8], exemplars: bool, out: &mut Extras<'a>) -> Option<()> {
    let mut symbols: Vec<&'a str> = Vec::new();
    let mut b = raw;
    while !b.is_empty() {
        match key(&mut b)? {
            (4, LEN) => symbols.push(string(&mut b)?),
            (_, wt) => skip(&mut b, wt)?,
        }
    }
    let sym = |r: u64| symbols.get(r as usize).copied();
    let mut b = raw;
    let mut series = 0usize;
    let mut refs: Vec<u64> = Vec::new();
    while !b.is_empty() {
        let (tag, wt) = key(&mut b)?;
        if (tag, wt) != (5, LEN) {
            skip(&mut b, wt)?;
            continue;
        }
        let mut ts = bytes(&mut b)?;
        let mut name = "";
        let mut meta: Option<(u64, u64, u64)> = None;
        while !ts.is_empty() {
            match key(&mut ts)? {
                (1, LEN) => {
                    refs.clear();
                    let mut p = bytes(&mut ts)?;
                    while !p.is_empty() {
                        refs.push(varint(&mut p)?);
                    }
                    for pair in refs.chunks_exact(2) {
                        if sym(pair[0]) == Some("__name__") {
                            name = sym(pair[1])?;
                        }
                    }
                }
                (4, LEN) if exemplars => {
                    let mut e = bytes(&mut ts)?;
                    let l0 = out.labels.len() as u32;
                    let (mut value, mut t) = (0.0, 0);
                    while !e.is_empty() {
                        match key(&mut e)? {
                            (1, LEN) => {
                                let mut p = bytes(&mut e)?;
                                while !p.is_empty() {
                                    let n = sym(varint(&mut p)?)?;
                                    let v = sym(varint(&mut p)?)?;
                                    out.labels.push((n, v));
                                }
                            }
                            (2, FIXED64) => value = f64::from_bits(fixed64(&mut e)?),
                            (3, VARINT) => t = varint(&mut e)? as i64,
                            (_, wt) => skip(&mut e, wt)?,
                        }
                    }
                    out.exemplars.push(ExemplarRef {
                        series,
                        labels: (l0, out.labels.len() as u32),
                        value,
                        ts: t,
                    });
                }
                (5, LEN) => {
                    let mut m = bytes(&mut ts)?;
                    let (mut kind, mut help, mut unit) = (0, 0, 0);
                    while !m.is_empty() {
                        match key(&mut m)? {
                            (1, VARINT) => kind = varint(&mut m)?,
                            (3, VARINT) => help = varint(&mut m)?,
                            (4, VARINT) => unit = varint(&mut m)?,
                            (_, wt) => skip(&mut m, wt)?,
                        }
                    }
                    meta = Some((kind, help, unit));
                }
                (_, wt) => skip(&mut ts, wt)?,
            }
        }
        if let Some((kind, help, unit)) = meta {
            let (help, unit) = (sym(help)?, sym(unit)?);
            // an unspecified type with no help or unit says nothing
            if !name.is_empty() && (kind != 0 || !help.is_empty() || !unit.is_empty()) {
                out.metadata.push(MetaRef {
                    family: family_of(name, kind),
                    kind,
                    help,
                    unit,
                });
            }
        }
        series += 1;
    }
    Some(())
}

/// The family a 2.0 series belongs to: its name without the suffixes a classic
/// histogram (3, 4) or summary (5) adds.
fn family_of(name: &str, kind: u64) -> &str {
    let suffixes: &[&str] = match kind {
        3 | 4 => &["_bucket", "_sum", "_count"],
        5 => &["_sum", "_count"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::prometheus::{
        metric_metadata::MetricType, Exemplar, Label, MetricMetadata, Sample, TimeSeries,
        WriteRequest,
    };
    use strata_proto::Message;

    fn req() -> WriteRequest {
        let l = |n: &str, v: &str| Label {
            name: n.into(),
            value: v.into(),
        };
        WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![l("__name__", "a_total")],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 5,
                    }],
                    ..Default::default()
                },
                TimeSeries {
                    labels: vec![l("__name__", "h_bucket"), l("le", "1")],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 5,
                    }],
                    exemplars: vec![Exemplar {
                        labels: vec![l("trace_id", "abc")],
                        value: 0.5,
                        timestamp: 4,
                    }],
                    ..Default::default()
                },
            ],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "a".into(),
                help: "A help.".into(),
                unit: "seconds".into(),
            }],
        }
    }

    #[test]
    fn v1_metadata_and_exemplars() {
        let raw = req().encode_to_vec();
        let x = scan_v1(&raw, true);
        assert_eq!(
            x.metadata,
            vec![MetaRef {
                family: "a",
                kind: 1,
                help: "A help.",
                unit: "seconds"
            }]
        );
        assert_eq!(x.exemplars.len(), 1);
        let e = x.exemplars[0];
        assert_eq!((e.series, e.value, e.ts), (1, 0.5, 4));
        assert_eq!(x.exemplar_labels(&e), &[("trace_id", "abc")]);
        // without exemplars wanted, the series are not looked into
        assert!(scan_v1(&raw, false).exemplars.is_empty());
        // the sample decoder counts them, so a body without any is not scanned
        let counted = strata_proto::decode_write_request_ref(&raw).unwrap();
        assert_eq!(counted.num_extras(), 2);
        let mut plain = req();
        plain.metadata.clear();
        plain.timeseries[1].exemplars.clear();
        let plain = plain.encode_to_vec();
        let counted = strata_proto::decode_write_request_ref(&plain).unwrap();
        assert_eq!(counted.num_extras(), 0);
    }

    #[test]
    fn v2_metadata_and_exemplars() {
        let mut v2 = strata_proto::write_request_to_v2(&req());
        let help = v2.symbols.len() as u32;
        v2.symbols.push("Latency.".into());
        v2.timeseries[1].metadata = Some(strata_proto::write_v2::Metadata {
            r#type: 3,
            help_ref: help,
            unit_ref: 0,
        });
        let raw = v2.encode_to_vec();
        let x = scan_v2(&raw, true);
        assert_eq!(
            x.metadata,
            vec![MetaRef {
                family: "h",
                kind: 3,
                help: "Latency.",
                unit: ""
            }]
        );
        assert_eq!(x.exemplars.len(), 1);
        assert_eq!(x.exemplars[0].series, 1);
        assert_eq!(x.exemplar_labels(&x.exemplars[0]), &[("trace_id", "abc")]);
    }

    #[test]
    fn malformed_never_panics() {
        let raw = req().encode_to_vec();
        for cut in 0..raw.len() {
            let _ = scan_v1(&raw[..cut], true);
            let _ = scan_v2(&raw[..cut], true);
        }
    }
}
