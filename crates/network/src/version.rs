//! CNI spec versions (`cniVersion`): which protocol features a network's
//! declared version allows, as libcni decides them.

/// A `major.minor.patch` version; missing parts are 0, an unparsable
/// version is 0.1.0 (the first spec, which libcni assumes for a config
/// without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Version {
        let mut parts = s.trim().splitn(3, '.').map(|p| p.parse::<u32>());
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Version(a, b, c),
            (Some(Ok(a)), Some(Ok(b)), None) => Version(a, b, 0),
            _ => Version(0, 1, 0),
        }
    }

    /// DEL gets the cached result as `prevResult` (0.4.0 on).
    pub fn del_has_prev_result(self) -> bool {
        self >= Version(0, 4, 0)
    }

    /// CHECK exists (0.4.0 on).
    pub fn has_check(self) -> bool {
        self >= Version(0, 4, 0)
    }

    /// STATUS and GC exist (1.1.0 on).
    pub fn has_status_and_gc(self) -> bool {
        self >= Version(1, 1, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_features() {
        let table = [
            ("1.1.0", Version(1, 1, 0), true, true, true),
            ("1.0.0", Version(1, 0, 0), true, true, false),
            ("0.4.0", Version(0, 4, 0), true, true, false),
            ("0.3.1", Version(0, 3, 1), false, false, false),
            ("0.2", Version(0, 2, 0), false, false, false),
            ("", Version(0, 1, 0), false, false, false),
            ("garbage", Version(0, 1, 0), false, false, false),
            (" 1.1.0 ", Version(1, 1, 0), true, true, true),
        ];
        for (s, v, prev, check, status) in table {
            let got = Version::parse(s);
            assert_eq!(got, v, "{s:?}");
            assert_eq!(got.del_has_prev_result(), prev, "{s:?}");
            assert_eq!(got.has_check(), check, "{s:?}");
            assert_eq!(got.has_status_and_gc(), status, "{s:?}");
        }
    }
}
