//! Tenant IDs: where they come from and which are allowed, the same for every component.

/// The tenant of requests without a tenant header.
pub const DEFAULT_TENANT: &str = "anonymous";

/// The compactor's lease object at the bucket's root.
pub const COMPACTOR_LOCK_OBJECT: &str = "strata-compactor-lock.json";

/// Names of objects Strata writes at the bucket's root, where tenants are directories:
/// a tenant with one of these names would collide with them. Every root-level object
/// name is declared here.
pub const RESERVED_TENANT_NAMES: &[&str] = &[COMPACTOR_LOCK_OBJECT];

/// The HTTP headers (and gRPC metadata keys) that name a tenant, in order of precedence:
/// Mimir's, then Thanos's.
pub const TENANT_HEADERS: [&str; 2] = ["x-scope-orgid", "thanos-tenant"];

/// Why a tenant ID was refused. Every server answers it the same way: 400 with this
/// text over HTTP, `InvalidArgument` with this text over gRPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTenant(String);

impl From<InvalidTenant> for String {
    fn from(e: InvalidTenant) -> String {
        e.0
    }
}

/// Mimir's tenant ID rule: 1–150 characters of alphanumerics and `!-_.*'()`, not `.` or
/// `..` — so a tenant ID is always a safe path segment in the bucket — and not a name
/// in [`RESERVED_TENANT_NAMES`].
pub fn validate_tenant(id: &str) -> Result<(), InvalidTenant> {
    let bad = |m: String| Err(InvalidTenant(m));
    if id.is_empty() {
        return bad("tenant ID is empty".into());
    }
    if id.len() > 150 {
        return bad(format!(
            "tenant ID is {} characters long; the limit is 150",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return bad(format!("tenant ID '{id}' is not allowed"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
    {
        return bad(format!(
            "tenant ID '{id}' contains unsupported character '{c}'"
        ));
    }
    if RESERVED_TENANT_NAMES.contains(&id) {
        return bad(format!(
            "tenant ID '{id}' is reserved: Strata keeps an object of that name at the bucket's root"
        ));
    }
    Ok(())
}

/// The tenant named by a header's raw value, validated; `None` (no header) is `None`.
/// Works on bytes so HTTP headers and gRPC metadata give the same answer for the same
/// value (their `to_str` differ on non-ASCII).
pub fn tenant_from_value(raw: Option<&[u8]>) -> Result<Option<String>, InvalidTenant> {
    let Some(raw) = raw else { return Ok(None) };
    let id = std::str::from_utf8(raw)
        .map_err(|_| InvalidTenant("tenant ID header is not valid UTF-8 text".into()))?;
    validate_tenant(id)?;
    Ok(Some(id.to_string()))
}

/// The tenant of an HTTP request: the first of [`TENANT_HEADERS`] present, validated;
/// [`DEFAULT_TENANT`] when neither is.
pub fn tenant_from_headers(headers: &axum::http::HeaderMap) -> Result<String, InvalidTenant> {
    let raw = TENANT_HEADERS
        .iter()
        .find_map(|k| headers.get(*k))
        .map(|v| v.as_bytes());
    Ok(tenant_from_value(raw)?.unwrap_or_else(|| DEFAULT_TENANT.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        assert!(validate_tenant("team-a").is_ok());
        assert!(validate_tenant("a!-_.*'()").is_ok());
        for bad in ["", "..", ".", "a/b", "a b", &"x".repeat(151)] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
        let e = validate_tenant("strata-compactor-lock.json").unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
    }

    #[test]
    fn headers() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(tenant_from_headers(&h).unwrap(), DEFAULT_TENANT);
        h.insert("thanos-tenant", "b".parse().unwrap());
        assert_eq!(tenant_from_headers(&h).unwrap(), "b");
        h.insert("x-scope-orgid", "a".parse().unwrap());
        assert_eq!(tenant_from_headers(&h).unwrap(), "a");
        h.insert(
            "x-scope-orgid",
            axum::http::HeaderValue::from_bytes("é".as_bytes()).unwrap(),
        );
        let e = tenant_from_headers(&h).unwrap_err().to_string();
        assert_eq!(e, "tenant ID 'é' contains unsupported character 'é'");
        h.insert(
            "x-scope-orgid",
            axum::http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert!(tenant_from_headers(&h).is_err());
    }
}
