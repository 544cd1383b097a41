//! One round trip, run against every backend we can run here: a local directory and a
//! real S3 server (`s3s-fs`). A recording layer observes the order in which the store
//! receives writes, so "meta.json last" is checked on the real request sequence.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use strata_objstore::object_store::path::Path;
use strata_objstore::object_store::{
    self, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use strata_objstore::{Bucket, Error, PutCondition};
use strata_testkit::s3::S3Server;
use ulid::Ulid;

// ---------------------------------------------------------------------------------------
// A store layer that records when each write starts and when it is stored.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Start { path: String, multipart: bool },
    Stored { path: String },
}

type Log = Arc<Mutex<Vec<Event>>>;

#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStore>,
    log: Log,
}

impl fmt::Display for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recording({})", self.inner)
    }
}

fn record(log: &Log, event: Event) {
    log.lock().unwrap().push(event);
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let path = location.to_string();
        record(
            &self.log,
            Event::Start {
                path: path.clone(),
                multipart: false,
            },
        );
        let result = self.inner.put_opts(location, payload, opts).await?;
        record(&self.log, Event::Stored { path });
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let path = location.to_string();
        record(
            &self.log,
            Event::Start {
                path: path.clone(),
                multipart: true,
            },
        );
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(RecordingUpload {
            inner,
            path,
            log: Arc::clone(&self.log),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct RecordingUpload {
    inner: Box<dyn MultipartUpload>,
    path: String,
    log: Log,
}

#[async_trait]
impl MultipartUpload for RecordingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.inner.complete().await?;
        record(
            &self.log,
            Event::Stored {
                path: self.path.clone(),
            },
        );
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

// ---------------------------------------------------------------------------------------
// The round trip.

/// Larger than the 5 MiB part size the S3 test configures: three parts there.
const BIG: usize = 11 << 20;

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect()
}

struct LocalBlock {
    dir: tempfile::TempDir,
    ulid: Ulid,
    /// (relative path, content), meta.json included.
    files: Vec<(&'static str, Vec<u8>)>,
}

fn local_block() -> LocalBlock {
    let ulid = Ulid::new();
    let files = vec![
        ("chunks/000001", pattern(300_000, 1)),
        ("chunks/000002", pattern(BIG, 2)),
        ("index", pattern(4_000, 3)),
        (
            "meta.json",
            format!(r#"{{"ulid":"{ulid}","version":1}}"#).into_bytes(),
        ),
        ("tombstones", pattern(9, 4)),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (relative, content) in &files {
        let path = dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    LocalBlock { dir, ulid, files }
}

/// Uploads a block through a recording layer and checks the write order; returns the log.
async fn upload_and_check_order(bucket: &Bucket, block: &LocalBlock, prefix: &str) -> Vec<Event> {
    let log: Log = Arc::default();
    let recorded = bucket.layered(|inner| {
        Arc::new(Recording {
            inner,
            log: Arc::clone(&log),
        })
    });
    let uploaded = recorded.upload_dir(block.dir.path(), prefix).await.unwrap();
    assert_eq!(
        uploaded,
        block.files.iter().map(|(_, c)| c.len() as u64).sum::<u64>()
    );

    let events = log.lock().unwrap().clone();
    let meta = format!("{prefix}/meta.json");
    let starts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Start { path, .. } => Some(path.as_str()),
            Event::Stored { .. } => None,
        })
        .collect();
    assert_eq!(
        starts.len(),
        block.files.len(),
        "one write per file: {events:?}"
    );
    let meta_start = events
        .iter()
        .position(|e| matches!(e, Event::Start { path, .. } if *path == meta))
        .expect("meta.json written");
    for (relative, _) in block.files.iter().filter(|(r, _)| *r != "meta.json") {
        let path = format!("{prefix}/{relative}");
        let stored = events
            .iter()
            .position(|e| matches!(e, Event::Stored { path: p } if *p == path))
            .unwrap_or_else(|| panic!("{path} never stored: {events:?}"));
        assert!(
            stored < meta_start,
            "{path} stored after meta.json was started: {events:?}"
        );
    }
    assert_eq!(
        events.last(),
        Some(&Event::Stored { path: meta }),
        "{events:?}"
    );
    events
}

async fn round_trip(bucket: &Bucket) -> Vec<Event> {
    let tenant = "tenant-a";
    let block = local_block();
    let prefix = format!("{tenant}/{}", block.ulid);
    let events = upload_and_check_order(bucket, &block, &prefix).await;

    // Listing.
    let expected: Vec<(String, u64)> = block
        .files
        .iter()
        .map(|(r, c)| (format!("{prefix}/{r}"), c.len() as u64))
        .collect();
    assert_eq!(bucket.list(tenant).await.unwrap(), expected);
    assert_eq!(bucket.list("").await.unwrap(), expected);
    assert_eq!(bucket.list(&format!("/{prefix}/")).await.unwrap(), expected);
    assert_eq!(
        bucket.list("tenant").await.unwrap(),
        vec![],
        "prefixes match whole segments"
    );
    assert_eq!(
        bucket.list_dirs("").await.unwrap(),
        vec![tenant.to_string()]
    );
    assert_eq!(
        bucket.list_dirs(tenant).await.unwrap(),
        vec![block.ulid.to_string()]
    );
    assert_eq!(
        bucket.list_dirs(&prefix).await.unwrap(),
        vec!["chunks".to_string()]
    );

    // Block listing: only ULID-named directories with meta.json count.
    let meta_json = Bytes::from(block.files[3].1.clone());
    let partial = Ulid::new();
    bucket
        .put(
            &format!("{tenant}/{partial}/index"),
            Bytes::from_static(b"i"),
        )
        .await
        .unwrap();
    bucket
        .put(
            &format!("{tenant}/not-a-block/meta.json"),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let lower = Ulid::new().to_string().to_lowercase();
    bucket
        .put(
            &format!("{tenant}/{lower}/meta.json"),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let blocks = bucket.list_blocks(tenant).await.unwrap();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].ulid, block.ulid);
    assert_eq!(blocks[0].meta_json, meta_json);
    assert!(!blocks[0].deletion_marked && !blocks[0].no_compact_marked);
    bucket
        .put(
            &format!("{prefix}/deletion-mark.json"),
            Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let blocks = bucket.list_blocks(tenant).await.unwrap();
    assert!(
        blocks[0].deletion_marked && !blocks[0].no_compact_marked,
        "{blocks:?}"
    );
    assert_eq!(bucket.list_blocks("tenant-b").await.unwrap(), vec![]);

    // Reads, whole and ranged, byte for byte.
    let chunks1 = &block.files[0].1;
    let big = &block.files[1].1;
    assert_eq!(
        bucket.get(&format!("{prefix}/index")).await.unwrap(),
        block.files[2].1
    );
    assert_eq!(
        bucket
            .get(&format!("{prefix}/chunks/000002"))
            .await
            .unwrap(),
        *big
    );
    assert_eq!(
        bucket
            .get_range(&format!("{prefix}/chunks/000001"), 1_000..5_017)
            .await
            .unwrap(),
        chunks1[1_000..5_017]
    );
    let end = BIG as u64;
    assert_eq!(
        bucket
            .get_range(&format!("{prefix}/chunks/000002"), end - 100..end)
            .await
            .unwrap(),
        big[BIG - 100..]
    );
    assert_eq!(
        bucket
            .get_range(&format!("{prefix}/index"), 7..7)
            .await
            .unwrap(),
        Bytes::new()
    );
    for bad in [3_990..4_010, 5_000..5_001] {
        let err = bucket
            .get_range(&format!("{prefix}/index"), bad.clone())
            .await
            .unwrap_err();
        assert!(
            !err.is_not_found() && err.to_string().contains("index"),
            "{bad:?}: {err}"
        );
    }
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = bucket
        .get_range(&format!("{prefix}/index"), 10..5)
        .await
        .unwrap_err();
    assert!(matches!(reversed, Error::InvalidRange { .. }), "{reversed}");
    assert_eq!(
        bucket
            .head(&format!("{prefix}/chunks/000002"))
            .await
            .unwrap(),
        end
    );
    assert!(bucket
        .exists(&format!("{prefix}/tombstones"))
        .await
        .unwrap());
    assert!(!bucket.exists(&format!("{prefix}/nope")).await.unwrap());
    let invalid = bucket.get("a//b").await.unwrap_err();
    assert!(matches!(invalid, Error::InvalidPath { .. }), "{invalid}");

    // Download: the same files come back.
    let down = tempfile::tempdir().unwrap();
    let downloaded = bucket.download_dir(&prefix, down.path()).await.unwrap();
    assert_eq!(
        downloaded,
        block.files.iter().map(|(_, c)| c.len() as u64).sum::<u64>() + 2
    );
    for (relative, content) in &block.files {
        assert_eq!(
            std::fs::read(down.path().join(relative)).unwrap(),
            *content,
            "{relative}"
        );
    }
    assert_eq!(
        std::fs::read(down.path().join("deletion-mark.json")).unwrap(),
        b"{}"
    );
    let missing = bucket
        .download_dir(&format!("{tenant}/nothing"), down.path())
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing}");

    // Delete, then NotFound everywhere.
    let meta = format!("{prefix}/meta.json");
    bucket.delete(&meta).await.unwrap();
    let err = bucket.get(&meta).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(err.to_string(), format!("object not found: {meta}"));
    assert!(bucket.head(&meta).await.unwrap_err().is_not_found());
    assert!(bucket
        .get_range(&meta, 0..1)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(!bucket.exists(&meta).await.unwrap());
    bucket.delete(&meta).await.unwrap();
    assert_eq!(bucket.list_blocks(tenant).await.unwrap(), vec![]);

    // delete_dir removes the rest: 4 block files and the deletion mark.
    assert_eq!(bucket.delete_dir(&prefix).await.unwrap(), 5);
    assert_eq!(bucket.list(&prefix).await.unwrap(), vec![]);
    assert!(!bucket
        .list_dirs(tenant)
        .await
        .unwrap()
        .contains(&block.ulid.to_string()));
    let whole = bucket.delete_dir("/").await.unwrap_err();
    assert!(matches!(whole, Error::InvalidPath { .. }), "{whole}");
    events
}

// ---------------------------------------------------------------------------------------
// FILESYSTEM

#[tokio::test]
async fn filesystem_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::filesystem(dir.path().join("bucket")).unwrap();
    let events = round_trip(&bucket).await;
    assert!(events.iter().all(|e| !matches!(
        e,
        Event::Start {
            multipart: true,
            ..
        }
    )));
    // Deleting the last file of a directory removes the directory.
    assert_eq!(
        bucket.list_dirs("tenant-a").await.unwrap().len(),
        3,
        "the three extra dirs stay"
    );
}

#[tokio::test]
async fn filesystem_yaml_applies_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "type: Filesystem\nconfig:\n  directory: {}\nprefix: team/one/\n",
        dir.path().display()
    );
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    bucket.put("t/x", Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("team/one/t/x")).unwrap(),
        b"abc"
    );
    assert_eq!(bucket.list("").await.unwrap(), vec![("t/x".to_string(), 3)]);
    assert!(bucket.name().ends_with("/team/one"), "{}", bucket.name());
}

#[tokio::test]
async fn config_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = Bucket::from_config_file(&missing).unwrap_err().to_string();
    assert!(err.contains("missing.yaml"), "{err}");

    let bad = dir.path().join("objstore.yaml");
    std::fs::write(&bad, "type: S3\nconfig:\n  endpoint: minio:9000\n").unwrap();
    let err = Bucket::from_config_file(&bad).unwrap_err().to_string();
    assert!(
        err.contains("objstore.yaml") && err.contains("config.bucket"),
        "{err}"
    );

    std::fs::write(
        &bad,
        format!(
            "type: FILESYSTEM\nconfig:\n  directory: {}\n",
            dir.path().join("b").display()
        ),
    )
    .unwrap();
    Bucket::from_config_file(&bad)
        .unwrap()
        .put("x", Bytes::new())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// S3 (s3s-fs)

#[tokio::test]
async fn s3_round_trip() {
    let s3 = S3Server::start();
    let yaml = format!("{}  part_size: 5242880\n", s3.objstore_yaml("blocks"));
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    assert_eq!(bucket.name(), "s3:blocks");
    let events = round_trip(&bucket).await;
    let multipart: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Start {
                    multipart: true,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(
        multipart.len(),
        1,
        "only the 11 MiB file goes up in parts: {events:?}"
    );
    assert!(matches!(multipart[0], Event::Start { path, .. } if path.ends_with("/chunks/000002")));
}

#[tokio::test]
async fn s3_buckets_are_directories_of_the_server_root() {
    let s3 = S3Server::start();
    let bucket = Bucket::from_yaml(&format!("{}prefix: p\n", s3.objstore_yaml("second"))).unwrap();
    bucket
        .put("t/obj", Bytes::from_static(b"on disk"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(s3.data_dir().join("second/p/t/obj")).unwrap(),
        b"on disk"
    );
}

#[tokio::test]
async fn s3_wrong_secret_is_an_error_not_not_found() {
    let s3 = S3Server::start();
    let yaml = s3
        .objstore_yaml("blocks")
        .replace(strata_testkit::s3::SECRET_KEY, "wrong");
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    let err = bucket.get("t/x").await.unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    assert!(err.to_string().starts_with("get t/x: "), "{err}");
}

#[tokio::test]
async fn s3_survives_a_restart() {
    let mut s3 = S3Server::start();
    let yaml = format!("{}  max_retries: 1\n", s3.objstore_yaml("blocks"));
    let bucket = Bucket::from_yaml(&yaml).unwrap();
    bucket
        .put("t/x", Bytes::from_static(b"kept"))
        .await
        .unwrap();
    s3.stop();
    assert!(!s3.is_running());
    let err = bucket.get("t/x").await.unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err}");
    s3.restart();
    assert_eq!(bucket.get("t/x").await.unwrap(), "kept");
}

// ---------------------------------------------------------------------------------------
// Conditional writes (the compactor's lease)

/// `put_if` as each backend can: `Absent` everywhere; `Unchanged` where the store
/// compares versions. `update` says whether this backend should.
async fn conditional_writes(bucket: &Bucket, update: bool) {
    let put = |data: &'static str, c: PutCondition| bucket.put_if("lease", Bytes::from(data), c);
    put("a", PutCondition::Absent).await.unwrap();
    let e = put("b", PutCondition::Absent).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    let (data, v1) = bucket.get_versioned("lease").await.unwrap();
    assert_eq!(&data[..], b"a");
    assert!(v1.e_tag().is_some(), "{v1:?}");

    let e = bucket.get_versioned("absent").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let r = put("c", PutCondition::Unchanged(v1.clone())).await;
    if !update {
        let e = r.unwrap_err();
        assert!(e.is_unsupported(), "{e}");
        assert_eq!(
            &bucket.get("lease").await.unwrap()[..],
            b"a",
            "nothing written"
        );
        return;
    }
    r.unwrap();
    let (data, v2) = bucket.get_versioned("lease").await.unwrap();
    assert_eq!(&data[..], b"c");
    assert_ne!(v1, v2);
    // A writer still holding the first version loses.
    let e = put("d", PutCondition::Unchanged(v1)).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert_eq!(&bucket.get("lease").await.unwrap()[..], b"c");
    // An update of an object that is gone loses too (it is not a create).
    bucket.delete("lease").await.unwrap();
    let e = put("e", PutCondition::Unchanged(v2)).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert!(!bucket.exists("lease").await.unwrap());
}

#[tokio::test]
async fn filesystem_creates_conditionally_but_cannot_compare_versions() {
    let dir = tempfile::tempdir().unwrap();
    conditional_writes(&Bucket::filesystem(dir.path()).unwrap(), false).await;
}

#[tokio::test]
async fn s3_writes_conditionally() {
    let s3 = S3Server::start();
    let bucket = Bucket::from_yaml(&s3.objstore_yaml("strata")).unwrap();
    conditional_writes(&bucket, true).await;
}
