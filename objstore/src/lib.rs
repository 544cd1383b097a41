//! Object storage for Strata: Thanos's objstore YAML mapped onto the `object_store` crate.
//!
//! This crate owns everything between Strata and a bucket:
//!
//! - **Config.** The file Thanos users already have (`--objstore.config-file`):
//!   `type: FILESYSTEM | S3 | GCS | AZURE` (any case), `config:` with that provider's
//!   fields, and an optional `prefix:` under which every object lives. Unknown fields are
//!   errors, and every config error names the field (`config.bucket`).
//! - **Objects.** [`Bucket`] puts, gets, range-reads, heads, lists and deletes objects by
//!   `/`-separated path relative to the bucket (and its `prefix`).
//! - **Blocks.** [`Bucket::upload_dir`] ships a TSDB block directory with `meta.json`
//!   written last, so a reader that sees `meta.json` sees a complete block;
//!   [`Bucket::list_blocks`] lists `<tenant>/<ULID>/meta.json` and returns the raw
//!   `meta.json` bytes (this crate does not depend on `strata-tsdb`; callers parse them);
//!   [`Bucket::delete_dir`] removes a block `meta.json` first.
//!
//! ```
//! use bytes::Bytes;
//! use strata_objstore::Bucket;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), strata_objstore::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let yaml = format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", dir.path().display());
//! let bucket = Bucket::from_yaml(&yaml)?;
//!
//! bucket.put("tenant-a/notes.txt", Bytes::from_static(b"hello, bucket")).await?;
//! assert_eq!(bucket.get_range("tenant-a/notes.txt", 7..13).await?, "bucket");
//! assert_eq!(bucket.list("tenant-a").await?, vec![("tenant-a/notes.txt".to_string(), 13)]);
//! assert!(bucket.get("tenant-a/missing").await.unwrap_err().is_not_found());
//! # Ok(())
//! # }
//! ```

mod config;
mod error;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    UpdateVersion, WriteMultipart,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ulid::Ulid;

pub use error::{Error, Result};
/// The `object_store` version this crate is built on, for [`Bucket::from_store`] and
/// [`Bucket::layered`].
pub use object_store;

use config::PutSettings;

/// Name of the file that makes a block directory a block.
pub const META_JSON: &str = "meta.json";
/// Marker the compactor writes into a block directory before deleting the block.
pub const DELETION_MARK: &str = "deletion-mark.json";
/// Marker that keeps a block out of compaction.
pub const NO_COMPACT_MARK: &str = "no-compact-mark.json";

/// Files uploaded or downloaded at the same time by `upload_dir` / `download_dir`.
const TRANSFER_CONCURRENCY: usize = 4;
/// Blocks inspected at the same time by `list_blocks`.
const LIST_BLOCKS_CONCURRENCY: usize = 16;
/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Read size when streaming a local file into a multipart upload.
const READ_BUFFER: usize = 8 << 20;

/// A bucket: one object store plus the config-level `prefix`. Cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    name: Arc<str>,
    settings: Arc<PutSettings>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The version of an object as read by [`Bucket::get_versioned`] (its ETag and, where the
/// store keeps them, its version id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion(UpdateVersion);

impl ObjectVersion {
    /// The ETag as the store gave it, if it gives one.
    pub fn e_tag(&self) -> Option<&str> {
        self.0.e_tag.as_deref()
    }
}

/// The condition of a [`Bucket::put_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// No object exists at the path.
    Absent,
    /// The object is still the version read.
    Unchanged(ObjectVersion),
}

/// A block found by [`Bucket::list_blocks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub ulid: Ulid,
    /// The block's `meta.json`, unparsed.
    pub meta_json: Bytes,
    /// `deletion-mark.json` is present: the block is on its way out.
    pub deletion_marked: bool,
    /// `no-compact-mark.json` is present.
    pub no_compact_marked: bool,
}

impl Bucket {
    /// Opens the bucket a Thanos objstore YAML document describes. No request is made;
    /// bad credentials or endpoints show on first use.
    pub fn from_yaml(yaml: &str) -> Result<Self> {
        config::build(yaml).map(Self::from_built)
    }

