//! Closed to foreign web pages: the guard in front of every port a browser can reach.
//!
//! A browser attaches `Origin` to every cross-origin request, and to every POST, and it sends whatever `Host` the
//! page's URL named. Two attacks follow from a port that ignores them: **cross-site requests** (any page the user
//! visits POSTs to `127.0.0.1:8080/api/nodes/1/kill`; a "simple" request needs no CORS preflight) and **DNS
//! rebinding** (a page on `evil.example` re-points its own name at `127.0.0.1`, so its requests are same-origin
//! and carry `Host: evil.example`). The guard refuses both before the request reaches a handler:
//!
//! - on a browser's request (one with `Origin` or `Sec-Fetch-*` headers), `Host` must be an IP literal,
//!   `localhost`, or a name this server was told it is reached by (rebinding needs a name the attacker controls, so
//!   it fails here);
//! - a request with an `Origin` (a browser) must come from the same origin as `Host`, or from an origin allowed
//!   explicitly (`--cors-origin`, the dashboard's own origin); `*` allows every origin, as an explicit opt-in;
//! - a state-changing request (anything but GET/HEAD) whose `Sec-Fetch-Site` says `cross-site` or `same-site` is
//!   refused unless its origin is allowed.
//!
//! Clients that are not browsers (the CLI, gRPC libraries, curl) send no `Origin` and are not affected.
//!
//! Refusals are `403 Forbidden` on HTTP and `PERMISSION_DENIED` on gRPC, with the reason.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{ready, Either, Ready};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

/// Who may call a port from a browser.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Origins allowed besides the same origin (`scheme://host[:port]`); `*` = any.
    pub allowed_origins: Vec<String>,
    /// Host names (without port) this server is reached by, besides IP literals and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// The port speaks gRPC (refusals are gRPC statuses, not HTTP 403s).
    pub grpc: bool,
}

/// The host name of a `host[:port]` authority (IPv6 literals keep their brackets).
pub fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok()
}

impl OriginPolicy {
    /// Why the request must be refused, if it must.
    pub fn check(&self, method: &Method, uri: &http::Uri, headers: &HeaderMap) -> Result<(), String> {
        // Only browsers are a danger here, and they mark their requests: `Origin` on every cross-origin request
        // and every POST, `Sec-Fetch-*` on every request. Other clients (gRPC libraries behind a load balancer,
        // curl, probes) may name the server however they like.
        let from_browser =
            headers.contains_key(header::ORIGIN) || headers.keys().any(|k| k.as_str().starts_with("sec-fetch-"));
        if !from_browser {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| uri.authority().map(|a| a.as_str().to_string()));
        if let Some(authority) = &host {
            let name = host_name(authority).to_ascii_lowercase();
            let known = is_ip_literal(&name)
                || name == "localhost"
                || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&name));
            if !known {
                return Err(format!(
                    "Host {authority:?} is not a name this server is reached by (DNS rebinding?); use its \
                     address, or list the name with --cors-origin"
                ));
            }
        }
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if let Some(origin) = origin {
            let allowed = self.allowed_origins.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin));
            let same = host
                .as_deref()
                .is_some_and(|h| origin.split_once("://").is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h)));
            if !allowed && !same {
                return Err(format!("requests from web pages of {origin} are not allowed (see --cors-origin)"));
            }
            if allowed {
                return Ok(());
            }
        }
        let unsafe_method = !matches!(*method, Method::GET | Method::HEAD);
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("");
        if unsafe_method && matches!(fetch_site, "cross-site" | "same-site") {
            return Err(format!("{method} from another site's page is not allowed"));
        }
        Ok(())
    }

    fn refusal<B: Default>(&self, reason: &str) -> Response<B> {
        let mut res = Response::new(B::default());
        let value = HeaderValue::from_str(reason).unwrap_or_else(|_| HeaderValue::from_static("forbidden"));
        if self.grpc {
            // gRPC carries its status in headers of a 200 response (a trailers-only answer).
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            res.headers_mut().insert("grpc-status", HeaderValue::from_static("7")); // PERMISSION_DENIED
            res.headers_mut().insert("grpc-message", value);
        } else {
            *res.status_mut() = StatusCode::FORBIDDEN;
            res.headers_mut().insert("x-raftkv-refused", value);
        }
        res
    }
}

