//! Tenant IDs: where they come from and which are allowed, the same for every component.

/// The tenant of requests without a tenant header.
pub const DEFAULT_TENANT: &str = "anonymous";

/// Mimir's tenant ID rule: 1–150 characters of alphanumerics and `!-_.*'()`, not `.` or
/// `..` — so a tenant ID is always a safe path segment in the bucket.
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
    }
}
