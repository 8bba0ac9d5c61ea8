//! A fault-injecting proxy in front of the real registry, for what a real registry cannot
//! do on demand: demand Bearer tokens from a token realm (and revoke them mid-push), answer
//! 429 with `Retry-After` or 5xx, drop a connection in the middle of a body, serve a blob
//! with wrong bytes.
//!
//! Everything that is not a fault is forwarded to the upstream registry unchanged (the
//! `Host` header too, so the `Location`s it returns point back at the proxy): the registry
//! semantics under test are the real ones.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// What to do to a request that a [`Rule`] matches.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this status, headers and body instead of forwarding.
    Respond {
        /// Status code.
        status: u16,
        /// Extra headers (`Retry-After`, …).
        headers: Vec<(String, String)>,
        /// Body.
        body: String,
    },
    /// Forward, then cut the response body after this many bytes and close the connection.
    DropBodyAfter(u64),
    /// Forward, flipping one byte of the response body (same length, wrong digest).
    CorruptBody,
    /// Close the connection without an answer (the request is not forwarded).
    Drop,
    /// Revoke every token issued so far and answer 401 with a fresh challenge, as a
    /// registry does when a token expires in the middle of a push. Needs
    /// [`FaultProxy::require_tokens`].
    RevokeTokens,
}

impl Fault {
    /// `Respond` with a status and no headers.
    pub fn status(status: u16) -> Self {
        Self::Respond {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// 429 Too Many Requests with `Retry-After: SECS`.
    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::Respond {
            status: 429,
            headers: vec![("Retry-After".to_owned(), retry_after_secs.to_string())],
            body: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.to_owned(),
        }
    }
}

/// Which requests a fault applies to, and how often.
#[derive(Clone, Debug)]
pub struct Rule {
    method: Option<Method>,
    path_contains: String,
    skip: usize,
    times: usize,
    fault: Fault,
}

impl Rule {
    /// `fault` for requests whose path contains `path_contains` (any method), once.
    pub fn new(path_contains: &str, fault: Fault) -> Self {
        Self {
            method: None,
            path_contains: path_contains.to_owned(),
            skip: 0,
            times: 1,
            fault,
        }
    }

    /// Only requests with this method.
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Let the first `n` matching requests through first.
    #[must_use]
    pub fn after(mut self, n: usize) -> Self {
        self.skip = n;
        self
    }

    /// Apply to `n` matching requests (default 1).
    #[must_use]
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && path.contains(&self.path_contains)
    }
}

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The `Authorization` header's scheme (`Bearer`, `Basic`), if any.
    pub auth_scheme: Option<String>,
    /// What the proxy answered (the upstream's status when forwarded); 0 for a dropped
    /// connection.
    pub status: u16,
    /// The fault applied, if any (its `Debug` form).
    pub fault: Option<String>,
}

/// Token realm settings for [`FaultProxy::require_tokens`].
#[derive(Clone, Debug, Default)]
pub struct TokenAuth {
    /// When set, the realm wants these Basic credentials; otherwise anonymous tokens.
    pub basic: Option<(String, String)>,
    /// `expires_in` of issued tokens (seconds); 0 leaves it out.
    pub expires_in: u64,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<(Rule, usize)>,
    seen: Vec<Seen>,
    auth: Option<TokenAuth>,
    /// Issued tokens with the scopes they grant (`repository:NAME:ACTION` per action).
    tokens: Vec<(String, BTreeSet<String>)>,
    /// The scope strings of every token request, in order.
    token_requests: Vec<Vec<String>>,
    next_token: u64,
}

