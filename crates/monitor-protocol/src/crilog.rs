//! The CRI container log format kubelet reads:
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`, where `F`
//! ends a line and `P` is a piece of a line longer than the maximum (or cut
//! off by the end of the stream). Timestamps come from [`crate::time`].

use std::io::Write;

/// The longest line written as one record (CRI-O's default, 16 KiB);
/// longer lines become `P` pieces of this size.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Splits one stream's bytes into CRI log records. Keeps the unfinished
/// line between reads; a line longer than `max_line` is written in `P`
/// pieces.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    max_line: usize,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream, max_line: usize) -> Self {
        LineSplitter {
            stream,
            max_line: max_line.max(1),
            pending: Vec::new(),
        }
    }

    fn record(
        &self,
        out: &mut impl Write,
        ts: &str,
        partial: bool,
        content: &[u8],
    ) -> std::io::Result<()> {
        out.write_all(ts.as_bytes())?;
        out.write_all(b" ")?;
        out.write_all(self.stream.name().as_bytes())?;
        out.write_all(if partial { b" P " } else { b" F " })?;
        out.write_all(content)?;
        out.write_all(b"\n")
    }

    /// Feeds bytes read from the stream; writes every complete record.
    pub fn feed(&mut self, data: &[u8], ts: &str, out: &mut impl Write) -> std::io::Result<()> {
        self.pending.extend_from_slice(data);
        loop {
            match self.pending.iter().position(|&b| b == b'\n') {
                Some(i) if i <= self.max_line => {
                    let line: Vec<u8> = self.pending.drain(..=i).collect();
                    self.record(out, ts, false, &line[..line.len() - 1])?;
                }
                _ if self.pending.len() > self.max_line => {
                    let piece: Vec<u8> = self.pending.drain(..self.max_line).collect();
                    self.record(out, ts, true, &piece)?;
                }
                _ => return Ok(()),
            }
        }
    }

    /// End of stream: whatever is left is a line cut short.
    pub fn finish(&mut self, ts: &str, out: &mut impl Write) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.record(out, ts, true, &rest)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting_table() {
        let cases: &[(&[&[u8]], usize, &str)] = &[
            (&[b"hello\n"], 100, "T stdout F hello\n"),
            (
                &[b"hel", b"lo\nwor", b"ld\n"],
                100,
                "T stdout F hello\nT stdout F world\n",
            ),
            (&[b"\n"], 100, "T stdout F \n"),
            (
                &[b"abcdefgh\n"],
                3,
                "T stdout P abc\nT stdout P def\nT stdout F gh\n",
            ),
            (&[b"abc\n"], 3, "T stdout F abc\n"),
            (&[b"no newline"], 100, "T stdout P no newline\n"),
        ];
        for (chunks, max, want) in cases {
            let mut s = LineSplitter::new(Stream::Stdout, *max);
            let mut out = Vec::new();
            for c in *chunks {
                s.feed(c, "T", &mut out).unwrap();
            }
            s.finish("T", &mut out).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                *want,
                "{chunks:?} max {max}"
            );
        }
        let mut s = LineSplitter::new(Stream::Stderr, 10);
        let mut out = Vec::new();
        s.feed(b"x\n", "T", &mut out).unwrap();
        assert_eq!(out, b"T stderr F x\n");
    }
}
