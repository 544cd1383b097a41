//! The hostile probe's queries against the real `strata all`: each used to overflow a
//! tokio worker's stack and abort the whole process (ingester included). Now each is a
//! 400 naming the limit and the process keeps serving.

use strata_testkit::http::{get, post};
use strata_testkit::strata::StrataProc;

fn form(q: &str) -> Vec<u8> {
    let mut out = String::from("query=");
    for b in q.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out.push_str("&time=1700000000");
    out.into_bytes()
}

#[test]
fn hostile_deep_queries_are_400_and_the_process_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let strata = StrataProc::start_all(&tmp.path().join("strata"), &[]);
    let url = format!("{}/api/v1/query", strata.url());
    let ct = [("Content-Type", "application/x-www-form-urlencoded")];
    let nested = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    for q in [
        vec!["1"; 1_500].join("+"),
        nested("abs(", "x", ")", 1_500),
        nested("sum(", "x", ")", 2_000),
        nested("max_over_time((", "x", ")[5m:1m])", 1_000),
    ] {
        let (status, body) = post(&url, &ct, &form(&q))
            .unwrap_or_else(|e| panic!("{}…: no answer ({e}); log:\n{}", &q[..30], strata.log()));
        assert_eq!(status, 400, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errorType"], "bad_data");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("expression nested more than 1000 levels deep")
                && e.contains("--query.max-depth"),
            "{e}"
        );
    }
    // Still serving, and a query at the limit is answered.
    assert_eq!(get(&format!("{}/-/healthy", strata.url())).unwrap().0, 200);
    let (status, body) = post(&url, &ct, &form(&vec!["1"; 1_000].join("+"))).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""result":[1700000000,"1000"]"#), "{body}");
    let (status, body) = post(&url, &ct, &form("1 +")).unwrap();
    assert_eq!(status, 400);
    assert!(
        body.contains("1:4: parse error: unexpected end of input"),
        "{body}"
    );
}