/// The proxy. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Start a proxy on 127.0.0.1 (a free port) in front of `upstream` (`HOST:PORT`),
    /// on the current tokio runtime.
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fault proxy: bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy: {e}"));
        let state = Arc::new(Mutex::new(State::default()));
        let upstream = Arc::new(upstream.to_owned());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, upstream) = (st.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, st.clone(), upstream.clone(), addr)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `127.0.0.1:PORT`: use it as the registry host of references (loopback, so plain
    /// HTTP).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Add a fault rule; rules are tried in the order added.
    pub fn add(&self, rule: Rule) {
        self.lock().rules.push((rule, 0));
    }

    /// Demand `Authorization: Bearer` with a token from the proxy's realm
    /// (`http://HOST/token`) for every `/v2/…` request, with scopes checked: `pull` to read
    /// a repository, `push` to write one, `pull` on the source of a mount.
    pub fn require_tokens(&self, auth: TokenAuth) {
        self.lock().auth = Some(auth);
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The scopes asked for by every token request so far.
    pub fn token_requests(&self) -> Vec<Vec<String>> {
        self.lock().token_requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn full(
    status: StatusCode,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    upstream: Arc<String>,
    me: SocketAddr,
) -> Result<Response<ProxyBody>, BoxError> {
    let method = req.method().clone();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let path = req.uri().path().to_owned();
    let header = |name: http::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = Seen {
        method: method.clone(),
        uri: uri.clone(),
        range: header(http::header::RANGE),
        auth_scheme: header(http::header::AUTHORIZATION)
            .and_then(|a| a.split(' ').next().map(str::to_owned)),
        status: 0,
        fault: None,
    };
    let record = |seen: Seen| {
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .push(seen)
    };

    if path == "/token" {
        let response = token_endpoint(&req, &state);
        seen.status = response.status().as_u16();
        record(seen);
        return Ok(response);
    }

    // the first rule that matches and has uses left
    let fault = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut hit = None;
        for (rule, count) in st.rules.iter_mut() {
            if rule.matches(&method, &uri) {
                *count += 1;
                if *count > rule.skip && *count <= rule.skip + rule.times {
                    hit = Some(rule.fault.clone());
                    break;
                }
            }
        }
        hit
    };
    seen.fault = fault.as_ref().map(|f| format!("{f:?}"));

    // tokens: checked before any fault but RevokeTokens
    let challenge = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if st.auth.is_some() && path.starts_with("/v2/") {
            let needed = needed_scopes(&method, &path, &uri);
            if matches!(fault, Some(Fault::RevokeTokens)) {
                st.tokens.clear();
            }
            let bearer = header(http::header::AUTHORIZATION)
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned));
            let granted = bearer.and_then(|t| {
                st.tokens
                    .iter()
                    .find(|(v, _)| *v == t)
                    .map(|(_, s)| s.clone())
            });
            let ok = granted.is_some_and(|g| needed.iter().all(|n| g.contains(n)));
            (!ok).then(|| challenge_for(me, &needed))
        } else {
            None
        }
    };
    if let Some(www) = challenge {
        let r = full(
            StatusCode::UNAUTHORIZED,
            &[
                ("WWW-Authenticate", www),
                ("Content-Type", "application/json".to_owned()),
            ],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        seen.status = 401;
        record(seen);
        return Ok(r);
    }

    match &fault {
        Some(Fault::Respond {
            status,
            headers,
            body,
        }) => {
            let headers: Vec<(&str, String)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let mut all = headers;
            all.push(("Content-Type", "application/json".to_owned()));
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            seen.status = status.as_u16();
            record(seen);
            return Ok(full(status, &all, body.clone()));
        }
        Some(Fault::Drop) => {
            record(seen);
            return Err("fault: connection dropped".into());
        }
        _ => {}
    }

    // forward
    let (mut parts, body) = req.into_parts();
    parts.headers.remove(http::header::AUTHORIZATION);
    let forwarded = Request::from_parts(parts, body);
    let response = match forward(forwarded, &upstream).await {
        Ok(r) => r,
        Err(e) => {
            record(seen);
            return Err(e);
        }
    };
    seen.status = response.status().as_u16();
    record(seen);
    let (parts, body) = response.into_parts();
    let body: ProxyBody = match fault {
        Some(Fault::DropBodyAfter(n)) => {
            let mut left = n;
            let frames = BodyStream::new(body).map(|f| f.map_err(BoxError::from));
            let cut = frames
                .scan(false, move |done, frame| {
                    if *done {
                        return std::future::ready(None);
                    }
                    let out = match frame {
                        Ok(frame) => match frame.into_data() {
                            Ok(data) if (data.len() as u64) < left => {
                                left -= data.len() as u64;
                                Ok(Frame::data(data))
                            }
                            Ok(data) => {
                                *done = true;
                                let head = data.slice(..left as usize);
                                left = 0;
                                // the part that fits, then the error that aborts the connection
                                return std::future::ready(Some(futures_util::stream::iter(vec![
                                    Ok(Frame::data(head)),
                                    Err(BoxError::from("fault: body cut")),
                                ])));
                            }
                            Err(frame) => Ok(frame),
                        },
                        Err(e) => Err(e),
                    };
                    std::future::ready(Some(futures_util::stream::iter(vec![out])))
                })
                .flatten();
            BodyExt::boxed(StreamBody::new(cut))
        }
        Some(Fault::CorruptBody) => {
            let mut flipped = false;
            body.map_frame(move |frame| match frame.into_data() {
                Ok(data) if !flipped && !data.is_empty() => {
                    flipped = true;
                    let mut v = data.to_vec();
                    v[0] ^= 0xff;
                    Frame::data(Bytes::from(v))
                }
                Ok(data) => Frame::data(data),
                Err(frame) => frame,
            })
            .map_err(BoxError::from)
            .boxed()
        }
        _ => body.map_err(BoxError::from).boxed(),
    };
    Ok(Response::from_parts(parts, body))
}

