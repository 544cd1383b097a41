//! What went wrong reading a store (a Store API endpoint, the bucket), by kind, so a
//! caller can tell an answer to give up on from one worth retrying or reporting as a
//! partial response.

use strata_objstore::object_store;

/// A failed read of a store. The message is what a user sees; the variant is how
/// callers decide: [`StoreError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// What was asked for does not exist (an object, a block's file).
    #[error("{0}")]
    NotFound(String),
    /// The store could not answer now: unreachable, overloaded, timed out. Retrying (or
    /// another replica) may succeed.
    #[error("{0}")]
    Transient(String),
    /// The store answered with damaged data: a checksum, a length or a format is wrong.
    /// Retrying reads the same bytes.
    #[error("{0}")]
    Corrupt(String),
    /// A limit refused the request (too many series, samples or bytes). Another replica
    /// would refuse it too; the query must ask for less.
    #[error("{0}")]
    Limit(String),
    /// Anything else: a refused request, permissions, an internal error.
    #[error("{0}")]
    Other(String),
}

/// [`StoreError`]'s variants without their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    NotFound,
    Transient,
    Corrupt,
    Limit,
    Other,
}

impl ErrorKind {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Transient => "transient",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Limit => "limit",
            ErrorKind::Other => "other",
        }
    }
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::Transient(_) => ErrorKind::Transient,
            StoreError::Corrupt(_) => ErrorKind::Corrupt,
            StoreError::Limit(_) => ErrorKind::Limit,
            StoreError::Other(_) => ErrorKind::Other,
        }
    }

    /// Might the same request succeed if tried again?
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// Can a partial response stand in for this source? Not for a limit: the answer
    /// would silently lack what the limit cut off, and every replica would refuse alike.
    pub fn allows_partial_response(&self) -> bool {
        self.kind() != ErrorKind::Limit
    }

    pub fn message(&self) -> &str {
        match self {
            StoreError::NotFound(m)
            | StoreError::Transient(m)
            | StoreError::Corrupt(m)
            | StoreError::Limit(m)
            | StoreError::Other(m) => m,
        }
    }

    /// The same kind with `prefix: ` before the message (which block, which source).
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        self.map_message(|m| format!("{prefix}: {m}"))
    }

    fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            StoreError::NotFound(m) => StoreError::NotFound(f(m)),
            StoreError::Transient(m) => StoreError::Transient(f(m)),
            StoreError::Corrupt(m) => StoreError::Corrupt(f(m)),
            StoreError::Limit(m) => StoreError::Limit(f(m)),
            StoreError::Other(m) => StoreError::Other(f(m)),
        }
    }

    /// A gRPC status from a Store API endpoint, its text as Go's gRPC prints it
    /// (`rpc error: code = … desc = …`).
    pub fn from_status(s: &tonic::Status) -> Self {
        use tonic::Code;
        let msg = if s.message().is_empty() {
            format!("rpc error: code = {:?}", s.code())
        } else {
            format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
        };
        match s.code() {
            Code::NotFound => StoreError::NotFound(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
                StoreError::Transient(msg)
            }
            // Mimir and Thanos answer a store-gateway or ingester limit with
            // ResourceExhausted.
            Code::ResourceExhausted => StoreError::Limit(msg),
            Code::DataLoss => StoreError::Corrupt(msg),
            _ => StoreError::Other(msg),
        }
    }

    /// An object-store error.
    pub fn from_objstore(e: &strata_objstore::Error) -> Self {
        use strata_objstore::Error as E;
        let msg = e.to_string();
        match e {
            E::NotFound { .. } => StoreError::NotFound(msg),
            // A range past the object's end: the index or a length said so.
            E::InvalidRange { .. } => StoreError::Corrupt(msg),
            E::Store { source, .. } => match source {
                object_store::Error::NotFound { .. } => StoreError::NotFound(msg),
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. }
                | object_store::Error::InvalidPath { .. } => StoreError::Other(msg),
                // Network errors, server errors and throttling after the client's own
                // retries: another try may work.
                _ => StoreError::Transient(msg),
            },
            E::Io { .. } => StoreError::Transient(msg),
            _ => StoreError::Other(msg),
        }
    }

    /// A block file that did not parse (or could not be read locally).
    pub fn from_tsdb(e: &strata_tsdb::Error) -> Self {
        use strata_tsdb::Error as E;
        let msg = e.to_string();
        match e {
            E::Corrupt { .. } | E::InvalidMeta { .. } => StoreError::Corrupt(msg),
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                StoreError::NotFound(msg)
            }
            E::Io { .. } => StoreError::Transient(msg),
            _ => StoreError::Other(msg),
        }
    }
}

