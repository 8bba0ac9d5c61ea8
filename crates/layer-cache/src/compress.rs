//! Compression: the formats, sniffing, a parallel deterministic gzip writer and the
//! compressed-output sinks used by the tar writer.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufWriter, Read, Write};
use std::str::FromStr;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use flate2::{Compress, FlushCompress, Status};
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result, sys};

/// A layer's compression.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (the default for OCI and Docker layers).
    #[default]
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The default level: 6 for gzip (as gzip, pigz and Go), 3 for zstd.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 6,
            Compression::Zstd => 3,
        }
    }

    /// Detects the compression from the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Compression> {
        match s {
            "none" | "uncompressed" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(Error::InvalidArgument {
                reason: format!("unknown compression {s:?} (expected gzip, zstd or none)"),
            }),
        }
    }
}

/// Wraps `input` in the decompressor its first bytes call for.
pub(crate) fn decoder<'a, R: Read + 'a>(
    mut input: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = head[..got].to_vec();
    let kind = Compression::sniff(&head);
    let joined = io::BufReader::with_capacity(256 << 10, io::Cursor::new(head).chain(input));
    Ok((
        kind,
        match kind {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(joined)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(joined)?),
            Compression::None => Box::new(joined),
        },
    ))
}

// ---------------------------------------------------------------------------------------
// Parallel gzip, byte-identical for any number of threads.
//
// The input is cut into fixed-size blocks. Each block is deflated on its own (raw deflate,
// the previous 32 KiB as preset dictionary, ended by a sync flush; the last block ends the
// stream), exactly as pigz does. Block boundaries and dictionaries depend only on the input,
// so the output does not depend on how many workers ran or in which order they finished.

/// Uncompressed bytes per gzip block (pigz's default).
pub(crate) const GZIP_BLOCK: usize = 128 << 10;
const DICT: usize = 32 << 10;

struct Job {
    index: u64,
    data: Arc<Vec<u8>>,
    prev: Option<Arc<Vec<u8>>>,
    last: bool,
}

struct Done {
    index: u64,
    deflated: Result<Vec<u8>>,
    crc: u32,
    len: u64,
}

/// Deflates one block with a fresh compressor. Not `Compress::reset`: zlib-rs (like
/// zlib-ng) keeps the old window and `prev` table across a reset, and stale window bytes
/// can change which of two equally long matches is chosen, so the output would depend on
/// which block the worker compressed before. A new compressor's window is zeroed.
fn deflate_block(level: i32, job: &Job, out: &mut Vec<u8>) -> Result<()> {
    let c = &mut Compress::new(flate2::Compression::new(level as u32), false);
    if let Some(prev) = &job.prev {
        c.set_dictionary(&prev[prev.len().saturating_sub(DICT)..])
            .map_err(|e| sys("deflateSetDictionary")(io::Error::other(e)))?;
    }
    let input = &job.data[..];
    out.clear();
    out.reserve(input.len() + input.len() / 8 + 128);
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        let status = c
            .compress_vec(&input[consumed..], out, flush)
            .map_err(|e| sys("deflate")(io::Error::other(e)))?;
        let consumed = (c.total_in() - start) as usize;
        let finished = if job.last {
            status == Status::StreamEnd
        } else {
            consumed == input.len() && out.len() < out.capacity()
        };
        if finished {
            return Ok(());
        }
        out.reserve(64 << 10);
    }
}

/// Where the tar writer sends its fixed-size blocks.
pub(crate) trait BlockSink {
    /// One block of uncompressed tar stream.
    fn push(&mut self, block: Vec<u8>) -> Result<()>;
}

/// The compressed side of the pipeline: gzip (own workers), zstd (libzstd workers) or none.
pub(crate) enum Compressor<'scope, W: Write + Send> {
    Plain(HashingWriter<BufWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, HashingWriter<BufWriter<W>>>),
    Gzip(GzipPipeline<'scope, W>),
}

pub(crate) struct GzipPipeline<'scope, W: Write + Send> {
    jobs: Option<SyncSender<Job>>,
    pending: Option<Arc<Vec<u8>>>,
    prev: Option<Arc<Vec<u8>>>,
    next_index: u64,
    workers: Vec<ScopedJoinHandle<'scope, ()>>,
    /// Taken when it has stopped (joined to report its error).
    collector: Option<ScopedJoinHandle<'scope, Result<(W, Digest, u64)>>>,
}

