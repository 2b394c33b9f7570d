//! Serving the browser dashboard: the static files of its trunk build and `GET /api/cluster`, which tells the
//! page which nodes to talk to (see [`raftkv_proto::dashboard`] for the JSON).
//!
//! `raftkv cluster` serves them next to its process-control API; `raftkv serve --web-dir` serves them on the
//! node's HTTP port (read-only: no control). If the files are missing the page explains how to build them, and
//! everything else keeps working.

use std::path::{Path, PathBuf};

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse},
    Router,
};
use raftkv_proto::dashboard::NodeInfo;
use tower_http::services::ServeDir;

/// The default location of the dashboard build, relative to the working directory (the repository root).
pub const DEFAULT_WEB_DIR: &str = "web/dist";

/// How to produce the files, for messages and the placeholder page.
pub const BUILD_HINT: &str = "build the dashboard with `bash web/build.sh` (from the repository root), \
                              or point --web-dir / RAFTKV_WEB_DIR at an existing build";

/// Whether `dir` holds a dashboard build.
pub fn is_built(dir: &Path) -> bool {
    dir.join("index.html").is_file()
}

/// Serves `dir` at `/`; when it holds no build, `/` answers 503 with a page that says how to make one.
pub fn static_files(dir: PathBuf) -> Router {
    let missing = {
        let dir = dir.clone();
        move || {
            let dir = dir.clone();
            async move {
                let body = format!(
                    "<!doctype html><title>raftkv dashboard not built</title><h1>The raftkv dashboard is not \
                     built</h1><p>No <code>index.html</code> in <code>{}</code>.</p><p>To fix it, {BUILD_HINT}, \
                     then reload this page. The cluster is running meanwhile.</p>",
                    html_escape(&dir.display().to_string())
                );
                (StatusCode::SERVICE_UNAVAILABLE, Html(body)).into_response()
            }
        }
    };
    // Checked per request, so building the dashboard while the cluster runs just works after a reload.
    let serve = ServeDir::new(&dir).append_index_html_on_directories(true);
    Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
        let (serve, missing, built) = (serve.clone(), missing.clone(), is_built(&dir));
        async move {
            if !built {
                return Ok::<_, std::convert::Infallible>(missing().await);
            }
            use tower::ServiceExt;
            let Ok(res) = serve.oneshot(req).await;
            Ok(res.into_response())
        }
    }))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// gRPC-Web base URL for a `host:port` gRPC address.
pub fn grpc_web_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// The nodes a read-only dashboard (served by `raftkv serve`) should talk to: the configured endpoints if any,
/// else every member's advertised address.
pub fn nodes_to_show(configured: &[String], members: &[raftkv_proto::Member]) -> Vec<NodeInfo> {
    let node = |id: Option<u64>, url: String| NodeInfo {
        id,
        url,
        http: None,
        process: None,
        partitioned: false,
        note: String::new(),
    };
    if configured.is_empty() {
        members.iter().map(|m| node(Some(m.id), grpc_web_url(&m.addr))).collect()
    } else {
        configured.iter().map(|u| node(None, grpc_web_url(u))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_scheme_once() {
        assert_eq!(grpc_web_url("127.0.0.1:7001"), "http://127.0.0.1:7001");
        assert_eq!(grpc_web_url("https://kv.example:443"), "https://kv.example:443");
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        use tower::ServiceExt;
        let req = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let res = router.oneshot(req).await.unwrap();
        let code = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn missing_files_get_a_page_that_says_how_to_build_them_then_the_build_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let (code, body) = get(static_files(dir.path().to_path_buf()), "/").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("web/build.sh"), "{body}");
        // Built while running: served on the next request.
        std::fs::write(dir.path().join("index.html"), "<p>dashboard</p>").unwrap();
        std::fs::write(dir.path().join("app.wasm"), b"\0asm").unwrap();
        let router = static_files(dir.path().to_path_buf());
        assert_eq!(get(router.clone(), "/").await, (StatusCode::OK, "<p>dashboard</p>".into()));
        assert_eq!(get(router.clone(), "/app.wasm").await.0, StatusCode::OK);
        assert_eq!(get(router, "/nope.js").await.0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn configured_endpoints_win_over_members() {
        let members =
            vec![raftkv_proto::Member { id: 2, addr: "node2:7001".into(), voter: true, ..Default::default() }];
        let from_members = nodes_to_show(&[], &members);
        assert_eq!(from_members[0].id, Some(2));
        assert_eq!(from_members[0].url, "http://node2:7001");
        let configured = nodes_to_show(&["localhost:7002".into()], &members);
        assert_eq!(configured.len(), 1);
        assert_eq!(configured[0].id, None);
        assert_eq!(configured[0].url, "http://localhost:7002");
    }
}
