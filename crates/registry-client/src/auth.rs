//! Registry authentication without I/O: WWW-Authenticate challenges, token scopes, the
//! token request, the token response and the cache policy for tokens.
//!
//! The flow (distribution's token spec): a request without credentials gets a 401 with a
//! challenge. `Basic` means send the user's credentials on every request. `Bearer` names a
//! token realm: ask it for a token covering the scopes the work needs (with the user's
//! credentials, an identity token, or anonymously), then send `Authorization: Bearer` until
//! the token expires. A 401 on a request that carried a token gets one fresh token and one
//! retry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};

use crate::docker_config::Credential;
use crate::reference::Repository;

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Send `Authorization: Basic` with the user's credentials.
    Basic,
    /// Get a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the registry said this request needs, if it said.
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` value; the first challenge we understand wins (Bearer over
/// Basic when both are offered).
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let mut found = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let scheme_end = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        let scheme = rest[..scheme_end].to_ascii_lowercase();
        rest = rest[scheme_end..].trim_start();
        let mut params = BTreeMap::new();
        // auth-params: name=value or name="quoted", separated by commas; a token without
        // '=' starts the next challenge
        loop {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            let Some(eq) = rest.find('=') else { break };
            let name = &rest[..eq];
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
                break;
            }
            let after = &rest[eq + 1..];
            let (val, remaining) = if let Some(q) = after.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        _ => out.push(c),
                    }
                }
                (out, &q[end.min(q.len())..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            };
            params.insert(name.to_ascii_lowercase(), val);
            rest = remaining;
        }
        match scheme.as_str() {
            "bearer" => {
                if let Some(realm) = params.remove("realm") {
                    found.push(Challenge::Bearer {
                        realm,
                        service: params.remove("service"),
                        scope: params.remove("scope"),
                    });
                }
            }
            "basic" => found.push(Challenge::Basic),
            _ => {}
        }
        if scheme.is_empty() {
            break;
        }
    }
    found
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or(found.first())
        .cloned()
}

/// What a piece of work needs from the token service: actions per repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Scopes(BTreeMap<String, BTreeSet<&'static str>>);

impl Scopes {
    /// `pull` on `repo`.
    pub(crate) fn pull(repo: &Repository) -> Self {
        let mut s = Self::default();
        s.add(repo.path(), &["pull"]);
        s
    }

    /// `pull,push` on `repo`.
    pub(crate) fn push(repo: &Repository) -> Self {
        let mut s = Self::default();
        s.add(repo.path(), &["pull", "push"]);
        s
    }

    /// `pull,push` on `repo` and `pull` on the mount source `from` (same registry).
    pub(crate) fn push_mount(repo: &Repository, from: &Repository) -> Self {
        let mut s = Self::push(repo);
        s.add(from.path(), &["pull"]);
        s
    }

    pub(crate) fn add(&mut self, repository: &str, actions: &[&'static str]) {
        self.0
            .entry(repository.to_owned())
            .or_default()
            .extend(actions.iter().copied());
    }

    /// Merge a scope string the registry sent (`repository:x:pull,push`); others are kept
    /// out (we only ask for what we understand).
    pub(crate) fn add_challenge_scope(&mut self, scope: &str) {
        for s in scope.split(' ') {
            let mut parts = s.splitn(3, ':');
            if let (Some("repository"), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            {
                for a in actions.split(',') {
                    let a: &'static str = match a {
                        "pull" => "pull",
                        "push" => "push",
                        "delete" => "delete",
                        "*" => "*",
                        _ => continue,
                    };
                    self.add(name, &[a]);
                }
            }
        }
    }

    /// Do these scopes include all of `other`'s?
    pub(crate) fn covers(&self, other: &Scopes) -> bool {
        other
            .0
            .iter()
            .all(|(repo, actions)| self.0.get(repo).is_some_and(|have| actions.is_subset(have)))
    }

    /// The scope strings, sorted: `repository:library/node:pull,push`.
    pub(crate) fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(repo, actions)| {
                let actions: Vec<&str> = actions.iter().copied().collect();
                format!("repository:{repo}:{}", actions.join(","))
            })
            .collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_strings().join(" "))
    }
}

/// The OAuth client id we send with identity-token requests.
const CLIENT_ID: &str = "rbuild";

/// The request that gets a token from `realm` for `scopes` with `credential`:
/// `GET realm?service=…&scope=…` (Basic-authenticated when there are credentials), or the
/// OAuth2 refresh-token `POST` when the credential is an identity token.
pub(crate) fn token_request(
    realm: &str,
    service: Option<&str>,
    scopes: &Scopes,
    credential: &Credential,
) -> Result<Request<Vec<u8>>, String> {
    let mut url = url::Url::parse(realm).map_err(|e| format!("bad token realm {realm:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("token realm {realm:?} is not an http(s) URL"));
    }
    match credential {
        Credential::IdentityToken { token, .. } => {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", token);
            form.append_pair("client_id", CLIENT_ID);
            if let Some(s) = service {
                form.append_pair("service", s);
            }
            let scope = scopes.to_strings().join(" ");
            if !scope.is_empty() {
                form.append_pair("scope", &scope);
            }
            Request::builder()
                .method(Method::POST)
                .uri(url.as_str())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.finish().into_bytes())
                .map_err(|e| e.to_string())
        }
        _ => {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scopes.to_strings() {
                    q.append_pair("scope", &s);
                }
                if let Credential::Basic { username, .. } = credential {
                    q.append_pair("account", username);
                }
            }
            let mut b = Request::builder().method(Method::GET).uri(url.as_str());
            if let Some(h) = basic_header(credential) {
                b = b.header(AUTHORIZATION, h);
            }
            b.body(Vec::new()).map_err(|e| e.to_string())
        }
    }
}

/// `Authorization: Basic …` for a user/password credential.
pub(crate) fn basic_header(credential: &Credential) -> Option<HeaderValue> {
    match credential {
        Credential::Basic { username, password } => {
            let enc =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut v = HeaderValue::from_str(&format!("Basic {enc}")).ok()?;
            v.set_sensitive(true);
            Some(v)
        }
        _ => None,
    }
}

/// `Authorization: Bearer …`.
pub(crate) fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Tokens live at least this long when the service gives a shorter or no `expires_in`
/// (the token spec's default).
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is not used in its last seconds, so it does not expire in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// A token and when to stop using it.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) value: String,
    pub(crate) use_until: Instant,
}

/// Parse a token service's answer received at `now`.
pub(crate) fn parse_token_response(body: &[u8], now: Instant) -> Result<Token, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("token response is not JSON: {e}"))?;
    let value = a
        .token
        .or(a.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("token response has no token")?;
    let lifetime = Duration::from_secs(a.expires_in.unwrap_or(0)).max(MIN_TOKEN_LIFETIME);
    Ok(Token {
        value,
        use_until: now + lifetime - EXPIRY_MARGIN,
    })
}

/// Tokens per registry, each with the scopes it covers. A token is reused for any request
/// whose scopes it covers, until it expires or the registry rejects it.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: BTreeMap<String, Vec<(Scopes, Token)>>,
}

impl TokenCache {
    /// A live token for `registry` covering `scopes`.
    pub(crate) fn get(&self, registry: &str, scopes: &Scopes, now: Instant) -> Option<&Token> {
        self.tokens
            .get(registry)?
            .iter()
            .find(|(s, t)| t.use_until > now && s.covers(scopes))
            .map(|(_, t)| t)
    }

    /// Remember `token` for `scopes`; expired tokens are dropped on the way.
    pub(crate) fn insert(&mut self, registry: &str, scopes: Scopes, token: Token, now: Instant) {
        let list = self.tokens.entry(registry.to_owned()).or_default();
        list.retain(|(s, t)| t.use_until > now && *s != scopes);
        list.push((scopes, token));
    }

    /// Forget a token the registry rejected.
    pub(crate) fn invalidate(&mut self, registry: &str, token: &str) {
        if let Some(list) = self.tokens.get_mut(registry) {
            list.retain(|(_, t)| t.value != token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(p: &str) -> Repository {
        Repository::new("127.0.0.1:5000", p).unwrap()
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("basic"), Some(Challenge::Basic));
        // Bearer wins over Basic; quoted commas and escapes survive
        assert_eq!(
            parse_challenge(
                r#"Basic realm="x, y", Bearer realm="http://127.0.0.1/t\"x",scope="a b""#
            ),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1/t\"x".into(),
                service: None,
                scope: Some("a b".into())
            })
        );
        assert_eq!(parse_challenge(r#"Bearer service="no realm""#), None);
        assert_eq!(parse_challenge(r#"Negotiate abc"#), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn scopes() {
        let s = Scopes::push_mount(&repo("app"), &repo("library/node"));
        assert_eq!(
            s.to_strings(),
            ["repository:app:pull,push", "repository:library/node:pull"]
        );
        assert!(s.covers(&Scopes::pull(&repo("library/node"))));
        assert!(s.covers(&Scopes::push(&repo("app"))));
        assert!(!s.covers(&Scopes::push(&repo("library/node"))));
        assert!(!Scopes::pull(&repo("app")).covers(&Scopes::push(&repo("app"))));
        let mut s = Scopes::pull(&repo("a"));
        s.add_challenge_scope("repository:a:push repository:b:pull,bogus registry:catalog:*");
        assert_eq!(s.to_string(), "repository:a:pull,push repository:b:pull");
    }

    #[test]
    fn token_requests() {
        let scopes = Scopes::push_mount(&repo("app"), &repo("base"));
        let anon = token_request(
            "http://127.0.0.1:1/token?x=1",
            Some("reg"),
            &scopes,
            &Credential::Anonymous,
        )
        .unwrap();
        assert_eq!(anon.method(), Method::GET);
        assert_eq!(
            anon.uri().to_string(),
            "http://127.0.0.1:1/token?x=1&service=reg&scope=repository%3Aapp%3Apull%2Cpush&scope=repository%3Abase%3Apull"
        );
        assert!(anon.headers().get(AUTHORIZATION).is_none());

        let basic = Credential::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let r = token_request("https://a/t", None, &scopes, &basic).unwrap();
        assert_eq!(r.headers()[AUTHORIZATION], "Basic dTpw");
        assert!(r.uri().to_string().ends_with("&account=u"));

        let idt = Credential::IdentityToken {
            username: Some("u".into()),
            token: "refresh".into(),
        };
        let r = token_request("https://a/t", Some("s"), &Scopes::pull(&repo("x")), &idt).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(
            String::from_utf8(r.body().clone()).unwrap(),
            "grant_type=refresh_token&refresh_token=refresh&client_id=rbuild&service=s&scope=repository%3Ax%3Apull"
        );
        assert!(token_request("ftp://a/t", None, &scopes, &Credential::Anonymous).is_err());
        assert!(token_request("not a url", None, &scopes, &Credential::Anonymous).is_err());
    }

    #[test]
    fn token_lifetime_and_cache() {
        let now = Instant::now();
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value, "abc");
        assert_eq!(t.use_until, now + Duration::from_secs(290));
        // no or short expires_in: the 60 s minimum
        let t2 = parse_token_response(br#"{"access_token":"def","expires_in":5}"#, now).unwrap();
        assert_eq!(t2.use_until, now + Duration::from_secs(50));
        assert!(parse_token_response(br#"{"token":""}"#, now).is_err());
        assert!(parse_token_response(b"<html>", now).is_err());

        let mut cache = TokenCache::default();
        let push = Scopes::push(&repo("app"));
        cache.insert("r", push.clone(), t, now);
        assert_eq!(
            cache
                .get("r", &Scopes::pull(&repo("app")), now)
                .unwrap()
                .value,
            "abc"
        );
        assert!(cache.get("r", &Scopes::pull(&repo("other")), now).is_none());
        assert!(cache.get("other", &push, now).is_none());
        // expired: not used
        assert!(
            cache
                .get("r", &push, now + Duration::from_secs(291))
                .is_none()
        );
        // rejected: forgotten
        cache.invalidate("r", "abc");
        assert!(cache.get("r", &push, now).is_none());
    }
}