impl From<strata_objstore::Error> for StoreError {
    fn from(e: strata_objstore::Error) -> Self {
        StoreError::from_objstore(&e)
    }
}

impl From<strata_tsdb::Error> for StoreError {
    fn from(e: strata_tsdb::Error) -> Self {
        StoreError::from_tsdb(&e)
    }
}

impl From<tonic::Status> for StoreError {
    fn from(s: tonic::Status) -> Self {
        StoreError::from_status(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn grpc_codes_by_kind_and_text_as_go_prints_it() {
        let e = StoreError::from_status(&Status::unavailable("connection refused"));
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert_eq!(
            e.to_string(),
            "rpc error: code = Unavailable desc = connection refused"
        );
        for (code, kind) in [
            (Code::DeadlineExceeded, ErrorKind::Transient),
            (Code::NotFound, ErrorKind::NotFound),
            (Code::ResourceExhausted, ErrorKind::Limit),
            (Code::DataLoss, ErrorKind::Corrupt),
            (Code::InvalidArgument, ErrorKind::Other),
            (Code::Internal, ErrorKind::Other),
        ] {
            assert_eq!(StoreError::from_status(&Status::new(code, "")).kind(), kind);
        }
        assert_eq!(
            StoreError::from_status(&Status::new(Code::Internal, "")).to_string(),
            "rpc error: code = Internal"
        );
        assert!(!StoreError::Limit("x".into()).allows_partial_response());
        assert!(StoreError::Transient("x".into()).allows_partial_response());
        let c = StoreError::Corrupt("bad crc".into()).context("block t/01");
        assert_eq!(
            (c.kind(), c.message()),
            (ErrorKind::Corrupt, "block t/01: bad crc")
        );
    }

    /// Errors of a real filesystem bucket and real block files, by kind.
    #[test]
    fn object_store_and_block_errors_by_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = strata_objstore::Bucket::filesystem(tmp.path()).unwrap();
        let e = rt.block_on(b.get("t/missing/index")).unwrap_err();
        assert_eq!(StoreError::from(e).kind(), ErrorKind::NotFound);
        rt.block_on(b.put("t/x", bytes::Bytes::from_static(b"abc")))
            .unwrap();
        let e = rt.block_on(b.get_range("t/x", 0..10)).unwrap_err();
        assert_eq!(StoreError::from(e).kind(), ErrorKind::Corrupt);

        let seg = tmp.path().join("000001");
        std::fs::write(&seg, b"\x85\xbd\x40\xdd\x01\0\0\0\x05").unwrap();
        let rd = strata_tsdb::chunks::ChunkReader::from_segments(vec![(
            seg.clone(),
            bytes::Bytes::from(std::fs::read(&seg).unwrap()),
        )])
        .unwrap();
        let e = StoreError::from(rd.chunk(8).unwrap_err());
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.message().contains("000001"), "{e}");
        let e = strata_tsdb::chunks::ChunkReader::open(&tmp.path().join("nope")).unwrap_err();
        assert_eq!(StoreError::from(e).kind(), ErrorKind::NotFound);
    }
}
