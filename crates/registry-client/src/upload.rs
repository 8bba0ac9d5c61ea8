//! The blob upload state machine, without I/O: it says which request to send next (method,
//! URL, headers, which byte range of the blob goes in the body) and takes the response's
//! status and headers. The client sends the requests; auth and retries live there.
//!
//! ```text
//! Start ──POST (?mount=&from=)──▶ 201 mounted ─────────────────────────────▶ Done(Mounted)
//!   │                              202 + Location
//!   ▼
//! Session{offset} ──PUT ?digest= (monolithic, whole blob)──▶ 201 ────────────▶ Done(Uploaded)
//!   │  └─PATCH Content-Range offset-end (chunked)──▶ 202 Range: 0-N ─▶ Session{N+1}
//!   │                                                  offset == size ──▶ Commit ─PUT─▶ Done
//!   └─ connection lost / 416 ─▶ Probe ──GET Location──▶ 204 Range: 0-N ─▶ Session{N+1}
//!                                 └──▶ 404 (session gone) ─▶ Start again, without mount
//! ```

use std::ops::Range;

use http::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use http::{HeaderMap, Method, StatusCode};
use url::Url;

use crate::digest::Digest;

/// How a blob reached the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UploadOutcome {
    /// Mounted from another repository: no bytes sent.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// One request to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: Vec<(http::HeaderName, String)>,
    /// The part of the blob that is the body (`None`: empty body).
    pub(crate) body: Option<Range<u64>>,
    /// For messages: what this request does.
    pub(crate) what: &'static str,
}

/// What the machine wants next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    Send(Step),
    Done(UploadOutcome),
}

/// A response the machine did not expect: the caller turns it into an error (with the
/// registry's error body) or retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UploadError {
    /// This status at this step.
    Status(StatusCode),
    /// The registry broke the protocol.
    Protocol(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Start,
    Session { location: Url, offset: u64 },
    Probe { location: Url },
    Commit { location: Url },
    Done(UploadOutcome),
}

/// The state of one blob upload.
#[derive(Clone, Debug)]
pub(crate) struct Upload {
    base: Url,
    repository: String,
    digest: Digest,
    size: u64,
    /// `None`: one PUT with the whole blob; `Some(n)`: PATCH chunks of `n` bytes.
    chunk_size: Option<u64>,
    mount_from: Option<String>,
    state: State,
}

impl Upload {
    /// An upload of `digest` (`size` bytes) to `repository` on the registry at `base`
    /// (`http://127.0.0.1:5000/`), mounting from `mount_from` (a path on the same registry)
    /// when given.
    pub(crate) fn new(
        base: Url,
        repository: &str,
        digest: Digest,
        size: u64,
        chunk_size: Option<u64>,
        mount_from: Option<&str>,
    ) -> Self {
        Self {
            base,
            repository: repository.to_owned(),
            digest,
            size,
            chunk_size: chunk_size.filter(|&c| c > 0),
            mount_from: mount_from.map(str::to_owned),
            state: State::Start,
        }
    }

    /// Bytes the registry has confirmed.
    pub(crate) fn confirmed(&self) -> u64 {
        match &self.state {
            State::Session { offset, .. } => *offset,
            State::Commit { .. } | State::Done(UploadOutcome::Uploaded) => self.size,
            _ => 0,
        }
    }

    /// The request to send now, or the end.
    pub(crate) fn next(&self) -> Next {
        match &self.state {
            State::Start => {
                let mut url = self
                    .base
                    .join(&format!("v2/{}/blobs/uploads/", self.repository))
                    .unwrap_or_else(|_| self.base.clone());
                if let Some(from) = &self.mount_from {
                    url.query_pairs_mut()
                        .append_pair("mount", self.digest.as_str())
                        .append_pair("from", from);
                }
                Next::Send(Step {
                    method: Method::POST,
                    url,
                    headers: vec![(CONTENT_LENGTH, "0".to_owned())],
                    body: None,
                    what: if self.mount_from.is_some() {
                        "mount blob"
                    } else {
                        "start upload"
                    },
                })
            }
            State::Session { location, offset } => {
                let whole = self.chunk_size.is_none() && *offset == 0;
                if whole {
                    return Next::Send(self.put(location, Some(0..self.size)));
                }
                let chunk = self.chunk_size.unwrap_or(self.size - offset);
                let end = (offset + chunk).min(self.size);
                Next::Send(Step {
                    method: Method::PATCH,
                    url: location.clone(),
                    headers: vec![
                        (CONTENT_TYPE, "application/octet-stream".to_owned()),
                        (CONTENT_RANGE, format!("{offset}-{}", end.saturating_sub(1))),
                        (CONTENT_LENGTH, (end - offset).to_string()),
                    ],
                    body: Some(*offset..end),
                    what: "upload chunk",
                })
            }
            State::Probe { location } => Next::Send(Step {
                method: Method::GET,
                url: location.clone(),
                headers: vec![],
                body: None,
                what: "upload status",
            }),
            State::Commit { location } => Next::Send(self.put(location, None)),
            State::Done(outcome) => Next::Done(*outcome),
        }
    }