    /// Reads a Thanos objstore config file (`--objstore.config-file`); errors name it.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let yaml = std::fs::read_to_string(path).map_err(|source| Error::ConfigFileRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&yaml).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// A bucket in a local directory (created if missing): the default, a directory
    /// under the data dir.
    pub fn filesystem(dir: impl AsRef<Path>) -> Result<Self> {
        config::filesystem(dir.as_ref()).map(Self::from_built)
    }

    /// Wraps any `object_store` store, e.g. `InMemory` in tests.
    pub fn from_store(store: Arc<dyn ObjectStore>, name: impl Into<String>) -> Self {
        Self {
            store,
            name: name.into().into(),
            settings: Arc::new(PutSettings {
                part_size: Some(config::DEFAULT_PART_SIZE),
                ..PutSettings::default()
            }),
        }
    }

    /// The same bucket with its store wrapped by `layer` (metrics, tracing, fault
    /// injection, recording in tests); upload settings are kept.
    pub fn layered(
        &self,
        layer: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Self {
        Self {
            store: layer(Arc::clone(&self.store)),
            name: Arc::clone(&self.name),
            settings: Arc::clone(&self.settings),
        }
    }

    fn from_built(built: config::Built) -> Self {
        Self {
            store: built.store,
            name: built.name.into(),
            settings: Arc::new(built.settings),
        }
    }

    /// A short description for logs: `s3:bucket/prefix`, `fs:/data/bucket`, …
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying store, for what this API does not cover.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Writes an object whole; readers see the old object or the new one, never a part.
    pub async fn put(&self, path: &str, data: Bytes) -> Result<()> {
        let location = object_path(path)?;
        self.put_bytes(&location, data).await
    }

    async fn put_bytes(&self, location: &ObjectPath, data: Bytes) -> Result<()> {
        let opts = PutOptions {
            attributes: self.settings.attributes.clone(),
            ..PutOptions::default()
        };
        self.store
            .put_opts(location, PutPayload::from(data), opts)
            .await
            .map_err(Error::store("put", location))?;
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes> {
        let location = object_path(path)?;
        let result = self
            .store
            .get(&location)
            .await
            .map_err(Error::store("get", &location))?;
        result.bytes().await.map_err(Error::store("get", &location))
    }

    /// Reads a whole object with its version, for a later [`Bucket::put_if`].
    pub async fn get_versioned(&self, path: &str) -> Result<(Bytes, ObjectVersion)> {
        let location = object_path(path)?;
        let result = self
            .store
            .get(&location)
            .await
            .map_err(Error::store("get", &location))?;
        let version = ObjectVersion(UpdateVersion {
            e_tag: result.meta.e_tag.clone(),
            version: result.meta.version.clone(),
        });
        let data = result
            .bytes()
            .await
            .map_err(Error::store("get", &location))?;
        Ok((data, version))
    }

    /// Writes an object whole only if `condition` holds at the store, atomically where
    /// the backend can: S3 (and compatible servers that honour `If-None-Match`/`If-Match`),
    /// GCS and Azure do both conditions; a local filesystem does [`PutCondition::Absent`]
    /// only. A lost race is [`Error::Conflict`]; a condition the backend cannot check is
    /// [`Error::Unsupported`], and nothing is written.
    pub async fn put_if(&self, path: &str, data: Bytes, condition: PutCondition) -> Result<()> {
        let location = object_path(path)?;
        let mode = match condition {
            PutCondition::Absent => PutMode::Create,
            PutCondition::Unchanged(v) => PutMode::Update(v.0),
        };
        let opts = PutOptions {
            mode,
            attributes: self.settings.attributes.clone(),
            ..PutOptions::default()
        };
        let path = location.to_string();
        match self
            .store
            .put_opts(&location, PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(Error::Conflict { path }),
            Err(source @ object_store::Error::NotImplemented { .. }) => {
                Err(Error::Unsupported { path, source })
            }
            Err(e) => Err(Error::store("put", &location)(e)),
        }
    }

    /// Reads bytes `range.start..range.end` of an object. The range must lie inside the
    /// object; an empty range returns no bytes without a request.
    pub async fn get_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let location = object_path(path)?;
        let invalid = |reason: String| Error::InvalidRange {
            path: location.to_string(),
            start: range.start,
            end: range.end,
            reason,
        };
        if range.start > range.end {
            return Err(invalid("start is after end".to_string()));
        }
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        let data = self
            .store
            .get_range(&location, range.clone())
            .await
            .map_err(Error::store("get range of", &location))?;
        // Some servers answer a range that runs past the end with the bytes that exist.
        if data.len() as u64 != range.end - range.start {
            return Err(invalid(format!(
                "the object ends {} bytes into the range",
                data.len()
            )));
        }
        Ok(data)
    }

    /// The size of an object in bytes; [`Error::NotFound`] if it does not exist.
    pub async fn head(&self, path: &str) -> Result<u64> {
        let location = object_path(path)?;
        let meta = self
            .store
            .head(&location)
            .await
            .map_err(Error::store("head", &location))?;
        Ok(meta.size)
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self.head(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object. Deleting an object that does not exist succeeds (as on S3),
    /// so a retried or repeated delete is harmless.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let location = object_path(path)?;
        self.delete_location(&location).await
    }

    async fn delete_location(&self, location: &ObjectPath) -> Result<()> {
        match self.store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store("delete", location)(e)),
        }
    }

