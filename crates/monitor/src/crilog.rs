//! The CRI container log format kubelet reads:
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`, where `F`
//! ends a line and `P` is a piece of a line longer than the maximum (or cut
//! off by the end of the stream).

use std::io::Write;

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

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 with nanoseconds, UTC: `2026-11-26T10:38:15.123456789Z`.
pub fn rfc3339_nano(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

pub fn now_rfc3339_nano() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_nano(now.as_secs() as i64, now.subsec_nanos())
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
    fn timestamps() {
        assert_eq!(rfc3339_nano(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nano(1_795_689_495, 123_456_789),
            "2026-11-26T10:38:15.123456789Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400, 5),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(rfc3339_nano(-1, 0), "1969-12-31T23:59:59.000000000Z");
    }

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
