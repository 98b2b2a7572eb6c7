//! Who may talk to the server: the token, the `Host:` check against DNS rebinding, and the
//! same-origin check on writes.
//!
//! - With a token, every request carries it: `Authorization: Bearer TOKEN`, or the cookie that
//!   opening `/?token=TOKEN` sets (`HttpOnly; SameSite=Strict`, named per port because cookies
//!   are shared by every port of a host). A request with the right token may name the server
//!   by any host (a name on the network): a rebinding page cannot know the token.
//! - Without one, `Host:` must be a loopback address or `localhost` (or the `--listen` host)
//!   with the server's port: a page on `evil.example` that re-resolves its name to 127.0.0.1
//!   still sends `Host: evil.example`, and is refused.
//! - A write (`PUT`/`POST`/...) from a browser must come from the page itself:
//!   `Sec-Fetch-Site` is `same-origin` (or `none`), and `Origin`, when sent, is this server.
//!   A cross-origin `POST` with `Content-Type: text/plain` needs no CORS preflight, so without
//!   this any site the user visits could overwrite `labels.csv`.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::SharedState;
use super::ServeError;

const MIN_TOKEN: usize = 16;
const MAX_TOKEN: usize = 256;

/// A token must be hard to guess and fit in a cookie unquoted.
pub(super) fn check_token(token: &str) -> Result<(), ServeError> {
    let bad = |reason: String| Err(ServeError::BadToken { reason });
    if token.len() < MIN_TOKEN || token.len() > MAX_TOKEN {
        return bad(format!(
            "must be {MIN_TOKEN} to {MAX_TOKEN} characters (got {}); e.g. `openssl rand -hex 16`",
            token.len()
        ));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '"' | ',' | ';' | '\\'))
    {
        return bad(format!(
            "{c:?} is not allowed (use printable ASCII without spaces, quotes, commas, semicolons or backslashes)"
        ));
    }
    Ok(())
}

/// The request checks, made once per request by [`guard`].
pub(super) struct Guard {
    token: Option<String>,
    port: u16,
    /// The host part of `--listen`, lowercased without brackets (a name the user chose).
    listen_host: String,
    cookie: String,
}

impl Guard {
    pub(super) fn new(listen: &str, port: u16, token: Option<String>) -> Self {
        let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
        Guard {
            token,
            port,
            listen_host: normalize_host(host),
            cookie: format!("kiln_token_{port}"),
        }
    }

    pub(super) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether `Host:` names this server without needing the token: a loopback IP,
    /// `localhost` or the `--listen` host, with this server's port.
    fn host_allowed(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<axum::http::uri::Authority>() else {
            return false;
        };
        let port_ok = match authority.port_u16() {
            Some(port) => port == self.port,
            None => self.port == 80,
        };
        let name = normalize_host(authority.host());
        let name_ok = match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_canonical().is_loopback() || name == self.listen_host,
            Err(_) => name == "localhost" || name == self.listen_host,
        };
        port_ok && name_ok
    }

    /// Whether the request carries the right token, as a bearer token or this port's cookie.
    fn authenticated(&self, headers: &HeaderMap, token: &str) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "))
            .any(|t| same(t.trim().as_bytes(), token.as_bytes()));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == self.cookie && same(value.as_bytes(), token.as_bytes()));
        bearer || cookie
    }
}

/// Leaves the token out, so a debug print of the server cannot leak it.
impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("port", &self.port)
            .field("listen_host", &self.listen_host)
            .finish()
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Compares in time independent of where the first difference is, so response times do not
/// reveal a token byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, format!("kiln serve: {message}\n")).into_response()
}

/// The `?token=` query parameter, if any.
fn query_token(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// The request's path and query without its `token` parameter: where a tokened link redirects.
fn without_token(request: &Request) -> String {
    let path = request.uri().path();
    let Some(query) = request.uri().query() else {
        return path.to_owned();
    };
    let rest: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name != "token")
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    if rest.is_empty() {
        return path.to_owned();
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(rest)
        .finish();
    format!("{path}?{query}")
}

/// Why a write does not come from the page itself, if it does not.
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        if site != "same-origin" && site != "none" {
            return Some(format!("Sec-Fetch-Site: {site}"));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("?");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !origin.eq_ignore_ascii_case(&format!("http://{host}")) {
            return Some(format!("Origin: {origin}"));
        }
    }
    None
}

/// Runs the checks in the module docs before any route, and marks every response as not to be
/// cached, sniffed or framed.
pub(super) async fn guard(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let guard = &state.guard;
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut set_cookie = None;
    if let Some(token) = guard.token() {
        if let Some(offered) = query_token(&request) {
            if !same(offered.as_bytes(), token.as_bytes()) {
                return refuse(StatusCode::UNAUTHORIZED, "wrong token in the link".into());
            }
            // Trade the link for a cookie and drop the token from the address bar (and the
            // browser's history).
            let cookie = format!("{}={token}; HttpOnly; SameSite=Strict; Path=/", guard.cookie);
            let mut response = (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, without_token(&request))],
            )
                .into_response();
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            set_cookie = Some(response);
        } else if !guard.authenticated(headers, token) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this server needs its token: open the link `kiln serve` printed \
                 (http://HOST:PORT/?token=TOKEN) or send `Authorization: Bearer TOKEN`"
                    .into(),
            );
        }
    } else if !guard.host_allowed(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host:?} does not name this server (only 127.0.0.1, [::1] or localhost on \
                 port {}; this stops DNS rebinding); use http://127.0.0.1:{}/",
                guard.port, guard.port
            ),
        );
    }
    let mut response = match set_cookie {
        Some(redirect) => redirect,
        None => {
            let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            if !safe {
                if let Some(why) = cross_origin(headers) {
                    return refuse(
                        StatusCode::FORBIDDEN,
                        format!(
                            "refusing a cross-origin {} {} ({why}): only the page served here may write",
                            request.method(),
                            request.uri().path()
                        ),
                    );
                }
            }
            next.run(request).await
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_be_long_and_cookie_safe() {
        assert!(check_token("0123456789abcdef").is_ok());
        let short = check_token("secret").unwrap_err().to_string();
        assert!(
            short.starts_with("--token: must be 16 to 256 characters (got 6)"),
            "{short}"
        );
        let spaced = check_token("0123456789 abcdef").unwrap_err().to_string();
        assert!(spaced.contains("' ' is not allowed"), "{spaced}");
        assert!(check_token("0123456789abcdef;x").is_err());
    }

    #[test]
    fn hosts_must_name_this_server() {
        let guard = Guard::new("127.0.0.1:8080", 8080, None);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST.:8080",
            "[::1]:8080",
            "127.1.2.3:8080",
        ] {
            assert!(guard.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:9090",
            "127.0.0.1",
            "",
            "10.0.0.1:8080",
            "localhost.evil.example:8080",
        ] {
            assert!(!guard.host_allowed(bad), "{bad}");
        }
        let named = Guard::new("kiln.internal:80", 80, None);
        assert!(named.host_allowed("kiln.internal"));
        assert!(named.host_allowed("kiln.internal:80"));
        assert!(!named.host_allowed("kiln.internal:81"));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let guard = Guard::new("127.0.0.1:8080", 8080, Some("0123456789abcdef".into()));
        let shown = format!("{guard:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn constant_time_comparison_compares() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
