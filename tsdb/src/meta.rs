//! A block's `meta.json`, field for field as Prometheus writes it (`tsdb.BlockMeta`),
//! with the optional `thanos` section Thanos (and Mimir) add.
//!
//! Zero-valued stats and empty optional lists are omitted as Go's `omitempty` does, and
//! the file is written with tab indentation like `json.MarshalIndent(meta, "", "\t")`,
//! so a block written by Strata is byte-for-byte the shape Prometheus expects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::error::{Error, Result};

/// The file name inside a block directory.
pub const META_FILENAME: &str = "meta.json";
/// The only `version` Prometheus reads.
pub const META_VERSION_1: u32 = 1;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// `(de)serialize` a ULID as its 26-character Crockford base32 string.
mod ulid_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use ulid::Ulid;

    pub fn serialize<S: Serializer>(u: &Ulid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&u.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Ulid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Ulid>()
            .map_err(|e| serde::de::Error::custom(format!("invalid ULID {s:?}: {e}")))
    }
}

mod ulid_vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use ulid::Ulid;

    pub fn serialize<S: Serializer>(v: &[Ulid], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for u in v {
            seq.serialize_element(&u.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Ulid>, D::Error> {
        let v = Option::<Vec<String>>::deserialize(d)?.unwrap_or_default();
        v.iter()
            .map(|s| {
                s.parse::<Ulid>()
                    .map_err(|e| serde::de::Error::custom(format!("invalid ULID {s:?}: {e}")))
            })
            .collect()
    }
}

/// Prometheus's `tsdb.BlockMeta`, plus the optional Thanos section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    #[serde(with = "ulid_str")]
    pub ulid: Ulid,
    /// First timestamp in the block (inclusive), milliseconds.
    #[serde(rename = "minTime")]
    pub min_time: i64,
    /// End of the block's range (exclusive), milliseconds.
    #[serde(rename = "maxTime")]
    pub max_time: i64,
    #[serde(default)]
    pub stats: BlockStats,
    #[serde(default)]
    pub compaction: BlockMetaCompaction,
    /// Index format version; always 1 for the meta file itself.
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thanos: Option<ThanosMeta>,
}

/// `stats`: every field is `omitempty` in Prometheus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    #[serde(rename = "numSamples", default, skip_serializing_if = "is_zero")]
    pub num_samples: u64,
    #[serde(rename = "numFloatSamples", default, skip_serializing_if = "is_zero")]
    pub num_float_samples: u64,
    #[serde(
        rename = "numHistogramSamples",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub num_histogram_samples: u64,
    #[serde(rename = "numSeries", default, skip_serializing_if = "is_zero")]
    pub num_series: u64,
    #[serde(rename = "numChunks", default, skip_serializing_if = "is_zero")]
    pub num_chunks: u64,
    #[serde(rename = "numTombstones", default, skip_serializing_if = "is_zero")]
    pub num_tombstones: u64,
}

/// A parent block in `compaction.parents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDesc {
    #[serde(with = "ulid_str")]
    pub ulid: Ulid,
    #[serde(rename = "minTime")]
    pub min_time: i64,
    #[serde(rename = "maxTime")]
    pub max_time: i64,
}

/// `compaction`: how the block came to be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMetaCompaction {
    pub level: u32,
    #[serde(with = "ulid_vec", default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Ulid>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deletable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<BlockDesc>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub failed: bool,
    /// e.g. `from-out-of-order`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<String>,
}

