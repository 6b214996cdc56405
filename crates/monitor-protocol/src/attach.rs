//! The attach socket: a unix stream socket a container's monitor listens
//! on, beside the container's files, for clients (the daemon, serving CRI
//! Attach) that join the container's stdio.
//!
//! Every frame, both ways, is `[kind: u8][len: u32 big-endian][payload]`,
//! the payload at most [`MAX_FRAME`] bytes (a longer length is a protocol
//! error: the peer is not speaking this protocol, and buffering it would
//! let one client make the monitor allocate without bound).
//!
//! Client to monitor: [`STDIN`] (bytes for the container's stdin),
//! [`STDIN_EOF`] (empty: this client's stdin ended), [`RESIZE`]
//! ([`resize_payload`]: width, height). Monitor to client: [`STDOUT`],
//! [`STDERR`] (the container's raw output, not CRI-log formatted), then,
//! once the container has exited and its output is drained, [`EXIT`]
//! (i32 big-endian exit code), after which the monitor closes the socket.
//!
//! The socket is [`socket_path`]: `attach` in the directory that holds
//! the job's pid file. That path may exceed the 108 bytes of `sun_path`;
//! both sides then open the directory (`O_PATH`) and use
//! [`proc_fd_path`] instead, as conmon does.

use std::path::{Path, PathBuf};

/// The socket's file name in the container's directory.
pub const SOCKET_NAME: &str = "attach";

/// The largest payload of one frame.
pub const MAX_FRAME: usize = 64 * 1024;

/// Bytes of a frame's header: kind and length.
pub const HEADER_LEN: usize = 5;

// Client to monitor.
/// Bytes for the container's stdin.
pub const STDIN: u8 = 0;
/// Empty: this client's stdin ended (with `stdin_once`, the container's
/// stdin is closed).
pub const STDIN_EOF: u8 = 1;
/// The terminal's size: [`resize_payload`].
pub const RESIZE: u8 = 2;

// Monitor to client.
/// The container's stdout (with a terminal: all its output).
pub const STDOUT: u8 = 1;
/// The container's stderr.
pub const STDERR: u8 = 2;
/// The container's exit code, i32 big-endian; the last frame.
pub const EXIT: u8 = 3;

/// `attach` in the directory holding the job's pid file
/// (`pid_file.parent()`).
pub fn socket_path(container_dir: &Path) -> PathBuf {
    container_dir.join(SOCKET_NAME)
}

/// The socket reached through an open (`O_PATH`) descriptor of its
/// directory: `/proc/self/fd/<dir_fd>/attach`, short whatever the
/// directory's own path, for `bind` and `connect` alike.
pub fn proc_fd_path(dir_fd: i32) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{dir_fd}/{SOCKET_NAME}"))
}

/// Appends one frame to `out`. A payload longer than [`MAX_FRAME`] is the
/// caller's bug; split it first (see [`encode_chunked`]).
pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_FRAME, "frame payload too long");
    out.reserve(HEADER_LEN + payload.len());
    out.push(kind);
    // MAX_FRAME fits a u32; saturating keeps release builds from wrapping.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends `payload` as as many frames of `kind` as it takes (none for an
/// empty payload), each at most [`MAX_FRAME`].
pub fn encode_chunked(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    for chunk in payload.chunks(MAX_FRAME) {
        encode(kind, chunk, out);
    }
}

/// A [`RESIZE`] frame's payload.
pub fn resize_payload(width: u16, height: u16) -> [u8; 4] {
    let [w0, w1] = width.to_be_bytes();
    let [h0, h1] = height.to_be_bytes();
    [w0, w1, h0, h1]
}

/// A [`RESIZE`] payload as (width, height); None unless exactly 4 bytes.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [w0, w1, h0, h1] => Some((
            u16::from_be_bytes([*w0, *w1]),
            u16::from_be_bytes([*h0, *h1]),
        )),
        _ => None,
    }
}

