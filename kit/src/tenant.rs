//! Tenant IDs: where they come from and which are allowed, the same for every component.

/// The tenant of requests without a tenant header.
pub const DEFAULT_TENANT: &str = "anonymous";

/// The compactor's lease object at the bucket's root.
pub const COMPACTOR_LOCK_OBJECT: &str = "strata-compactor-lock.json";

/// Names of objects Strata writes at the bucket's root, where tenants are directories:
/// a tenant with one of these names would collide with them. Every root-level object
/// name is declared here.
pub const RESERVED_TENANT_NAMES: &[&str] = &[COMPACTOR_LOCK_OBJECT];

/// Mimir's tenant ID rule: 1–150 characters of alphanumerics and `!-_.*'()`, not `.` or
/// `..` — so a tenant ID is always a safe path segment in the bucket — and not a name
/// in [`RESERVED_TENANT_NAMES`].
pub fn validate_tenant(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("tenant ID is empty".into());
    }
    if id.len() > 150 {
        return Err(format!(
            "tenant ID is {} characters long; the limit is 150",
            id.len()
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("tenant ID '{id}' is not allowed"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(*c)))
    {
        return Err(format!(
            "tenant ID '{id}' contains unsupported character '{c}'"
        ));
    }
    if RESERVED_TENANT_NAMES.contains(&id) {
        return Err(format!(
            "tenant ID '{id}' is reserved: Strata keeps an object of that name at the bucket's root"
        ));
    }
    Ok(())
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
        assert!(e.contains("reserved"), "{e}");
    }
}
