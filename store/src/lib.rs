//! The Store API's shared edge: what its servers (the ingester, the sidecar) and its
//! client (the querier) would otherwise each write: matchers and labels between
//! protobuf and [`strata_tsdb`], and the tenant a request names in its metadata.
//!
//! A server's errors are `tonic::Status` (`InvalidArgument`), what it answers with; a
//! client's are [`StoreError`], classified by kind (not found, transient, corrupt, limit).

mod error;
pub use error::{ErrorKind, StoreError};

use strata_proto::prometheus::{label_matcher, Label, LabelMatcher};
use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{MatchOp, Matcher};
use tonic::{Request, Status};

/// Metadata keys that carry the tenant: Mimir's, then Thanos Receive's.
pub const TENANT_KEYS: [&str; 2] = strata_kit::tenant::TENANT_HEADERS;

/// A protobuf matcher as ours, with a clear error for an unknown type or a bad regex.
pub fn matcher_from_proto(m: &LabelMatcher) -> Result<Matcher, Status> {
    let op = match label_matcher::Type::try_from(m.r#type) {
        Ok(label_matcher::Type::Eq) => MatchOp::Equal,
        Ok(label_matcher::Type::Neq) => MatchOp::NotEqual,
        Ok(label_matcher::Type::Re) => MatchOp::RegexMatch,
        Ok(label_matcher::Type::Nre) => MatchOp::RegexNoMatch,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown matcher type {}",
                m.r#type
            )))
        }
    };
    Matcher::new(op, m.name.clone(), m.value.clone())
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// [`matcher_from_proto`] for each.
pub fn matchers_from_proto(ms: &[LabelMatcher]) -> Result<Vec<Matcher>, Status> {
    ms.iter().map(matcher_from_proto).collect()
}

/// Our matchers as protobuf.
pub fn matchers_to_proto(ms: &[Matcher]) -> Vec<LabelMatcher> {
    ms.iter()
        .map(|m| LabelMatcher {
            r#type: match m.op {
                MatchOp::Equal => label_matcher::Type::Eq,
                MatchOp::NotEqual => label_matcher::Type::Neq,
                MatchOp::RegexMatch => label_matcher::Type::Re,
                MatchOp::RegexNoMatch => label_matcher::Type::Nre,
            } as i32,
            name: m.name.clone(),
            value: m.value.clone(),
        })
        .collect()
}

/// A label set as protobuf labels (sorted, as ours are).
pub fn labels_to_proto(l: &Labels) -> Vec<Label> {
    l.iter()
        .map(|l| Label {
            name: l.name.to_string(),
            value: l.value.to_string(),
        })
        .collect()
}

/// The tenant a request names (`None`: it names none), validated by the rule every
/// server shares ([`strata_kit::tenant`]); a bad one is `InvalidArgument` with the text
/// the HTTP servers answer 400 with.
pub fn requested_tenant<T>(req: &Request<T>) -> Result<Option<String>, Status> {
    let md = req.metadata();
    let raw = TENANT_KEYS
        .iter()
        .find_map(|k| md.get(*k))
        .map(|v| v.as_bytes());
    strata_kit::tenant::tenant_from_value(raw).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The tenant of a request: [`requested_tenant`], else `anonymous`.
pub fn tenant_of<T>(req: &Request<T>) -> Result<String, Status> {
    Ok(requested_tenant(req)?.unwrap_or_else(|| strata_kit::tenant::DEFAULT_TENANT.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_round_trip_and_bad_input_is_named() {
        let ms = vec![
            Matcher::new(MatchOp::Equal, "job", "api").unwrap(),
            Matcher::new(MatchOp::NotEqual, "env", "dev").unwrap(),
            Matcher::new(MatchOp::RegexMatch, "path", "/v1/.*").unwrap(),
            Matcher::new(MatchOp::RegexNoMatch, "code", "5..").unwrap(),
        ];
        let back = matchers_from_proto(&matchers_to_proto(&ms)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{ms:?}"));

        let bad_type = LabelMatcher {
            r#type: 9,
            name: "a".into(),
            value: "b".into(),
        };
        let e = matcher_from_proto(&bad_type).unwrap_err();
        assert!(e.message().contains("unknown matcher type 9"), "{e:?}");
        let bad_re = LabelMatcher {
            r#type: label_matcher::Type::Re as i32,
            name: "a".into(),
            value: "(".into(),
        };
        assert_eq!(
            matcher_from_proto(&bad_re).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn tenant_from_either_key() {
        let mut r = Request::new(());
        assert_eq!(requested_tenant(&r).unwrap(), None);
        assert_eq!(tenant_of(&r).unwrap(), "anonymous");
        r.metadata_mut()
            .insert("thanos-tenant", "b".parse().unwrap());
        assert_eq!(tenant_of(&r).unwrap(), "b");
        r.metadata_mut()
            .insert("x-scope-orgid", "a".parse().unwrap());
        assert_eq!(tenant_of(&r).unwrap(), "a");
        r.metadata_mut()
            .insert("x-scope-orgid", "a/b".parse().unwrap());
        let e = tenant_of(&r).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "tenant ID 'a/b' contains unsupported character '/'"
        );
    }
}
