//! The one error type of the `tsdb` crate.

use std::path::PathBuf;

/// Every failure the TSDB layer reports. Corruption errors name the file and the byte
/// offset so an operator can find the damage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: corrupt at offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{file}: invalid meta.json: {reason}")]
    InvalidMeta { file: PathBuf, reason: String },
    #[error("invalid regex {pattern:?} in matcher: {reason}")]
    InvalidRegex { pattern: String, reason: String },
    #[error("invalid input: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}