    /// Every object under `prefix` (recursively; `""` for the whole bucket) as
    /// `(path, size)`, sorted by path. `prefix` matches whole segments: `a/b` covers
    /// `a/b/c` but not `a/bc`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let prefix = prefix_path(prefix)?;
        let mut objects: Vec<(String, u64)> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await
            .map_err(Error::store("list", display_prefix(&prefix)))?;
        objects.sort_unstable();
        Ok(objects)
    }

    /// The names (last segment only) of the immediate "directories" under `prefix`,
    /// sorted: `list_dirs("")` gives tenants, `list_dirs("tenant")` that tenant's block
    /// ULIDs.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix_path(prefix)?;
        let listing = self
            .store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(Error::store("list", display_prefix(&prefix)))?;
        let mut dirs: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        dirs.sort_unstable();
        Ok(dirs)
    }

    /// Uploads every file under `local_dir` (recursively) to `dest_prefix/<relative
    /// path>`, all other files first and the top-level `meta.json` last, only after every
    /// other file is stored, so a reader never sees `meta.json` of a half-uploaded block.
    /// Large files go up in parts. Returns the bytes uploaded. On error, what was
    /// uploaded stays; without `meta.json` it is not a block, and a retry overwrites it.
    pub async fn upload_dir(&self, local_dir: impl AsRef<Path>, dest_prefix: &str) -> Result<u64> {
        let local_dir = local_dir.as_ref();
        let dest = prefix_path(dest_prefix)?;
        let files = local_files(local_dir).await?;
        let (meta, rest): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|f| f.relative == META_JSON);

        let upload = |file: LocalFile| {
            let dest = dest.clone();
            async move {
                let location = join(dest.as_ref(), &file.relative)?;
                self.upload_file(&file.path, &location, file.size).await?;
                Ok::<u64, Error>(file.size)
            }
        };
        let mut total: u64 = futures::stream::iter(rest)
            .map(upload)
            .buffer_unordered(TRANSFER_CONCURRENCY)
            .try_fold(0, |sum, size| async move { Ok(sum + size) })
            .await?;
        for file in meta {
            total += upload(file).await?;
        }
        Ok(total)
    }

    async fn upload_file(&self, local: &Path, location: &ObjectPath, size: u64) -> Result<()> {
        match self.settings.part_size {
            Some(part_size) if size > part_size => {
                self.upload_multipart(local, location, part_size).await
            }
            _ => {
                let data = tokio::fs::read(local)
                    .await
                    .map_err(|e| Error::io(local, e))?;
                self.put_bytes(location, Bytes::from(data)).await
            }
        }
    }

    async fn upload_multipart(
        &self,
        local: &Path,
        location: &ObjectPath,
        part_size: u64,
    ) -> Result<()> {
        let opts = PutMultipartOptions {
            attributes: self.settings.attributes.clone(),
            ..PutMultipartOptions::default()
        };
        let upload = self
            .store
            .put_multipart_opts(location, opts)
            .await
            .map_err(Error::store("put", location))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size as usize);
        let mut file = match tokio::fs::File::open(local).await {
            Ok(file) => file,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(Error::io(local, e));
            }
        };
        let mut buf = vec![0u8; READ_BUFFER.min(part_size as usize)];
        let streamed: Result<()> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(|e| Error::io(local, e))?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(Error::store("put", location))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        match streamed {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(Error::store("put", location))?;
                Ok(())
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Downloads every object under `prefix` into `local_dir`, keeping the relative
    /// paths, and returns the bytes written. [`Error::NotFound`] if nothing is there.
    pub async fn download_dir(&self, prefix: &str, local_dir: impl AsRef<Path>) -> Result<u64> {
        let local_dir = local_dir.as_ref();
        let prefix_loc = prefix_path(prefix)?;
        let objects = self.list(prefix).await?;
        if objects.is_empty() {
            return Err(Error::NotFound {
                path: display_prefix(&prefix_loc),
            });
        }
        let skip = prefix_loc.as_ref().map_or(0, |p| p.parts_count());
        futures::stream::iter(objects)
            .map(|(path, _)| async move {
                let location = ObjectPath::from(path.as_str());
                let mut target = local_dir.to_path_buf();
                // Path segments exclude "", "." and "..", so this stays under local_dir.
                target.extend(
                    location
                        .parts()
                        .skip(skip)
                        .map(|part| part.as_ref().to_string()),
                );
                self.download_file(&location, &target).await
            })
            .buffer_unordered(TRANSFER_CONCURRENCY)
            .try_fold(0, |sum, size| async move { Ok(sum + size) })
            .await
    }

    async fn download_file(&self, location: &ObjectPath, target: &Path) -> Result<u64> {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io(parent, e))?;
        }
        let result = self
            .store
            .get(location)
            .await
            .map_err(Error::store("get", location))?;
        let mut file = tokio::fs::File::create(target)
            .await
            .map_err(|e| Error::io(target, e))?;
        let mut stream = result.into_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::store("get", location))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(target, e))?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(|e| Error::io(target, e))?;
        Ok(written)
    }

    /// Deletes every object under `prefix`, `meta.json` first so that readers stop
    /// seeing the block before its files go. Returns how many objects were deleted.
    pub async fn delete_dir(&self, prefix: &str) -> Result<usize> {
        let Some(dir) = prefix_path(prefix)? else {
            return Err(Error::InvalidPath {
                path: prefix.to_string(),
                reason: "delete_dir needs a directory; it will not empty the whole bucket"
                    .to_string(),
            });
        };
        let mut objects = self.list(prefix).await?;
        let meta = dir.join(META_JSON).to_string();
        let count = objects.len();
        if let Some(i) = objects.iter().position(|(path, _)| *path == meta) {
            let (path, _) = objects.remove(i);
            self.delete(&path).await?;
        }
        futures::stream::iter(objects)
            .map(|(path, _)| async move { self.delete(&path).await })
            .buffer_unordered(TRANSFER_CONCURRENCY)
            .try_collect::<()>()
            .await?;
        Ok(count)
    }

    /// The blocks under `tenant_prefix`: directories named by a ULID (canonical
    /// upper-case form) that hold `meta.json`, sorted by ULID, each with its raw
    /// `meta.json` and whether it carries a deletion or no-compact mark. Directories
    /// without `meta.json` (uploads in progress or abandoned) are left out.
    pub async fn list_blocks(&self, tenant_prefix: &str) -> Result<Vec<BlockRef>> {
        self.list_blocks_with(tenant_prefix, &mut |_, _| {}).await
    }

    /// [`Bucket::list_blocks`], calling `progress(done, total)` as each block's
    /// directory has been read (for a progress bar over a large bucket).
    pub async fn list_blocks_with(
        &self,
        tenant_prefix: &str,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<Vec<BlockRef>> {
        let tenant = prefix_path(tenant_prefix)?;
        let ulids: Vec<Ulid> = self
            .list_dirs(tenant_prefix)
            .await?
            .iter()
            .filter_map(|name| {
                Ulid::from_string(name)
                    .ok()
                    .filter(|u| u.to_string() == *name)
            })
            .collect();
        let total = ulids.len();
        let mut reads = futures::stream::iter(ulids)
            .map(|ulid| {
                let tenant = tenant.clone();
                async move { self.block(tenant.as_ref(), ulid).await }
            })
            .buffer_unordered(LIST_BLOCKS_CONCURRENCY);
        let mut blocks = Vec::with_capacity(total);
        let mut done = 0;
        while let Some(block) = reads.next().await {
            done += 1;
            progress(done, total);
            if let Some(b) = block? {
                blocks.push(b);
            }
        }
        blocks.sort_unstable_by_key(|b| b.ulid);
        Ok(blocks)
    }

    async fn block(&self, tenant: Option<&ObjectPath>, ulid: Ulid) -> Result<Option<BlockRef>> {
        let dir = join(tenant, &ulid.to_string())?;
        let listing = self
            .store
            .list_with_delimiter(Some(&dir))
            .await
            .map_err(Error::store("list", &dir))?;
        let has = |name: &str| {
            listing
                .objects
                .iter()
                .any(|o| o.location.filename() == Some(name))
        };
        if !has(META_JSON) {
            return Ok(None);
        }
        let (deletion_marked, no_compact_marked) = (has(DELETION_MARK), has(NO_COMPACT_MARK));
        let meta = dir.join(META_JSON);
        let meta_json = match self.store.get(&meta).await {
            Ok(result) => result.bytes().await.map_err(Error::store("get", &meta))?,
            // Deleted between the listing and the read.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store("get", &meta)(e)),
        };
        Ok(Some(BlockRef {
            ulid,
            meta_json,
            deletion_marked,
            no_compact_marked,
        }))
    }
}

