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
            // blobs are often redirected to storage; reqwest drops Authorization when a
            // redirect leaves the host
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()?;
        Ok(Self { http })
    }

    /// Send `request`; any status is a response, only a missing response is an error.
    pub(crate) async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, TransportError> {
        let (parts, body) = request.into_parts();
        let body = match body {
            Body::Empty => reqwest::Body::from(Bytes::new()),
            Body::Bytes(b) => reqwest::Body::from(b),
            Body::File { path, range, sent } => file_body(path, range, sent).await?,
        };
        let url = reqwest::Url::parse(&parts.uri.to_string())?;
        let response = self
            .http
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
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
        Ok(builder.body(ResponseBody {
            inner: Some(response),
        })?)
    }
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
