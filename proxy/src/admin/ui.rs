//! The trace viewer at `/debug/traces/ui`: one page of plain HTML, CSS and
//! JavaScript compiled into the binary, so it works offline and needs no
//! build step. It reads `/debug/traces`, `/debug/traces/{id}` and
//! `/debug/red`, all under `/debug`, so the admin access rule covers it.
//!
//! The Content-Security-Policy allows nothing but this origin: the page
//! shows attribute values that clients chose (paths, headers), and the
//! script only ever sets them as text.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Where the page lives.
pub const PATH: &str = "/debug/traces/ui";

const INDEX: &str = include_str!("ui/index.html");
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The page's assets, by file name; the JavaScript files are ES modules
/// that import each other by these names.
const ASSETS: [(&str, &str, &str); 6] = [
    ("app.css", CSS, include_str!("ui/app.css")),
    ("app.js", JS, include_str!("ui/app.js")),
    ("util.js", JS, include_str!("ui/util.js")),
    ("list.js", JS, include_str!("ui/list.js")),
    ("trace.js", JS, include_str!("ui/trace.js")),
    ("red.js", JS, include_str!("ui/red.js")),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is the page or one of its assets.
pub fn owns(path: &str) -> bool {
    path.strip_prefix(PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Serves the page (`/debug/traces/ui`, with or without a trailing slash)
/// and its assets; 404 for anything else below it.
pub fn serve(path: &str) -> Response<Full<Bytes>> {
    let rest = path.strip_prefix(PATH).unwrap_or(path);
    if rest.is_empty() || rest == "/" {
        return respond(StatusCode::OK, "text/html; charset=utf-8", INDEX);
    }
    let asset = rest
        .strip_prefix('/')
        .and_then(|name| ASSETS.iter().find(|(n, ..)| *n == name));
    match asset {
        Some((_, content_type, body)) => respond(StatusCode::OK, content_type, body),
        None => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; the trace viewer is at /debug/traces/ui\n",
        ),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: &'static str,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary may bring a new page; it is small, so never cache it stale.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_and_its_assets() {
        assert!(owns("/debug/traces/ui"));
        assert!(owns("/debug/traces/ui/app.js"));
        assert!(!owns("/debug/traces/uix"));
        assert!(!owns("/debug/traces"));
        for (path, ct) in [
            ("/debug/traces/ui", "text/html; charset=utf-8"),
            ("/debug/traces/ui/", "text/html; charset=utf-8"),
            ("/debug/traces/ui/app.js", "text/javascript; charset=utf-8"),
            ("/debug/traces/ui/app.css", "text/css; charset=utf-8"),
            (
                "/debug/traces/ui/trace.js",
                "text/javascript; charset=utf-8",
            ),
        ] {
            let resp = serve(path);
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_eq!(resp.headers()[header::CONTENT_TYPE], ct, "{path}");
            assert!(resp.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'"));
        }
        assert_eq!(
            serve("/debug/traces/ui/nope.js").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        // No CDN, no inline script (the CSP would refuse it anyway).
        assert!(INDEX.contains("src=\"/debug/traces/ui/app.js\""));
        assert!(INDEX.contains("href=\"/debug/traces/ui/app.css\""));
        for (name, _, text) in ASSETS {
            assert!(!text.contains("https://"), "an external URL in {name}");
            assert!(!text.contains("http://"), "an external URL in {name}");
            // Modules import each other by the names served here.
            for import in text.split("from \"./").skip(1) {
                let file = import.split('"').next().unwrap();
                assert!(
                    ASSETS.iter().any(|(n, ..)| *n == file),
                    "{name} imports {file}"
                );
            }
        }
        assert!(!INDEX.contains("<script>"), "inline script");
        assert!(!INDEX.contains("style=\""), "inline style");
    }
}
