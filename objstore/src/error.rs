//! The one error type of the `objstore` crate.

use std::path::PathBuf;

/// Every failure the object-store layer reports. Object errors name the object path
/// (relative to the bucket and its configured `prefix`); config errors name the YAML
/// field, e.g. `config.bucket`, so an operator knows which line to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object (or, for [`crate::Bucket::download_dir`], any object under the
    /// prefix) does not exist.
    #[error("object not found: {path}")]
    NotFound { path: String },

    /// A path that cannot name an object: empty, an empty `a//b` segment, `.` or `..`.
    #[error("invalid object path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    /// A range read whose range is reversed or reaches past the end of the object.
    #[error("invalid range {start}..{end} for object {path}: {reason}")]
    InvalidRange {
        path: String,
        start: u64,
        end: u64,
        reason: String,
    },

    /// Any other failure of the backing store (network, permissions, server errors).
    /// The message adds the causes `source`'s own message leaves out (a TLS handshake's
    /// "invalid peer certificate: UnknownIssuer" under reqwest's "error sending
    /// request"), so the log line says what to fix.
    #[error("{op} {path}: {source}{}", hidden_causes(source))]
    Store {
        op: &'static str,
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// A conditional write lost: the object exists, or changed since it was read.
    #[error("conditional write of {path} refused: the object exists or changed since it was read")]
    Conflict { path: String },

    /// The backend cannot check the condition of a conditional write (a local
    /// filesystem cannot compare versions); nothing was written.
    #[error("conditional write of {path} is not supported by this store: {source}")]
    Unsupported {
        path: String,
        #[source]
        source: object_store::Error,
    },

    /// Reading or writing a local file during an upload or download.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A field of the objstore YAML is missing, has a bad value or is not supported.
    #[error("objstore config field {field}: {message}")]
    Config { field: String, message: String },

    /// The objstore YAML does not parse.
    #[error("objstore config: {message}")]
    ConfigSyntax { message: String },

    /// The objstore config file could not be read.
    #[error("objstore config file {}: {source}", path.display())]
    ConfigFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The objstore config file was read but its content is not a valid config.
    #[error("objstore config file {}: {source}", path.display())]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the object does not exist, so a caller can tell "absent" from "failed".
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when a conditional write lost to another writer.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True when the store cannot check a conditional write's condition.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an `object_store` error from operation `op` on `path`, keeping
    /// `NotFound` distinct.
    pub(crate) fn store(
        op: &'static str,
        path: impl std::fmt::Display,
    ) -> impl FnOnce(object_store::Error) -> Self {
        let path = path.to_string();
        move |source| match source {
            object_store::Error::NotFound { .. } => Error::NotFound { path },
            source => Error::Store { op, path, source },
        }
    }
}

/// `: cause: cause…` for every cause in `e`'s chain that its message does not show.
fn hidden_causes(e: &object_store::Error) -> String {
    use std::error::Error as _;
    let mut shown = e.to_string();
    let mut out = String::new();
    let mut next = e.source();
    while let Some(c) = next {
        let m = c.to_string();
        if !m.is_empty() && !shown.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
            shown.push_str(&m);
        }
        next = c.source();
    }
    out
}
