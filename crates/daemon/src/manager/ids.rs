//! Pod and container ids: 64 hex digits, like every CRI runtime's, and
//! unique-prefix lookup (crictl and operators type the first few digits).

/// A prefix shorter than this is refused unless it is a whole id: "a"
/// would match by luck.
pub const MIN_PREFIX: usize = 3;

/// A fresh random id (256 bits from the kernel's CSPRNG).
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    // getrandom(2) blocks only before the pool is initialised at boot.
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most the remaining length into `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    hex(&buf)
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    NotFound,
    Ambiguous(usize),
    TooShort,
}

/// Resolves an id or unique id prefix among `ids`.
pub fn lookup<'a>(ids: impl Iterator<Item = &'a str>, query: &str) -> Lookup {
    let mut found: Option<&str> = None;
    let mut n = 0;
    for id in ids {
        if id == query {
            return Lookup::Found(id.to_string());
        }
        if id.starts_with(query) {
            n += 1;
            found = Some(id);
        }
    }
    if query.len() < MIN_PREFIX {
        return if n == 0 {
            Lookup::NotFound
        } else {
            Lookup::TooShort
        };
    }
    match (n, found) {
        (1, Some(id)) => Lookup::Found(id.to_string()),
        (0, _) => Lookup::NotFound,
        _ => Lookup::Ambiguous(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn lookup_table() {
        let ids = ["abc123", "abd456", "ffff00"];
        let cases = [
            ("abc123", Lookup::Found("abc123".into())),
            ("abc", Lookup::Found("abc123".into())),
            ("ab", Lookup::TooShort),
            ("abx", Lookup::NotFound),
            ("ff", Lookup::TooShort),
            ("fff", Lookup::Found("ffff00".into())),
            ("zz", Lookup::NotFound),
            ("", Lookup::TooShort),
        ];
        for (q, want) in cases {
            assert_eq!(lookup(ids.iter().copied(), q), want, "{q}");
        }
        let ids2 = ["abc1", "abc2"];
        assert_eq!(lookup(ids2.iter().copied(), "abc"), Lookup::Ambiguous(2));
    }
}