impl<'scope, W: Write + Send + 'scope> Compressor<'scope, W> {
    /// Starts the compressor; gzip workers and the writer thread live in `scope`.
    pub(crate) fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        kind: Compression,
        level: Option<i32>,
        threads: usize,
        out: W,
    ) -> Result<Self> {
        let level = level.unwrap_or(kind.default_level());
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
        Ok(match kind {
            Compression::None => Compressor::Plain(sink),
            Compression::Zstd => {
                let mut enc =
                    zstd::stream::write::Encoder::new(sink, level).map_err(sys("zstd init"))?;
                // Always multi-threaded (>= 1 worker): zstd's multi-threaded output is the
                // same for any number of workers, unlike single-threaded mode's.
                enc.multithread(threads.max(1) as u32)
                    .map_err(sys("zstd workers"))?;
                enc.include_checksum(true).map_err(sys("zstd checksum"))?;
                Compressor::Zstd(enc)
            }
            Compression::Gzip => {
                if !(0..=9).contains(&level) {
                    return Err(Error::InvalidArgument {
                        reason: format!("gzip level {level} is not in 0..=9"),
                    });
                }
                let threads = threads.max(1);
                let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
                let job_rx = Arc::new(Mutex::new(job_rx));
                let (done_tx, done_rx) = sync_channel::<Done>(threads * 2);
                let mut workers = Vec::new();
                for _ in 0..threads {
                    let job_rx = Arc::clone(&job_rx);
                    let done_tx = done_tx.clone();
                    workers.push(scope.spawn(move || gzip_worker(&job_rx, &done_tx, level)));
                }
                drop(done_tx);
                let collector = scope.spawn(move || gzip_collector(done_rx, sink, level));
                Compressor::Gzip(GzipPipeline {
                    jobs: Some(job_tx),
                    pending: None,
                    prev: None,
                    next_index: 0,
                    workers,
                    collector: Some(collector),
                })
            }
        })
    }

    /// Flushes everything and returns the output, its digest and its size.
    pub(crate) fn finish(self) -> Result<(W, Digest, u64)> {
        let unwrap = |hw: HashingWriter<BufWriter<W>>| -> Result<(W, Digest, u64)> {
            let (bw, digest, size) = hw.finish();
            let w = bw.into_inner().map_err(|e| {
                sys("write")(io::Error::new(e.error().kind(), e.error().to_string()))
            })?;
            Ok((w, digest, size))
        };
        match self {
            Compressor::Plain(hw) => unwrap(hw),
            Compressor::Zstd(enc) => unwrap(enc.finish().map_err(sys("zstd"))?),
            Compressor::Gzip(mut p) => {
                let last = p.pending.take().unwrap_or_default();
                p.send(last, true);
                drop(p.jobs.take());
                for w in p.workers.drain(..) {
                    let _ = w.join();
                }
                match p.collector.take() {
                    Some(c) => c.join().unwrap_or_else(|_| {
                        Err(sys("gzip writer")(io::Error::other("thread panicked")))
                    }),
                    None => Err(sys("gzip")(io::Error::other(
                        "the compressed-output writer stopped",
                    ))),
                }
            }
        }
    }
}

impl<W: Write + Send> GzipPipeline<'_, W> {
    /// Sends a block to the workers; a closed channel means the writer failed, which
    /// `finish` reports.
    fn send(&mut self, data: Arc<Vec<u8>>, last: bool) -> bool {
        let job = Job {
            index: self.next_index,
            data: Arc::clone(&data),
            prev: self.prev.take(),
            last,
        };
        self.next_index += 1;
        self.prev = Some(data);
        self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Why the writer thread stopped (its write error, such as `ENOSPC`), once a send
    /// found it gone.
    fn writer_error(&mut self) -> Error {
        drop(self.jobs.take());
        let stopped = || sys("gzip")(io::Error::other("the compressed-output writer stopped"));
        match self.collector.take().map(ScopedJoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => stopped(),
        }
    }
}

impl<W: Write + Send> BlockSink for Compressor<'_, W> {
    fn push(&mut self, block: Vec<u8>) -> Result<()> {
        match self {
            Compressor::Plain(w) => w.write_all(&block).map_err(sys("write")),
            Compressor::Zstd(w) => w.write_all(&block).map_err(sys("zstd")),
            Compressor::Gzip(p) => {
                // Hold one block back: only at `finish` do we know which block is last.
                if let Some(prev) = p.pending.replace(Arc::new(block)) {
                    if !p.send(prev, false) {
                        return Err(p.writer_error());
                    }
                }
                Ok(())
            }
        }
    }
}

fn gzip_worker(jobs: &Mutex<Receiver<Job>>, done: &SyncSender<Done>, level: i32) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let mut out = Vec::new();
        let deflated = deflate_block(level, &job, &mut out).map(|()| out);
        let d = Done {
            index: job.index,
            deflated,
            crc: crc32fast::hash(&job.data),
            len: job.data.len() as u64,
        };
        if done.send(d).is_err() {
            return;
        }
    }
}

fn gzip_collector<W: Write>(
    done: Receiver<Done>,
    mut out: HashingWriter<BufWriter<W>>,
    level: i32,
) -> Result<(W, Digest, u64)> {
    let xfl = match level {
        9 => 2,
        1 => 4,
        _ => 0,
    };
    // ID1 ID2 CM FLG MTIME(4) XFL OS(3 = Unix)
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])
        .map_err(sys("write"))?;
    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    for d in done {
        waiting.insert(d.index, d);
        while let Some(d) = waiting.remove(&next) {
            let bytes = d.deflated?;
            out.write_all(&bytes).map_err(sys("write"))?;
            crc.combine(&crc32fast::Hasher::new_with_initial_len(d.crc, d.len));
            total += d.len;
            next += 1;
        }
    }
    if !waiting.is_empty() {
        return Err(sys("gzip")(io::Error::other(
            "a compression worker stopped",
        )));
    }
    out.write_all(&crc.finalize().to_le_bytes())
        .map_err(sys("write"))?;
    out.write_all(&(total as u32).to_le_bytes())
        .map_err(sys("write"))?;
    let (bw, digest, size) = out.finish();
    let w = bw
        .into_inner()
        .map_err(|e| sys("write")(io::Error::new(e.error().kind(), e.error().to_string())))?;
    Ok((w, digest, size))
}