/// Thanos's `thanos` section (`pkg/block/metadata.Thanos`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThanosMeta {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub version: u32,
    /// External labels of the producer (and tenant).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub downsample: ThanosDownsample,
    /// `sidecar`, `receive`, `compactor`, ... (empty when unknown).
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segment_files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ThanosFile>,
    /// Kept verbatim so a rewrite history survives a read-modify-write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<serde_json::Value>,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThanosDownsample {
    /// Milliseconds; 0 for raw data, 300000 for 5m, 3600000 for 1h.
    pub resolution: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThanosFile {
    pub rel_path: String,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub size_bytes: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<ObjectHash>,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHash {
    pub func: String,
    pub value: String,
}

impl BlockMeta {
    /// A level-1 meta for a freshly written block whose only source is itself.
    pub fn new(ulid: Ulid, min_time: i64, max_time: i64) -> Self {
        BlockMeta {
            ulid,
            min_time,
            max_time,
            stats: BlockStats::default(),
            compaction: BlockMetaCompaction {
                level: 1,
                sources: vec![ulid],
                ..Default::default()
            },
            version: META_VERSION_1,
            thanos: None,
        }
    }

    /// Parse `meta.json` content; `file` names it in errors.
    pub fn from_json(data: &[u8], file: &Path) -> Result<Self> {
        let m: BlockMeta = serde_json::from_slice(data).map_err(|e| Error::InvalidMeta {
            file: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        if m.version != META_VERSION_1 {
            return Err(Error::InvalidMeta {
                file: file.to_path_buf(),
                reason: format!("unexpected meta file version {}", m.version),
            });
        }
        Ok(m)
    }

    /// The JSON as Prometheus writes it: tab-indented, fields in Go struct order.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser)
            .expect("BlockMeta serializes to JSON infallibly");
        out
    }

    /// Read `<dir>/meta.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILENAME);
        let data = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json(&data, &path)
    }

    /// Write `<dir>/meta.json` atomically: a temporary file, fsync, rename, fsync of
    /// the directory. Returns the number of bytes written.
    pub fn write(&self, dir: &Path) -> Result<u64> {
        let path = dir.join(META_FILENAME);
        let tmp = dir.join(format!("{META_FILENAME}.tmp"));
        let data = self.to_json();
        let res = (|| {
            let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            f.write_all(&data).map_err(|e| Error::io(&tmp, e))?;
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            drop(f);
            fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
            sync_dir(dir)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res.map(|_| data.len() as u64)
    }

    /// `<dir>/meta.json`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(META_FILENAME)
    }
}

impl BlockMeta {
    /// The block's downsampling resolution in ms (`thanos.downsample.resolution`; 0: raw).
    pub fn resolution(&self) -> i64 {
        self.thanos.as_ref().map_or(0, |t| t.downsample.resolution)
    }

    /// The level-1 blocks whose data this block holds (`compaction.sources`; the block
    /// itself when it records none, as a block from an older writer may).
    pub fn source_set(&self) -> HashSet<Ulid> {
        let mut s: HashSet<Ulid> = self.compaction.sources.iter().copied().collect();
        if s.is_empty() {
            s.insert(self.ulid);
        }
        s
    }
}

/// The blocks of `live` (none marked for deletion) that another block of `live` with the
/// same resolution supersedes, so no reader needs them: the other's sources include all
/// of theirs and it is at a higher level or has more sources; with the same sources and
/// level (the same compaction done twice) the block with the smaller ULID wins, as in
/// Thanos's deduplicate filter. A downsampled block never supersedes a raw one: it holds
/// aggregates, not the samples.
///
/// The one visibility rule: readers skip exactly these (see [`visible_blocks`]) and the
/// compactor marks exactly these for deletion.
pub fn superseded(live: &[BlockMeta]) -> HashSet<Ulid> {
    let sources: Vec<HashSet<Ulid>> = live.iter().map(BlockMeta::source_set).collect();
    // Blocks by source: whatever supersedes `b` holds `b`'s first source, so only those
    // are compared (not every pair of a bucket's blocks).
    let mut by_source: HashMap<Ulid, Vec<usize>> = HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        for u in s {
            by_source.entry(*u).or_default().push(i);
        }
    }
    let wins = |a: usize, b: usize| {
        let (ma, mb) = (&live[a], &live[b]);
        let (sa, sb) = (&sources[a], &sources[b]);
        ma.resolution() == mb.resolution()
            && sb.is_subset(sa)
            && (sa.len() > sb.len()
                || ma.compaction.level > mb.compaction.level
                || (ma.compaction.level == mb.compaction.level && ma.ulid < mb.ulid))
    };
    let mut out = HashSet::new();
    for (b, sb) in sources.iter().enumerate() {
        let Some(first) = sb.iter().next() else {
            continue;
        };
        let candidates = by_source.get(first).map(Vec::as_slice).unwrap_or(&[]);
        if candidates.iter().any(|&a| a != b && wins(a, b)) {
            out.insert(live[b].ulid);
        }
    }
    out
}

/// The blocks a reader reads, of `(meta, marked for deletion)` as listed: not marked,
/// and not [`superseded`] by another unmarked block (a marked block hides nothing).
/// Every resolution is kept; callers pick the ones they read.
pub fn visible_blocks(metas: Vec<(BlockMeta, bool)>) -> Vec<BlockMeta> {
    let live: Vec<BlockMeta> = metas
        .into_iter()
        .filter(|(_, marked)| !marked)
        .map(|(m, _)| m)
        .collect();
    let hidden = superseded(&live);
    live.into_iter()
        .filter(|m| !hidden.contains(&m.ulid))
        .collect()
}

/// fsync a directory so a rename or a new entry in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let d = fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
        d.sync_all().map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ULID_A: &str = "01BKGV7JBM69T2G1BGBGM6KB12";
    const ULID_B: &str = "01BKGTZQ1SYQJTR4PB43C8PD98";

    /// As `prometheus/tsdb` writes it for a compacted block (tab indentation, Go field
    /// order, zero stats omitted).
    const PROM_GOLDEN: &str = "{\n\t\"ulid\": \"01BKGV7JBM69T2G1BGBGM6KB12\",\n\t\"minTime\": 1602237600000,\n\t\"maxTime\": 1602244800000,\n\t\"stats\": {\n\t\t\"numSamples\": 553779,\n\t\t\"numFloatSamples\": 553779,\n\t\t\"numSeries\": 4617,\n\t\t\"numChunks\": 4617\n\t},\n\t\"compaction\": {\n\t\t\"level\": 2,\n\t\t\"sources\": [\n\t\t\t\"01BKGTZQ1SYQJTR4PB43C8PD98\",\n\t\t\t\"01BKGV7JBM69T2G1BGBGM6KB12\"\n\t\t],\n\t\t\"parents\": [\n\t\t\t{\n\t\t\t\t\"ulid\": \"01BKGTZQ1SYQJTR4PB43C8PD98\",\n\t\t\t\t\"minTime\": 1602237600000,\n\t\t\t\t\"maxTime\": 1602241200000\n\t\t\t}\n\t\t]\n\t},\n\t\"version\": 1\n}";

    #[test]
    fn golden_prometheus_json_round_trips_byte_for_byte() {
        let m = BlockMeta::from_json(PROM_GOLDEN.as_bytes(), Path::new("meta.json")).unwrap();
        assert_eq!(m.ulid.to_string(), ULID_A);
        assert_eq!(m.min_time, 1602237600000);
        assert_eq!(m.max_time, 1602244800000);
        assert_eq!(m.stats.num_samples, 553779);
        assert_eq!(m.stats.num_float_samples, 553779);
        assert_eq!(m.stats.num_histogram_samples, 0);
        assert_eq!(m.stats.num_series, 4617);
        assert_eq!(m.stats.num_chunks, 4617);
        assert_eq!(m.stats.num_tombstones, 0);
        assert_eq!(m.compaction.level, 2);
        assert_eq!(m.compaction.sources.len(), 2);
        assert_eq!(m.compaction.parents[0].ulid.to_string(), ULID_B);
        assert_eq!(m.compaction.parents[0].max_time, 1602241200000);
        assert!(m.thanos.is_none());
        assert_eq!(String::from_utf8(m.to_json()).unwrap(), PROM_GOLDEN);
    }

    #[test]
    fn thanos_section_field_names() {
        let mut m = BlockMeta::new(ULID_A.parse().unwrap(), 0, 7200000);
        m.stats.num_samples = 10;
        m.thanos = Some(ThanosMeta {
            labels: [("replica".to_string(), "a".to_string())].into(),
            downsample: ThanosDownsample { resolution: 300000 },
            source: "sidecar".into(),
            segment_files: vec!["000001".into()],
            files: vec![
                ThanosFile {
                    rel_path: "chunks/000001".into(),
                    size_bytes: 123,
                    hash: None,
                },
                ThanosFile {
                    rel_path: "meta.json".into(),
                    size_bytes: 0,
                    hash: None,
                },
            ],
            ..Default::default()
        });
        let v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        let t = &v["thanos"];
        assert_eq!(t["labels"]["replica"], "a");
        assert_eq!(t["downsample"]["resolution"], 300000);
        assert_eq!(t["source"], "sidecar");
        assert_eq!(t["segment_files"][0], "000001");
        assert_eq!(t["files"][0]["rel_path"], "chunks/000001");
        assert_eq!(t["files"][0]["size_bytes"], 123);
        assert!(t["files"][1].get("size_bytes").is_none());
        assert!(t.get("version").is_none());
        assert_eq!(v["compaction"]["sources"][0], ULID_A);
        assert_eq!(v["version"], 1);
        assert!(v["stats"].get("numTombstones").is_none());

        // And a Thanos-written meta (with fields we keep verbatim) parses back.
        let back = BlockMeta::from_json(&m.to_json(), Path::new("meta.json")).unwrap();
        assert_eq!(back, m);
        let thanos_written = r#"{"ulid":"01BKGV7JBM69T2G1BGBGM6KB12","minTime":1,"maxTime":2,
            "stats":{},"compaction":{"level":1,"sources":["01BKGV7JBM69T2G1BGBGM6KB12"]},
            "version":1,"thanos":{"version":1,"labels":{"a":"b"},"downsample":{"resolution":0},
            "source":"compactor","files":[{"rel_path":"index","size_bytes":5,
            "hash":{"func":"SHA256","value":"ab"}}],"rewrites":[{"sources":["01BKGV7JBM69T2G1BGBGM6KB12"]}]}}"#;
        let m = BlockMeta::from_json(thanos_written.as_bytes(), Path::new("x")).unwrap();
        let t = m.thanos.as_ref().unwrap();
        assert_eq!(t.version, 1);
        assert_eq!(t.files[0].hash.as_ref().unwrap().func, "SHA256");
        assert_eq!(t.rewrites.len(), 1);
    }

    #[test]
    fn write_then_read_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = BlockMeta::new(Ulid::new(), -5, 10);
        m.stats.num_series = 3;
        let n = m.write(dir.path()).unwrap();
        assert!(n > 0);
        assert!(!dir.path().join("meta.json.tmp").exists());
        assert_eq!(BlockMeta::read(dir.path()).unwrap(), m);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = BlockMeta::read(dir.path()).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("meta.json"), "{s}");
        assert!(matches!(e, Error::Io { .. }));

        fs::write(dir.path().join("meta.json"), b"{\"ulid\": 5}").unwrap();
        let s = BlockMeta::read(dir.path()).unwrap_err().to_string();
        assert!(
            s.contains("meta.json") && s.contains("invalid meta.json"),
            "{s}"
        );

        let mut m = BlockMeta::new(Ulid::new(), 0, 1);
        m.version = 2;
        fs::write(dir.path().join("meta.json"), m.to_json()).unwrap();
        let s = BlockMeta::read(dir.path()).unwrap_err().to_string();
        assert!(s.contains("version 2"), "{s}");
    }

    fn block(level: u32, sources: &[Ulid], res: i64) -> BlockMeta {
        let mut m = BlockMeta::new(Ulid::new(), 0, 1000);
        m.compaction.level = level;
        m.compaction.sources = sources.to_vec();
        if res != 0 {
            m.thanos = Some(ThanosMeta {
                downsample: ThanosDownsample { resolution: res },
                ..Default::default()
            });
        }
        m
    }

    fn ulids(v: &[BlockMeta]) -> Vec<Ulid> {
        let mut u: Vec<Ulid> = v.iter().map(|m| m.ulid).collect();
        u.sort();
        u
    }

    #[test]
    fn compacted_block_hides_its_sources_and_marks_hide_nothing() {
        let (a, b, d) = (Ulid::new(), Ulid::new(), Ulid::new());
        let ma = BlockMeta::new(a, 0, 1000);
        let mb = BlockMeta::new(b, 1000, 2000);
        let mc = block(2, &[a, b], 0);
        let md = BlockMeta::new(d, 2000, 3000);
        let v = visible_blocks(vec![
            (ma.clone(), false),
            (mb.clone(), false),
            (mc.clone(), false),
            (md.clone(), true),
        ]);
        assert_eq!(ulids(&v), vec![mc.ulid]);
        assert_eq!(
            superseded(&[ma.clone(), mb.clone(), mc.clone()]),
            [a, b].into()
        );
        // A compacted block marked for deletion no longer hides its sources.
        let v = visible_blocks(vec![(ma.clone(), false), (mc.clone(), true)]);
        assert_eq!(ulids(&v), vec![a]);
        // A partial compaction (a subset of sources, same level) is hidden by the larger.
        let part = block(2, &[a], 0);
        assert_eq!(superseded(&[part.clone(), mc.clone()]), [part.ulid].into());
        // Overlapping but not nested sources: both stay.
        let other = block(2, &[b, d], 0);
        assert!(superseded(&[mc, other]).is_empty());
    }

    #[test]
    fn resolutions_are_separate_and_empty_sources_are_the_block_itself() {
        let a = Ulid::new();
        let raw = BlockMeta::new(a, 0, 1000);
        let down = block(1, &[a], 300_000);
        let down_1h = block(2, &[a], 3_600_000);
        assert!(superseded(&[raw.clone(), down.clone(), down_1h.clone()]).is_empty());
        assert_eq!(down.resolution(), 300_000);
        let mut bare = BlockMeta::new(Ulid::new(), 0, 1000);
        bare.compaction.sources.clear();
        assert_eq!(bare.source_set(), [bare.ulid].into());
        let mut over = block(2, &[bare.ulid, a], 0);
        over.compaction.level = 2;
        assert_eq!(superseded(&[bare.clone(), over]), [bare.ulid].into());
    }

    #[test]
    fn the_same_compaction_twice_keeps_one() {
        let (a, b) = (Ulid::new(), Ulid::new());
        let x = block(2, &[a, b], 0);
        let y = block(2, &[b, a], 0);
        let (keep, drop) = if x.ulid < y.ulid { (x, y) } else { (y, x) };
        assert_eq!(
            superseded(&[drop.clone(), keep.clone()]),
            [drop.ulid].into()
        );
        // A higher level wins over a smaller ULID.
        let mut higher = drop.clone();
        higher.compaction.level = 3;
        assert_eq!(superseded(&[keep.clone(), higher]), [keep.ulid].into());
    }
}