/// Send `req` to `upstream` over a new connection.
async fn forward(req: Request<Incoming>, upstream: &str) -> Result<Response<Incoming>, BoxError> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

/// The scopes a registry request needs: `repository:NAME:pull` to read, `…:push` to write,
/// and `pull` on a mount's source.
fn needed_scopes(method: &Method, path: &str, uri: &str) -> Vec<String> {
    let rest = &path["/v2/".len()..];
    let name = ["/blobs/", "/manifests/", "/tags/"]
        .iter()
        .find_map(|k| rest.find(k).map(|i| &rest[..i]));
    let Some(name) = name else { return Vec::new() };
    let action = if matches!(*method, Method::GET | Method::HEAD) {
        "pull"
    } else {
        "push"
    };
    let mut needed = vec![format!("repository:{name}:{action}")];
    if let Some(q) = uri.split_once('?').map(|(_, q)| q) {
        for pair in q.split('&') {
            if let Some(from) = pair.strip_prefix("from=") {
                let from = from.replace("%2F", "/").replace("%2f", "/");
                needed.push(format!("repository:{from}:pull"));
            }
        }
    }
    needed
}

fn challenge_for(me: SocketAddr, needed: &[String]) -> String {
    let scope = needed
        .first()
        .map(|s| {
            // the challenge names the repository with the actions of this request
            let (repo, action) = s.rsplit_once(':').unwrap_or((s, ""));
            let actions = if action == "push" {
                "pull,push"
            } else {
                action
            };
            format!(",scope=\"{repo}:{actions}\"")
        })
        .unwrap_or_default();
    format!("Bearer realm=\"http://{me}/token\",service=\"fault-proxy\"{scope}")
}

/// `GET /token?service=…&scope=…`: a token granting what was asked (after Basic auth when
/// configured).
fn token_endpoint(req: &Request<Incoming>, state: &Arc<Mutex<State>>) -> Response<ProxyBody> {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    let Some(auth) = st.auth.clone() else {
        return full(StatusCode::NOT_FOUND, &[], "no token realm");
    };
    if let Some((user, pass)) = &auth.basic {
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        let got = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if got != Some(want.as_str()) {
            return full(
                StatusCode::UNAUTHORIZED,
                &[],
                r#"{"details":"incorrect username or password"}"#,
            );
        }
    }
    let query = req.uri().query().unwrap_or("");
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("scope=") {
            scopes.push(percent_decode(v));
        }
    }
    let mut granted = BTreeSet::new();
    for s in &scopes {
        if let Some((repo, actions)) = s.rsplit_once(':') {
            for a in actions.split(',') {
                granted.insert(format!("{repo}:{a}"));
            }
        }
    }
    st.next_token += 1;
    let token = format!("token-{}", st.next_token);
    st.tokens.push((token.clone(), granted));
    st.token_requests.push(scopes);
    let mut answer = serde_json::json!({ "token": token });
    if auth.expires_in > 0 {
        answer["expires_in"] = serde_json::json!(auth.expires_in);
    }
    full(
        StatusCode::OK,
        &[("Content-Type", "application/json".to_owned())],
        answer.to_string(),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_of_requests() {
        assert_eq!(
            needed_scopes(&Method::GET, "/v2/a/b/manifests/t", "/v2/a/b/manifests/t"),
            ["repository:a/b:pull"]
        );
        assert_eq!(
            needed_scopes(
                &Method::POST,
                "/v2/app/blobs/uploads/",
                "/v2/app/blobs/uploads/?mount=sha256%3Ax&from=library%2Fnode"
            ),
            ["repository:app:push", "repository:library/node:pull"]
        );
        assert!(needed_scopes(&Method::GET, "/v2/", "/v2/").is_empty());
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull%2Cpush"),
            "repository:a/b:pull,push"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