/// An object path: `/`-separated, no empty, `.` or `..` segments; leading and trailing
/// `/` are ignored.
fn object_path(path: &str) -> Result<ObjectPath> {
    match prefix_path(path)? {
        Some(location) => Ok(location),
        None => Err(Error::InvalidPath {
            path: path.to_string(),
            reason: "empty".to_string(),
        }),
    }
}

/// A listing prefix; `""` (or `/`) is the whole bucket.
fn prefix_path(prefix: &str) -> Result<Option<ObjectPath>> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(None);
    }
    ObjectPath::parse(trimmed)
        .map(Some)
        .map_err(|e| Error::InvalidPath {
            path: prefix.to_string(),
            reason: e.to_string(),
        })
}

fn join(dir: Option<&ObjectPath>, relative: &str) -> Result<ObjectPath> {
    match dir {
        Some(dir) => object_path(&format!("{dir}/{relative}")),
        None => object_path(relative),
    }
}

fn display_prefix(prefix: &Option<ObjectPath>) -> String {
    prefix
        .as_ref()
        .map_or_else(|| "/".to_string(), |p| format!("{p}/"))
}

struct LocalFile {
    path: PathBuf,
    /// `/`-separated path below the uploaded directory.
    relative: String,
    size: u64,
}

/// Every file below `dir`, following symlinks, sorted by relative path.
async fn local_files(dir: &Path) -> Result<Vec<LocalFile>> {
    let root = dir.to_path_buf();
    let walk = move || -> Result<Vec<LocalFile>> {
        let mut files = Vec::new();
        let mut pending = vec![(root.clone(), String::new())];
        while let Some((dir, relative)) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let path = entry.path();
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|_| Error::InvalidPath {
                        path: path.display().to_string(),
                        reason: "file name is not UTF-8".to_string(),
                    })?;
                let relative = if relative.is_empty() {
                    name
                } else {
                    format!("{relative}/{name}")
                };
                let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
                if meta.is_dir() {
                    pending.push((path, relative));
                } else {
                    files.push(LocalFile {
                        path,
                        relative,
                        size: meta.len(),
                    });
                }
            }
        }
        files.sort_unstable_by(|a, b| a.relative.cmp(&b.relative));
        Ok(files)
    };
    tokio::task::spawn_blocking(walk)
        .await
        .map_err(|e| Error::io(dir, std::io::Error::other(e)))?
}
