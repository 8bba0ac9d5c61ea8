//! A git smart-HTTP server on 127.0.0.1: each request is handed to the real
//! `git http-backend` (CGI), so clones and fetches speak git's own protocol. It can demand
//! an `Authorization` header (as a forge does for a private repository), and also serves
//! plain files from a directory (for HTTP tarball contexts). It records what it saw.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The requests seen: the request line and its `Authorization` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// The server; it stops accepting when dropped (the listener thread ends with the test).
pub struct GitHttpServer {
    port: u16,
    seen: Seen,
}

struct Config {
    repos: PathBuf,
    files: Option<PathBuf>,
    auth: Option<String>,
}

impl GitHttpServer {
    /// Serves the repositories under `repos` at `/git/NAME`, and the files under `files`
    /// at `/files/NAME`. With `auth`, git requests without exactly that `Authorization`
    /// header value get 401.
    pub fn start(repos: &Path, files: Option<&Path>, auth: Option<&str>) -> GitHttpServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local address").port();
        let cfg = Arc::new(Config {
            repos: repos.to_owned(),
            files: files.map(Path::to_owned),
            auth: auth.map(str::to_owned),
        });
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let cfg = cfg.clone();
                let seen = seen2.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &cfg, &seen);
                });
            }
        });
        GitHttpServer { port, seen }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far: the request line and its `Authorization` header.
    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().expect("lock").clone()
    }
}

fn respond(mut conn: &TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn serve(conn: TcpStream, cfg: &Config, seen: &Seen) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end().to_owned();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    seen.lock()
        .expect("lock")
        .push((line.clone(), header("authorization")));
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if let Some(name) = path.strip_prefix("/files/") {
        let file = cfg.files.as_ref().map(|d| d.join(name));
        match file.and_then(|f| std::fs::read(f).ok()) {
            Some(b) if !name.contains("..") => respond(&conn, "200 OK", &[], &b),
            _ => respond(&conn, "404 Not Found", &[], b"not found"),
        }
        return Ok(());
    }
    let Some(info) = path.strip_prefix("/git") else {
        respond(&conn, "404 Not Found", &[], b"not found");
        return Ok(());
    };
    if let Some(want) = &cfg.auth {
        if header("authorization").as_deref() != Some(want.as_str()) {
            let h = [("WWW-Authenticate", "Basic realm=\"git\"".to_owned())];
            respond(&conn, "401 Unauthorized", &h, b"authentication required");
            return Ok(());
        }
    }
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &cfg.repos)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", info)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(p) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(e) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    // CGI: headers, a blank line, the body.
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((at, sep)) = split else {
        respond(&conn, "500 Internal Server Error", &[], b"bad CGI output");
        return Ok(());
    };
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut hs = Vec::new();
    for l in head.lines() {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v.trim().to_owned();
            } else if !k.eq_ignore_ascii_case("content-length") {
                hs.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    let hs: Vec<(&str, String)> = hs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    respond(&conn, &status, &hs, &raw[at + sep..]);
    Ok(())
}
