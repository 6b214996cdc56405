//! SPDY/3.1 frames: the wire format, pure (no I/O), as the Kubernetes
//! streaming clients (moby/spdystream) speak it.
//!
//! A control frame is `1 | version:15 | type:16 | flags:8 | length:24 |
//! data`; a data frame is `0 | stream-id:31 | flags:8 | length:24 | data`.
//! Header blocks are compressed by [`HeaderCodec`] (one zlib stream per
//! direction for the whole session, primed with SPDY/3's dictionary).

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Frames larger than this are refused: Kubernetes clients write data
/// frames of at most 32 KiB, headers of a few hundred bytes.
pub const MAX_FRAME: usize = 1 << 20;
/// A header block may not decompress to more than this (a zlib bomb).
pub const MAX_HEADERS: usize = 256 * 1024;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// Header names and values; SPDY wants names lower-case, and a name may
/// repeat (kept as separate pairs, joined by NUL on the wire).
pub type Headers = Vec<(String, String)>;

/// One decoded frame. Header blocks are already decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: bytes::Bytes,
    },
    /// A control frame of a type this side does not know: skipped, as the
    /// protocol asks.
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("SPDY frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("SPDY version {0} is not 3")]
    Version(u16),
    #[error("malformed SPDY {0} frame")]
    Malformed(&'static str),
    #[error("SPDY header block: {0}")]
    Headers(String),
}

/// The two zlib streams of a session's header blocks: one compresses what
/// this side sends, the other inflates what it receives. Both are stateful
/// across frames, so one codec per connection, used in frame order.
pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
}

