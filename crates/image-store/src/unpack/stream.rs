//! The uncompressed tar stream of a layer: compression detected by magic
//! bytes (so a wrong media type cannot matter), and a producer thread that
//! decompresses, counts and hashes it while the extractor writes files.
//!
//! The byte caps of [`Limits`] are enforced here, as the stream is
//! decompressed: a bomb stops within one chunk of its cap, before its
//! content is written anywhere.

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::{Limits, UnpackError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(super) fn detect_compression(magic: &[u8]) -> Compression {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (magic.len() >= 4 && magic[0] & 0xf0 == 0x50 && magic[1..4] == [0x2a, 0x4d, 0x18])
    {
        // A zstd frame, or a skippable frame (zstd:chunked puts metadata in those).
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Wraps `reader` in the decompressor its first bytes call for.
pub(super) fn decompress<'a, R: Read + 'a>(mut reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match reader.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let prefixed = io::Cursor::new(magic[..n].to_vec()).chain(reader);
    Ok(match detect_compression(&magic[..n]) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(prefixed)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(prefixed)?),
        Compression::None => Box::new(prefixed),
    })
}

/// Size of the chunks the decompress-and-hash thread hands to the extractor.
const PIPE_CHUNK: usize = 1 << 20;

/// Reads the chunks the decompress-and-hash thread produces. Decompressing
/// and hashing run on their own thread so they overlap with writing files:
/// on two cores that is most of the difference to GNU tar.
pub(super) struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer finished (end of stream).
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decompresses `reader`, hashes the uncompressed bytes and sends them on in
/// chunks; returns the sha256 of everything sent.
fn produce<R: Read>(reader: R, tx: SyncSender<io::Result<Vec<u8>>>, limits: &Limits) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut stream = match decompress(reader) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(e));
            return hasher.finalize().into();
        }
    };
    loop {
        let mut chunk = vec![0u8; PIPE_CHUNK];
        let mut filled = 0;
        let result = loop {
            match stream.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == chunk.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        chunk.truncate(filled);
        // Counted as it is decompressed, before anything is written: a bomb
        // stops within one chunk of its cap.
        total += filled as u64;
        let image_over = limits.image.as_ref().filter(|b| {
            b.bytes.fetch_add(filled as u64, Ordering::Relaxed) + filled as u64 > b.max_bytes
        });
        let over = if total > limits.layer_bytes {
            Some(("uncompressed size", limits.layer_bytes, "max_layer_bytes"))
        } else {
            image_over.map(|b| ("image's uncompressed size", b.max_bytes, "max_image_bytes"))
        };
        if let Some((what, limit, key)) = over {
            let _ = tx.send(Err(io::Error::other(UnpackError::TooLarge {
                what,
                limit,
                key,
            })));
            break;
        }
        hasher.update(&chunk);
        let last = filled == 0;
        if filled > 0 && tx.send(Ok(chunk)).is_err() {
            break; // the extractor stopped (an error): stop reading
        }
        if let Err(e) = result {
            let _ = tx.send(Err(e));
            break;
        }
        if last || filled < PIPE_CHUNK {
            break;
        }
    }
    hasher.finalize().into()
}

/// Runs `consume` on the uncompressed stream of `reader` while a producer
/// thread decompresses and hashes it. Returns what `consume` returned and
/// the sha256 of everything the producer sent (an `Err` if it panicked).
///
/// When `consume` stops early (an error), its reader and the channel go
/// with it: the producer's next send fails and it stops reading.
pub(super) fn pipe<R: Read + Send, T>(
    reader: R,
    limits: &Limits,
    consume: impl FnOnce(ChannelReader) -> T,
) -> (T, std::thread::Result<[u8; 32]>) {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let producer = scope.spawn(move || produce(reader, tx, limits));
        let consumed = consume(ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
        });
        (consumed, producer.join())
    })
}