    fn put(&self, location: &Url, body: Option<Range<u64>>) -> Step {
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", self.digest.as_str());
        let len = body.as_ref().map_or(0, |r| r.end - r.start);
        let mut headers = vec![(CONTENT_LENGTH, len.to_string())];
        if body.is_some() {
            headers.push((CONTENT_TYPE, "application/octet-stream".to_owned()));
        }
        Step {
            method: Method::PUT,
            url,
            headers,
            body,
            what: if len > 0 {
                "upload blob"
            } else {
                "commit upload"
            },
        }
    }

    /// Feed the response to the request [`Upload::next`] gave.
    pub(crate) fn on_response(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<(), UploadError> {
        let state = std::mem::replace(&mut self.state, State::Start);
        let result = self.transition(state.clone(), status, headers);
        match result {
            Ok(next) => {
                self.state = next;
                Ok(())
            }
            Err(e) => {
                self.state = state;
                Err(e)
            }
        }
    }

    fn transition(
        &mut self,
        state: State,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<State, UploadError> {
        match state {
            State::Start => match status {
                StatusCode::CREATED if self.mount_from.is_some() => {
                    Ok(State::Done(UploadOutcome::Mounted))
                }
                // 202 on a mount request: the registry could not mount, upload instead
                StatusCode::ACCEPTED => {
                    let location = self.location(headers, None)?;
                    if self.size == 0 {
                        Ok(State::Commit { location })
                    } else {
                        Ok(State::Session {
                            location,
                            offset: 0,
                        })
                    }
                }
                s => Err(UploadError::Status(s)),
            },
            State::Session { location, offset } => match status {
                StatusCode::CREATED if self.chunk_size.is_none() && offset == 0 => {
                    Ok(State::Done(UploadOutcome::Uploaded))
                }
                StatusCode::ACCEPTED | StatusCode::NO_CONTENT => {
                    let location = self.location(headers, Some(&location))?;
                    let received = parse_range(headers).ok_or_else(|| {
                        UploadError::Protocol(
                            "no Range header in the answer to an upload chunk".to_owned(),
                        )
                    })?;
                    if received > self.size || received < offset {
                        return Err(UploadError::Protocol(format!(
                            "registry reports {received} bytes received of {}, after {offset} were confirmed",
                            self.size
                        )));
                    }
                    if received == self.size {
                        Ok(State::Commit { location })
                    } else {
                        Ok(State::Session {
                            location,
                            offset: received,
                        })
                    }
                }
                // the registry has a different idea of the offset: ask it
                StatusCode::RANGE_NOT_SATISFIABLE => Ok(State::Probe { location }),
                s => Err(UploadError::Status(s)),
            },
            State::Probe { location } => match status {
                StatusCode::NO_CONTENT | StatusCode::OK => {
                    let location = self.location(headers, Some(&location))?;
                    let received = parse_range(headers).unwrap_or(0).min(self.size);
                    if received == self.size && self.size > 0 {
                        Ok(State::Commit { location })
                    } else {
                        Ok(State::Session {
                            location,
                            offset: received,
                        })
                    }
                }
                StatusCode::NOT_FOUND => {
                    // the session is gone; begin again, uploading this time
                    self.mount_from = None;
                    Ok(State::Start)
                }
                s => Err(UploadError::Status(s)),
            },
            State::Commit { .. } => match status {
                StatusCode::CREATED => Ok(State::Done(UploadOutcome::Uploaded)),
                s => Err(UploadError::Status(s)),
            },
            State::Done(o) => Ok(State::Done(o)),
        }
    }

    /// The request got no (complete) response: find out what the registry has.
    pub(crate) fn on_interrupted(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::Start) {
            State::Session { location, .. }
            | State::Commit { location }
            | State::Probe { location } => State::Probe { location },
            other => other,
        };
    }

    fn location(&self, headers: &HeaderMap, previous: Option<&Url>) -> Result<Url, UploadError> {
        match headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
            Some(loc) => self
                .base
                .join(loc)
                .map_err(|e| UploadError::Protocol(format!("bad upload Location {loc:?}: {e}"))),
            None => previous.cloned().ok_or_else(|| {
                UploadError::Protocol("no Location header for the upload".to_owned())
            }),
        }
    }
}

