//! `type: FILESYSTEM`: a bucket on a local directory.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::Attributes;
use serde::Deserialize;

use crate::error::{Error, Result};

use super::{nullable, required, Built, PutSettings, DEFAULT_PART_SIZE};

/// A store on a local directory, created if missing. Empty directories left by a delete
/// are removed so that listings do not show them.
pub(crate) fn filesystem(dir: &std::path::Path) -> Result<Built> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| Error::io(&dir, std::io::Error::other(e)))?
        .with_automatic_cleanup(true);
    Ok(Built {
        store: Arc::new(store),
        name: format!("fs:{}", dir.display()),
        settings: PutSettings {
            part_size: Some(DEFAULT_PART_SIZE),
            attributes: Attributes::new(),
        },
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilesystemConfig {
    #[serde(default, deserialize_with = "nullable")]
    directory: String,
}

impl FilesystemConfig {
    pub(super) fn build(self) -> Result<Built> {
        required(
            "config.directory",
            &self.directory,
            "the directory that holds the bucket",
        )?;
        filesystem(std::path::Path::new(&self.directory))
    }
}
