//! Label rules shared by every component's flags and APIs: one copy, so the ingester,
//! the querier and the sidecar accept the same names and the same `--label` syntax.

/// Prometheus's classic label name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Thanos's `--label` syntax: `name="value"` (or `name=value`).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (n, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} must look like name=\"value\""))?;
    let v = v.trim();
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    if !valid_label_name(n) {
        return Err(format!("invalid label name {n:?} in {s:?}"));
    }
    Ok((n.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["job", "__name__", "_", "a1"] {
            assert!(valid_label_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a.b", "é"] {
            assert!(!valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn label_flag() {
        assert_eq!(
            parse_label("replica=\"a\"").unwrap(),
            ("replica".into(), "a".into())
        );
        assert_eq!(parse_label("dc=eu").unwrap(), ("dc".into(), "eu".into()));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("1x=\"a\"").is_err());
    }
}