/// An [`EXIT`] payload as the exit code; None unless exactly 4 bytes.
pub fn parse_exit(payload: &[u8]) -> Option<i32> {
    <[u8; 4]>::try_from(payload).ok().map(i32::from_be_bytes)
}

/// A stream that does not follow the framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// A frame's length exceeds [`MAX_FRAME`].
    FrameTooLarge(u32),
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::FrameTooLarge(len) => {
                write!(f, "attach frame of {len} bytes exceeds {MAX_FRAME}")
            }
        }
    }
}

impl std::error::Error for AttachError {}

/// Frames out of a byte stream that arrives in arbitrary pieces.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: consumed bytes are dropped
    /// lazily, in `feed`, so that many small frames in one read cost one
    /// move, not one each.
    pos: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, or None until more bytes are fed. After an
    /// error the stream cannot be resynchronised: give up on it.
    // Not an Iterator: "no frame yet" (more bytes may come) and "the
    // stream is broken" must stay apart, which Option<Result> blurs.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>, AttachError> {
        let rest = &self.buf[self.pos..];
        let Some(&[kind, l0, l1, l2, l3]) = rest.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        if n > MAX_FRAME {
            return Err(AttachError::FrameTooLarge(len));
        }
        let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + n) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.pos += HEADER_LEN + n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some((kind, payload)))
    }

    /// Bytes fed but not yet returned as frames (a partial frame).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(kind, payload, &mut out);
        out
    }

    #[test]
    fn encoding_table() {
        let cases: &[(u8, &[u8], &[u8])] = &[
            (STDIN, b"hi", b"\x00\x00\x00\x00\x02hi"),
            (STDIN_EOF, b"", b"\x01\x00\x00\x00\x00"),
            (
                RESIZE,
                &[0, 100, 0, 40],
                b"\x02\x00\x00\x00\x04\x00\x64\x00\x28",
            ),
            (
                EXIT,
                &[0xff, 0xff, 0xff, 0xff],
                b"\x03\x00\x00\x00\x04\xff\xff\xff\xff",
            ),
        ];
        for (kind, payload, want) in cases {
            assert_eq!(frame(*kind, payload), *want, "kind {kind}");
        }
        let big = vec![7u8; MAX_FRAME];
        assert_eq!(frame(STDOUT, &big)[..HEADER_LEN], [1, 0, 1, 0, 0]);
    }

    #[test]
    fn chunked_encoding_splits_at_max_frame() {
        let cases: &[(usize, &[usize])] = &[
            (0, &[]),
            (1, &[1]),
            (MAX_FRAME, &[MAX_FRAME]),
            (MAX_FRAME + 1, &[MAX_FRAME, 1]),
            (2 * MAX_FRAME + 5, &[MAX_FRAME, MAX_FRAME, 5]),
        ];
        for (len, want) in cases {
            let data: Vec<u8> = (0..*len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode_chunked(STDOUT, &data, &mut out);
            let mut d = Decoder::new();
            d.feed(&out);
            let mut lens = Vec::new();
            let mut back = Vec::new();
            while let Some((kind, p)) = d.next().unwrap() {
                assert_eq!(kind, STDOUT);
                lens.push(p.len());
                back.extend(p);
            }
            assert_eq!(lens, *want, "{len}");
            assert_eq!(back, data);
        }
    }

    #[test]
    fn decoding_table() {
        type Want<'a> = Result<&'a [(u8, &'a [u8])], AttachError>;
        let over = (MAX_FRAME as u32 + 1).to_be_bytes();
        let mut too_large = vec![STDIN];
        too_large.extend(over);
        let cases: &[(&[u8], Want)] = &[
            (b"", Ok(&[])),
            (b"\x00\x00\x00", Ok(&[])),
            (b"\x00\x00\x00\x00\x03ab", Ok(&[])),
            (b"\x00\x00\x00\x00\x02ab", Ok(&[(STDIN, b"ab")])),
            (
                b"\x00\x00\x00\x00\x01a\x01\x00\x00\x00\x00\x02\x00\x00\x00\x04\x00\x50\x00\x18",
                Ok(&[(STDIN, b"a"), (STDIN_EOF, b""), (RESIZE, &[0, 80, 0, 24])]),
            ),
            // A whole frame, then a partial one: the first comes out.
            (b"\x01\x00\x00\x00\x00\x00\x00", Ok(&[(STDIN_EOF, b"")])),
            (
                &too_large,
                Err(AttachError::FrameTooLarge(MAX_FRAME as u32 + 1)),
            ),
            (
                b"\x00\xff\xff\xff\xff",
                Err(AttachError::FrameTooLarge(u32::MAX)),
            ),
        ];
        for (input, want) in cases {
            // Whole, and a byte at a time: the same frames either way.
            for piece in [input.len().max(1), 1] {
                let mut d = Decoder::new();
                let mut got = Vec::new();
                let mut err = None;
                for p in input.chunks(piece) {
                    d.feed(p);
                    loop {
                        match d.next() {
                            Ok(Some(f)) => got.push(f),
                            Ok(None) => break,
                            Err(e) => {
                                err = Some(e);
                                break;
                            }
                        }
                    }
                    if err.is_some() {
                        break;
                    }
                }
                match want {
                    Ok(frames) => {
                        assert_eq!(err, None, "{input:?}");
                        let want: Vec<(u8, Vec<u8>)> =
                            frames.iter().map(|(k, p)| (*k, p.to_vec())).collect();
                        assert_eq!(got, want, "{input:?} by {piece}");
                    }
                    Err(e) => assert_eq!(err.as_ref(), Some(e), "{input:?} by {piece}"),
                }
            }
        }
    }

    #[test]
    fn decoder_keeps_partial_frames_across_feeds() {
        let mut d = Decoder::new();
        let mut stream = frame(STDIN, b"hello");
        stream.extend(frame(STDIN, b"world"));
        d.feed(&stream[..8]);
        assert_eq!(d.next().unwrap(), None);
        assert_eq!(d.buffered(), 8);
        d.feed(&stream[8..12]);
        assert_eq!(d.next().unwrap(), Some((STDIN, b"hello".to_vec())));
        assert_eq!(d.next().unwrap(), None);
        assert_eq!(d.buffered(), 2);
        d.feed(&stream[12..]);
        assert_eq!(d.next().unwrap(), Some((STDIN, b"world".to_vec())));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn resize_and_exit_payloads() {
        let cases: &[(u16, u16)] = &[(0, 0), (100, 40), (80, 24), (u16::MAX, 1)];
        for (w, h) in cases {
            assert_eq!(parse_resize(&resize_payload(*w, *h)), Some((*w, *h)));
        }
        assert_eq!(resize_payload(100, 40), [0, 100, 0, 40]);
        let bad: &[&[u8]] = &[b"", b"\x00\x64\x00", b"\x00\x64\x00\x28\x00"];
        for p in bad {
            assert_eq!(parse_resize(p), None, "{p:?}");
        }
        let exits: &[(&[u8], Option<i32>)] = &[
            (&[0, 0, 0, 0], Some(0)),
            (&[0, 0, 0, 137], Some(137)),
            (&[0xff, 0xff, 0xff, 0xff], Some(-1)),
            (&[0, 0, 0], None),
        ];
        for (p, want) in exits {
            assert_eq!(parse_exit(p), *want, "{p:?}");
        }
    }

    #[test]
    fn paths() {
        let dir = Path::new("/run/crius/containers/abc");
        assert_eq!(
            socket_path(dir),
            Path::new("/run/crius/containers/abc/attach")
        );
        assert_eq!(proc_fd_path(7), Path::new("/proc/self/fd/7/attach"));
        assert!(AttachError::FrameTooLarge(70000)
            .to_string()
            .contains("70000"));
    }
}
