//! The evaluator (being written: until it lands every query fails with an execution
//! error saying so).

use crate::{EngineOptions, QueryError, QueryResult, Storage};

pub struct Engine {
    #[allow(dead_code)]
    opts: EngineOptions,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    /// Evaluate `query` at `t` (ms).
    pub fn instant(&self, _storage: &dyn Storage, _query: &str, _t: i64) -> Result<QueryResult, QueryError> {
        Err(QueryError::Execution("the PromQL engine is not built yet".into()))
    }

    /// Evaluate `query` at every step from `start` to `end` (ms, inclusive).
    pub fn range(&self, _storage: &dyn Storage, _query: &str, _start: i64, _end: i64, _step: i64) -> Result<QueryResult, QueryError> {
        Err(QueryError::Execution("the PromQL engine is not built yet".into()))
    }
}
