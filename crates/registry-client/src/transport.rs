//! The only module that touches reqwest: it sends an `http::Request` and hands back an
//! `http::Response` whose body is read chunk by chunk.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

/// What a transport failure is boxed as.
pub(crate) type TransportError = Box<dyn std::error::Error + Send + Sync>;

/// A request body.
#[derive(Debug)]
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    /// `range` of the file at `path`, streamed; `sent` counts the bytes handed to the
    /// connection.
    File {
        path: PathBuf,
        range: Range<u64>,
        sent: Arc<AtomicU64>,
    },
}

/// A response body, read as it arrives.
pub(crate) struct ResponseBody {
    inner: Option<reqwest::Response>,
}

impl ResponseBody {
    /// The next chunk; `None` at the end. A connection that drops shows as an error.
    pub(crate) async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        match &mut self.inner {
            Some(r) => Ok(r.chunk().await?),
            None => Ok(None),
        }
    }

    /// The whole body, failing past `limit` bytes.
    pub(crate) async fn read_to_end(&mut self, limit: u64) -> Result<Bytes, ReadError> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await.map_err(ReadError::Transport)? {
            if (out.len() + c.len()) as u64 > limit {
                return Err(ReadError::TooLarge);
            }
            out.extend_from_slice(&c);
        }
        Ok(Bytes::from(out))
    }
}

/// Why reading a whole body failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Transport(TransportError),
    TooLarge,
}

/// A connection pool and its settings.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
}

impl Transport {
    pub(crate) fn new(
        user_agent: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, TransportError> {
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(connect_timeout)
            .read_timeout(read_timeout)
            // redirects are followed by `send`, which decides what credentials go along
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http })
    }

    /// Send `request`, following up to [`MAX_REDIRECTS`] redirects; any other status is a
    /// response, only a missing response is an error.
    ///
    /// Credentials (`Authorization`, `Cookie`, `Proxy-Authorization`) go only to the
    /// origin the request was made for: the first redirect that leaves it (another scheme,
    /// host or port, compared after URL normalisation) drops them for the rest of the
    /// chain. The response carries the [`FinalUrl`] it came from, so that callers can
    /// refuse to answer a foreign host's auth challenge with a registry's credentials.
    pub(crate) async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, TransportError> {
        let (parts, mut body) = request.into_parts();
        let origin = reqwest::Url::parse(&parts.uri.to_string())?;
        let (mut method, mut url, mut headers) = (parts.method, origin.clone(), parts.headers);
        let mut hops = 0;
        let response = loop {
            let response = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .body(reqwest_body(&body).await?)
                .send()
                .await?;
            let Some(next) = redirect_target(&response, &url) else {
                break response;
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(format!("more than {MAX_REDIRECTS} redirects from {origin}").into());
            }
            let next = next?;
            if !same_origin(&origin, &next) {
                strip_credentials(&mut headers);
            }
            // 303, and 301/302 after a POST, continue as a GET without a body (as browsers
            // and Go's client do); 307 and 308 repeat the method and body
            let status = response.status().as_u16();
            if status == 303 && method != http::Method::HEAD
                || matches!(status, 301 | 302) && method == http::Method::POST
            {
                method = http::Method::GET;
                body = Body::Empty;
                headers.remove(http::header::CONTENT_TYPE);
                headers.remove(http::header::CONTENT_LENGTH);
            }
            url = next;
        };
        let mut builder = http::Response::builder()
            .status(response.status())
            .version(response.version());
        if let Some(h) = builder.headers_mut() {
            h.extend(
                response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        if let Some(ext) = builder.extensions_mut() {
            ext.insert(FinalUrl(url));
        }
        Ok(builder.body(ResponseBody {
            inner: Some(response),
        })?)
    }
}

/// The most redirects one request follows (Go's client and reqwest's default allow 10).
const MAX_REDIRECTS: usize = 10;

/// The URL a response finally came from, after redirects (a response extension).
#[derive(Clone, Debug)]
pub(crate) struct FinalUrl(pub(crate) reqwest::Url);

/// Whether two URLs are the same origin: scheme, host (as the URL parser normalises it:
/// lower case, IDNA, canonical IP forms) and port (the scheme's default when absent).
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Drop every header that carries a credential.
fn strip_credentials(headers: &mut http::HeaderMap) {
    for h in [
        http::header::AUTHORIZATION,
        http::header::COOKIE,
        http::header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(h);
    }
}

/// Where a redirect response points, resolved against the URL it answered; `None` when
/// it is not a redirect that can be followed (no `Location`, or not 301/302/303/307/308).
fn redirect_target(
    response: &reqwest::Response,
    from: &reqwest::Url,
) -> Option<Result<reqwest::Url, TransportError>> {
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers().get(http::header::LOCATION)?;
    Some(
        location
            .to_str()
            .map_err(|_| {
                TransportError::from(format!("redirect from {from}: Location is not text"))
            })
            .and_then(|l| {
                from.join(l).map_err(|e| {
                    TransportError::from(format!("redirect from {from} to {l:?}: {e}"))
                })
            })
            .and_then(|u| match u.scheme() {
                "http" | "https" => Ok(u),
                other => Err(format!("redirect from {from} to a {other}: URL").into()),
            }),
    )
}

/// A reqwest body for one attempt (a redirect that repeats the body builds it again).
async fn reqwest_body(body: &Body) -> Result<reqwest::Body, TransportError> {
    Ok(match body {
        Body::Empty => reqwest::Body::from(Bytes::new()),
        Body::Bytes(b) => reqwest::Body::from(b.clone()),
        Body::File { path, range, sent } => {
            sent.store(0, Ordering::Relaxed);
            file_body(path.clone(), range.clone(), sent.clone()).await?
        }
    })
}

/// Stream `range` of a file as a request body, counting what goes out.
async fn file_body(
    path: PathBuf,
    range: Range<u64>,
    sent: Arc<AtomicU64>,
) -> Result<reqwest::Body, TransportError> {
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.seek(std::io::SeekFrom::Start(range.start))
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = file.take(range.end - range.start);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 << 10).map(move |chunk| {
        if let Ok(c) = &chunk {
            sent.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    Ok(reqwest::Body::wrap_stream(stream))
}
