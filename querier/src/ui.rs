//! The web UI at `/`: plain HTML and one ES module (`querier/ui/`), with uPlot for graphs,
//! compiled into the binary so nothing is built or fetched at run time. Pages (query,
//! stores, blocks, status) are chosen by the URL's hash; the page calls the JSON API.
//! `docs/ui.md` says what each page shows and how to update uPlot.
//!
//! Assets are served under `/ui/…?v=<hash of all assets>`: the index is never cached
//! and names the current hash, so the assets themselves are cached for a year.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../ui/index.html");

/// Path under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../ui/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../ui/vendor/uPlot.min.css"),
    ),
];

/// The index with every asset URL carrying the assets' hash.
fn index() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let mut h = 0u32;
        for (name, _, bytes) in ASSETS {
            h = crc32c::crc32c_append(h, name.as_bytes());
            h = crc32c::crc32c_append(h, bytes);
        }
        INDEX.replace("{{v}}", &format!("{h:08x}"))
    })
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        index(),
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, bytes)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                // The URL changes with the content (`?v=`), so a copy never goes stale.
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// `/` (and Thanos's and Prometheus's page paths, which show the same app) and
/// `/ui/<asset>`.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/graph", get(page))
        .route("/stores", get(page))
        .route("/blocks", get(page))
        .route("/ui/{name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_every_asset_with_its_hash() {
        let page = index();
        assert!(!page.contains("{{v}}"));
        for (name, _, _) in ASSETS {
            assert!(page.contains(&format!("/ui/{name}?v=")), "{name}");
        }
    }
}