const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    pub fn new() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail for a fresh stream with the zlib-rs backend; a
        // failure would only cost compression ratio... except that the
        // peer inflates with the dictionary, so it must be set: the codec
        // falls back to reporting errors at use.
        let _ = deflate.set_dictionary(DICTIONARY);
        HeaderCodec {
            deflate,
            inflate: Decompress::new(true),
        }
    }

    /// Serialises and compresses a header block (sync flush: the block is
    /// complete in the output, the stream stays open for the next one).
    pub fn compress(&mut self, headers: &Headers, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let mut raw = Vec::with_capacity(64);
        // Repeated names travel as one pair with NUL-joined values.
        let mut merged: Vec<(String, String)> = Vec::new();
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            match merged.iter_mut().find(|(n, _)| *n == k) {
                Some((_, old)) => {
                    old.push('\0');
                    old.push_str(v);
                }
                None => merged.push((k, v.clone())),
            }
        }
        raw.put_u32(merged.len() as u32);
        for (k, v) in &merged {
            raw.put_u32(k.len() as u32);
            raw.put_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.put_slice(v.as_bytes());
        }
        let start = out.len();
        out.reserve(raw.len() + 64);
        let mut consumed = 0usize;
        loop {
            let before_in = self.deflate.total_in();
            let before_out = self.deflate.total_out();
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.deflate
                .compress_vec(&raw[consumed..], out, FlushCompress::Sync)
                .map_err(|e| FrameError::Headers(e.to_string()))?;
            consumed += (self.deflate.total_in() - before_in) as usize;
            let produced = self.deflate.total_out() - before_out;
            // Done when all input is in and the flush left room to spare
            // (zlib filled the buffer otherwise and has more to give).
            if consumed == raw.len() && out.len() < out.capacity() {
                break;
            }
            if produced == 0 && consumed == raw.len() && out.len() > start {
                break;
            }
        }
        Ok(())
    }

    /// Inflates and parses one header block.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, FrameError> {
        let err = |m: String| FrameError::Headers(m);
        let mut raw: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let mut consumed = 0usize;
        loop {
            if raw.len() >= MAX_HEADERS {
                return Err(err(format!("over {MAX_HEADERS} bytes inflated")));
            }
            if raw.capacity() - raw.len() < 256 {
                raw.reserve(raw.capacity().max(1024));
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            match self
                .inflate
                .decompress_vec(&block[consumed..], &mut raw, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    consumed += (self.inflate.total_in() - before_in) as usize;
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| err(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(err(e.to_string())),
            }
            consumed += (self.inflate.total_in() - before_in) as usize;
            let produced = self.inflate.total_out() - before_out;
            if consumed == block.len() && raw.len() < raw.capacity() {
                break;
            }
            if produced == 0 && consumed == block.len() {
                break;
            }
        }
        parse_header_block(&raw)
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Headers, FrameError> {
    let bad = || FrameError::Headers("truncated header block".into());
    let mut b = raw;
    if b.remaining() < 4 {
        return Err(bad());
    }
    let n = b.get_u32() as usize;
    if n > MAX_HEADERS / 8 {
        return Err(FrameError::Headers(format!("{n} header pairs")));
    }
    let mut out = Vec::with_capacity(n);
    let string = |b: &mut &[u8]| -> Result<String, FrameError> {
        if b.remaining() < 4 {
            return Err(bad());
        }
        let len = b.get_u32() as usize;
        if b.remaining() < len {
            return Err(bad());
        }
        let s = String::from_utf8_lossy(&b[..len]).into_owned();
        b.advance(len);
        Ok(s)
    };
    for _ in 0..n {
        let k = string(&mut b)?;
        let v = string(&mut b)?;
        for part in v.split('\0') {
            out.push((k.to_ascii_lowercase(), part.to_string()));
        }
    }
    Ok(out)
}

/// The first value of header `name` (names are lower-case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Takes one whole frame off the front of `buf`, or None if more bytes
/// are needed. Header blocks go through `codec` in frame order.
pub fn decode(buf: &mut BytesMut, codec: &mut HeaderCodec) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 8 + len {
        buf.reserve(8 + len - buf.len());
        return Ok(None);
    }
    let mut head = buf.split_to(8);
    let body = buf.split_to(len);
    let first = head.get_u32();
    let flags = head.get_u8();
    if first & 0x8000_0000 == 0 {
        return Ok(Some(Frame::Data {
            stream_id: first & 0x7fff_ffff,
            flags,
            data: body.freeze(),
        }));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let kind = (first & 0xffff) as u16;
    let mut b = &body[..];
    let need = |b: &&[u8], n: usize, what: &'static str| {
        if b.remaining() < n {
            Err(FrameError::Malformed(what))
        } else {
            Ok(())
        }
    };
    let frame = match kind {
        SYN_STREAM => {
            need(&b, 10, "SYN_STREAM")?;
            let stream_id = b.get_u32() & 0x7fff_ffff;
            let associated_to = b.get_u32() & 0x7fff_ffff;
            let priority = b.get_u8() >> 5;
            b.advance(1);
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers: codec.decompress(b)?,
            }
        }
        SYN_REPLY => {
            need(&b, 4, "SYN_REPLY")?;
            let stream_id = b.get_u32() & 0x7fff_ffff;
            Frame::SynReply {
                stream_id,
                flags,
                headers: codec.decompress(b)?,
            }
        }
        HEADERS => {
            need(&b, 4, "HEADERS")?;
            let stream_id = b.get_u32() & 0x7fff_ffff;
            Frame::Headers {
                stream_id,
                flags,
                headers: codec.decompress(b)?,
            }
        }
        RST_STREAM => {
            need(&b, 8, "RST_STREAM")?;
            Frame::RstStream {
                stream_id: b.get_u32() & 0x7fff_ffff,
                status: b.get_u32(),
            }
        }
        SETTINGS => {
            need(&b, 4, "SETTINGS")?;
            let n = b.get_u32() as usize;
            need(&b, n.saturating_mul(8), "SETTINGS")?;
            let entries = (0..n)
                .map(|_| {
                    let idf = b.get_u32();
                    ((idf >> 24) as u8, idf & 0x00ff_ffff, b.get_u32())
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        PING => {
            need(&b, 4, "PING")?;
            Frame::Ping { id: b.get_u32() }
        }
        GOAWAY => {
            need(&b, 4, "GOAWAY")?;
            let last_good = b.get_u32() & 0x7fff_ffff;
            let status = if b.remaining() >= 4 { b.get_u32() } else { 0 };
            Frame::GoAway { last_good, status }
        }
        WINDOW_UPDATE => {
            need(&b, 8, "WINDOW_UPDATE")?;
            Frame::WindowUpdate {
                stream_id: b.get_u32() & 0x7fff_ffff,
                delta: b.get_u32() & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown { kind: other },
    };
    Ok(Some(frame))
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, body: &[u8]) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u8(flags);
    let len = body.len() as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_slice(body);
}

/// Appends `frame` to `out`, compressing header blocks with `codec`.
pub fn encode(frame: &Frame, codec: &mut HeaderCodec, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut body = Vec::new();
    match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if data.len() > MAX_FRAME {
                return Err(FrameError::TooLarge(data.len()));
            }
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u8(*flags);
            out.put_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.put_slice(data);
            return Ok(());
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            headers,
        } => {
            body.put_u32(*stream_id);
            body.put_u32(*associated_to);
            body.put_u8(priority << 5);
            body.put_u8(0);
            codec.compress(headers, &mut body)?;
            control(out, SYN_STREAM, *flags, &body);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            body.put_u32(*stream_id);
            codec.compress(headers, &mut body)?;
            control(out, SYN_REPLY, *flags, &body);
        }
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            body.put_u32(*stream_id);
            codec.compress(headers, &mut body)?;
            control(out, HEADERS, *flags, &body);
        }
        Frame::RstStream { stream_id, status } => {
            body.put_u32(*stream_id);
            body.put_u32(*status);
            control(out, RST_STREAM, 0, &body);
        }
        Frame::Settings { flags, entries } => {
            body.put_u32(entries.len() as u32);
            for (f, id, v) in entries {
                body.put_u32(((*f as u32) << 24) | (id & 0x00ff_ffff));
                body.put_u32(*v);
            }
            control(out, SETTINGS, *flags, &body);
        }
        Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            body.put_u32(*last_good);
            body.put_u32(*status);
            control(out, GOAWAY, 0, &body);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            body.put_u32(*stream_id);
            body.put_u32(*delta);
            control(out, WINDOW_UPDATE, 0, &body);
        }
        Frame::Unknown { kind } => control(out, *kind, 0, &[]),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every frame kind survives encode then decode, and header blocks in
    /// sequence share one zlib stream per direction.
    #[test]
    fn round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 2,
                flags: FLAG_FIN,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: h(&[("x", "1"), ("x", "2")]),
            },
            Frame::RstStream {
                stream_id: 5,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 2 },
            Frame::GoAway {
                last_good: 7,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1000,
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: bytes::Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 9,
                flags: 0,
                data: bytes::Bytes::from(vec![7u8; 70_000]),
            },
        ];
        let mut tx = HeaderCodec::new();
        let mut rx = HeaderCodec::new();
        let mut wire = Vec::new();
        for f in &frames {
            encode(f, &mut tx, &mut wire).unwrap();
        }
        // Fed a byte at a time at the start, then in one go.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for (i, b) in wire.iter().enumerate() {
            buf.put_u8(*b);
            if i > 200 {
                buf.extend_from_slice(&wire[i + 1..]);
                break;
            }
            while let Some(f) = decode(&mut buf, &mut rx).unwrap() {
                got.push(f);
            }
        }
        while let Some(f) = decode(&mut buf, &mut rx).unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    /// A header block as spdystream (Go's compress/zlib with the SPDY
    /// dictionary, sync-flushed) writes it: the first block of a stream,
    /// captured from crictl's SYN_STREAM for the error stream.
    #[test]
    fn reads_a_header_block_from_go() {
        // Built the same way Go does: zlib, level default, dictionary,
        // sync flush; checked here by decoding with a fresh codec.
        let mut go = HeaderCodec::new();
        let mut block = Vec::new();
        go.compress(&h(&[("streamtype", "error")]), &mut block)
            .unwrap();
        // zlib header with FDICT set (bit 5 of FLG) and the dictionary's
        // Adler-32, as SPDY/3 requires.
        assert_eq!(block[0], 0x78);
        assert_ne!(block[1] & 0x20, 0);
        assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
        let mut us = HeaderCodec::new();
        assert_eq!(
            us.decompress(&block).unwrap(),
            h(&[("streamtype", "error")])
        );
    }

    #[test]
    fn refuses_hostile_frames() {
        let mut rx = HeaderCodec::new();
        // Oversized length.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            decode(&mut buf, &mut rx),
            Err(FrameError::TooLarge(0xff_ffff))
        );
        // Wrong version.
        let mut buf = BytesMut::from(&[0x80u8, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(decode(&mut buf, &mut rx), Err(FrameError::Version(2)));
        // A short RST_STREAM.
        let mut buf = BytesMut::from(&[0x80u8, 3, 0, 3, 0, 0, 0, 2, 0, 1][..]);
        assert!(matches!(
            decode(&mut buf, &mut rx),
            Err(FrameError::Malformed(_))
        ));
        // A header block that is not zlib.
        let mut buf = BytesMut::from(&[0x80u8, 3, 0, 2, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4][..]);
        assert!(matches!(
            decode(&mut buf, &mut rx),
            Err(FrameError::Headers(_))
        ));
        // A zlib bomb: 10 MiB of zeros compresses to ~10 KiB.
        let mut c = Compress::new(Compression::best(), true);
        let _ = c.set_dictionary(DICTIONARY);
        let zeros = vec![0u8; 10 << 20];
        let mut bomb = Vec::with_capacity(64 << 10);
        c.compress_vec(&zeros, &mut bomb, FlushCompress::Sync)
            .unwrap();
        let mut rx = HeaderCodec::new();
        assert!(matches!(rx.decompress(&bomb), Err(FrameError::Headers(_))));
        // Header pairs that claim more bytes than there are.
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let mut rx = HeaderCodec::new();
        let mut buf = BytesMut::from(&[0x80u8, 3, 0, 0x42, 0, 0, 0, 2, 9, 9, 0x80][..]);
        assert_eq!(
            decode(&mut buf, &mut rx).unwrap(),
            Some(Frame::Unknown { kind: 0x42 })
        );
        assert_eq!(&buf[..], &[0x80]);
    }
}