/// Bytes received according to a `Range: 0-N` header (N inclusive). Distribution says `0-0`
/// for an empty upload as well as for one byte; we take it as empty (resending a byte is
/// harmless, skipping one is not).
fn parse_range(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(RANGE)?.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    let (start, end) = v.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if start != 0 {
        return None;
    }
    Some(if end == 0 { 0 } else { end + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("http://127.0.0.1:5000/").unwrap()
    }

    fn digest() -> Digest {
        Digest::sha256_of(b"blob")
    }

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), v.parse().unwrap());
        }
        h
    }

    fn step(u: &Upload) -> Step {
        match u.next() {
            Next::Send(s) => s,
            Next::Done(o) => panic!("done early: {o:?}"),
        }
    }

    #[test]
    fn monolithic() {
        let mut u = Upload::new(base(), "app", digest(), 100, None, None);
        let s = step(&u);
        assert_eq!(
            (s.method.clone(), s.url.as_str()),
            (Method::POST, "http://127.0.0.1:5000/v2/app/blobs/uploads/")
        );
        u.on_response(
            StatusCode::ACCEPTED,
            &headers(&[(LOCATION, "/v2/app/blobs/uploads/u1?_state=abc")]),
        )
        .unwrap();
        let s = step(&u);
        assert_eq!(s.method, Method::PUT);
        assert_eq!(
            s.url.as_str(),
            format!(
                "http://127.0.0.1:5000/v2/app/blobs/uploads/u1?_state=abc&digest=sha256%3A{}",
                digest().hex()
            )
        );
        assert_eq!(s.body, Some(0..100));
        assert!(s.headers.contains(&(CONTENT_LENGTH, "100".to_owned())));
        u.on_response(StatusCode::CREATED, &HeaderMap::new())
            .unwrap();
        assert_eq!(u.next(), Next::Done(UploadOutcome::Uploaded));
        assert_eq!(u.confirmed(), 100);
    }

    #[test]
    fn chunked_with_a_drop_and_a_probe() {
        let mut u = Upload::new(base(), "app", digest(), 25, Some(10), None);
        u.on_response(
            StatusCode::ACCEPTED,
            &headers(&[(LOCATION, "http://127.0.0.1:5000/v2/app/blobs/uploads/u")]),
        )
        .unwrap();
        let s = step(&u);
        assert_eq!(
            (s.method.clone(), s.body.clone()),
            (Method::PATCH, Some(0..10))
        );
        assert!(s.headers.contains(&(CONTENT_RANGE, "0-9".to_owned())));
        u.on_response(
            StatusCode::ACCEPTED,
            &headers(&[(LOCATION, "/v2/app/blobs/uploads/u2"), (RANGE, "0-9")]),
        )
        .unwrap();
        assert_eq!(u.confirmed(), 10);
        let s = step(&u);
        assert_eq!(s.body, Some(10..20));
        assert_eq!(s.url.path(), "/v2/app/blobs/uploads/u2");
        // the connection drops during the second chunk: probe
        u.on_interrupted();
        let s = step(&u);
        assert_eq!(
            (s.method.clone(), s.body.clone(), s.url.path()),
            (Method::GET, None, "/v2/app/blobs/uploads/u2")
        );
        u.on_response(StatusCode::NO_CONTENT, &headers(&[(RANGE, "0-14")]))
            .unwrap();
        let s = step(&u);
        assert_eq!(s.body, Some(15..25));
        assert!(s.headers.contains(&(CONTENT_RANGE, "15-24".to_owned())));
        u.on_response(StatusCode::ACCEPTED, &headers(&[(RANGE, "bytes=0-24")]))
            .unwrap();
        let s = step(&u);
        assert_eq!(
            (s.method.clone(), s.body.clone(), s.what),
            (Method::PUT, None, "commit upload")
        );
        assert!(s.url.query().unwrap().starts_with("digest=sha256"));
        u.on_response(StatusCode::CREATED, &HeaderMap::new())
            .unwrap();
        assert_eq!(u.next(), Next::Done(UploadOutcome::Uploaded));
    }

    #[test]
    fn mount_and_fallback() {
        let mut u = Upload::new(base(), "app", digest(), 4, None, Some("library/node"));
        let s = step(&u);
        assert_eq!(
            s.url.as_str(),
            format!(
                "http://127.0.0.1:5000/v2/app/blobs/uploads/?mount=sha256%3A{}&from=library%2Fnode",
                digest().hex()
            )
        );
        let mut mounted = u.clone();
        mounted
            .on_response(StatusCode::CREATED, &HeaderMap::new())
            .unwrap();
        assert_eq!(mounted.next(), Next::Done(UploadOutcome::Mounted));
        // 202: not mounted, upload into the session it opened
        u.on_response(
            StatusCode::ACCEPTED,
            &headers(&[(LOCATION, "/v2/app/blobs/uploads/x")]),
        )
        .unwrap();
        assert_eq!(step(&u).method, Method::PUT);
    }

    #[test]
    fn monolithic_resumes_with_patch_after_a_partial_put() {
        let mut u = Upload::new(base(), "app", digest(), 100, None, None);
        u.on_response(
            StatusCode::ACCEPTED,
            &headers(&[(LOCATION, "/v2/app/blobs/uploads/u")]),
        )
        .unwrap();
        u.on_interrupted();
        u.on_response(StatusCode::NO_CONTENT, &headers(&[(RANGE, "0-39")]))
            .unwrap();
        let s = step(&u);
        assert_eq!(
            (s.method.clone(), s.body.clone()),
            (Method::PATCH, Some(40..100))
        );
        // a session that is gone starts over (and a lost mount is not retried)
        let mut u = Upload::new(base(), "app", digest(), 100, None, Some("base"));
        u.on_response(
            StatusCode::ACCEPTED,
            &headers(&[(LOCATION, "/v2/app/blobs/uploads/u")]),
        )
        .unwrap();
        u.on_interrupted();
        u.on_response(StatusCode::NOT_FOUND, &HeaderMap::new())
            .unwrap();
        let s = step(&u);
        assert_eq!((s.method.clone(), s.url.query()), (Method::POST, None));
    }

    #[test]
    fn protocol_violations_and_errors() {
        let mut u = Upload::new(base(), "app", digest(), 10, Some(5), None);
        assert!(matches!(
            u.on_response(StatusCode::ACCEPTED, &HeaderMap::new()),
            Err(UploadError::Protocol(_))
        ));
        assert_eq!(
            u.on_response(StatusCode::FORBIDDEN, &HeaderMap::new()),
            Err(UploadError::Status(StatusCode::FORBIDDEN))
        );
        // the failed responses left the state alone
        assert_eq!(step(&u).method, Method::POST);
        u.on_response(StatusCode::ACCEPTED, &headers(&[(LOCATION, "/u")]))
            .unwrap();
        assert!(matches!(
            u.on_response(StatusCode::ACCEPTED, &headers(&[(RANGE, "0-99")])),
            Err(UploadError::Protocol(_))
        ));
        assert!(matches!(
            u.on_response(StatusCode::ACCEPTED, &HeaderMap::new()),
            Err(UploadError::Protocol(_))
        ));
        // 416: ask where we are
        u.on_response(StatusCode::RANGE_NOT_SATISFIABLE, &HeaderMap::new())
            .unwrap();
        assert_eq!(step(&u).method, Method::GET);
    }

    #[test]
    fn empty_blob() {
        let mut u = Upload::new(base(), "app", Digest::sha256_of(b""), 0, Some(10), None);
        u.on_response(StatusCode::ACCEPTED, &headers(&[(LOCATION, "/u")]))
            .unwrap();
        // nothing to send: commit at once
        let s = step(&u);
        assert_eq!(
            (s.method.clone(), s.body.clone(), s.what),
            (Method::PUT, None, "commit upload")
        );
        u.on_response(StatusCode::CREATED, &HeaderMap::new())
            .unwrap();
        assert_eq!(u.next(), Next::Done(UploadOutcome::Uploaded));
    }
}