/// The tower layer applying an [`OriginPolicy`].
#[derive(Clone)]
pub struct OriginGuardLayer {
    policy: Arc<OriginPolicy>,
}

impl OriginGuardLayer {
    pub fn new(policy: OriginPolicy) -> Self {
        Self { policy: Arc::new(policy) }
    }
}

impl<S> tower::Layer<S> for OriginGuardLayer {
    type Service = OriginGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginGuard { inner, policy: self.policy.clone() }
    }
}

#[derive(Clone)]
pub struct OriginGuard<S> {
    inner: S,
    policy: Arc<OriginPolicy>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for OriginGuard<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self.policy.check(req.method(), req.uri(), req.headers()) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(reason) => {
                tracing::warn!(method = %req.method(), uri = %req.uri(), "refused a browser request: {reason}");
                Either::Left(ready(Ok(self.policy.refusal(&reason))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn foreign_origins_and_rebound_hosts_are_refused() {
        let p = OriginPolicy {
            allowed_origins: vec!["http://127.0.0.1:8080".into()],
            allowed_hosts: vec!["node1".into()],
            grpc: false,
        };
        let uri: http::Uri = "/api/nodes/1/kill".parse().unwrap();
        let post = Method::POST;
        // Not a browser: no Origin, no Sec-Fetch-*; any Host (a load balancer's name, say).
        assert!(p.check(&post, &uri, &headers(&[("host", "127.0.0.1:8080")])).is_ok());
        assert!(p.check(&post, &uri, &headers(&[("host", "raftkv.default.svc:7001")])).is_ok());
        // The dashboard's own page.
        let own = [("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "same-origin")];
        assert!(p.check(&post, &uri, &headers(&own)).is_ok());
        // A page elsewhere.
        let evil = [("host", "127.0.0.1:8080"), ("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")];
        assert!(p.check(&post, &uri, &headers(&evil)).unwrap_err().contains("evil.example"));
        // Another port of the same machine is another origin.
        let other_port = [("host", "127.0.0.1:7101"), ("origin", "http://127.0.0.1:3000")];
        assert!(p.check(&post, &uri, &headers(&other_port)).is_err());
        // DNS rebinding: same-origin, but under the attacker's name.
        let rebound = [("host", "evil.example:8080"), ("origin", "http://evil.example:8080")];
        assert!(p.check(&Method::GET, &uri, &headers(&rebound)).unwrap_err().contains("DNS rebinding"));
        let rebound_get = [("host", "evil.example:8080"), ("sec-fetch-site", "same-origin")];
        assert!(p.check(&Method::GET, &uri, &headers(&rebound_get)).unwrap_err().contains("DNS rebinding"));
        // A listed name and IPv6 literals pass.
        let listed = [("host", "node1:7101"), ("sec-fetch-site", "none")];
        assert!(p.check(&Method::GET, &uri, &headers(&listed)).is_ok());
        assert!(p.check(&Method::GET, &uri, &headers(&[("host", "[::1]:7101"), ("sec-fetch-mode", "cors")])).is_ok());
        // A form POST from another site without Origin (old browsers) is still refused by Sec-Fetch-Site.
        assert!(p
            .check(&post, &uri, &headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]))
            .is_err());
        // `*` opts in to every origin.
        let any = OriginPolicy { allowed_origins: vec!["*".into()], ..p.clone() };
        assert!(any.check(&post, &uri, &headers(&evil)).is_ok());
    }

    #[test]
    fn grpc_refusals_are_permission_denied() {
        let p = OriginPolicy { grpc: true, ..Default::default() };
        let r: Response<String> = p.refusal("no");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(r.headers()["grpc-message"], "no");
    }
}
