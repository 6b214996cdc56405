//! Single-use tokens: a streaming URL names a request the RPC already
//! validated; the token is random, expires, and is gone once used.

use crate::Request;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Outstanding tokens at most (kubelet's cache holds as many); beyond it
/// new requests are refused until some expire or are used.
pub const MAX_TOKENS: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("too many streaming requests outstanding ({MAX_TOKENS}); try again shortly")]
    Full,
    #[error("no randomness for a token: {0}")]
    Random(String),
}

pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Request, Instant)>>,
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        TokenCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `req` under a fresh token.
    pub fn insert(&self, req: Request) -> Result<String, TokenError> {
        let token = random_token()?;
        let now = Instant::now();
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|_, (_, exp)| *exp > now);
        if e.len() >= MAX_TOKENS {
            return Err(TokenError::Full);
        }
        e.insert(token.clone(), (req, now + self.ttl));
        Ok(token)
    }

    /// Takes the request a token names: once, and only before it expires.
    pub fn consume(&self, token: &str) -> Option<Request> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match e.remove(token) {
            Some((req, exp)) if exp > Instant::now() => Some(req),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// 128 random bits, URL-safe.
fn random_token() -> Result<String, TokenError> {
    use base64::Engine;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortForwardParams, Request};

    fn req() -> Request {
        Request::PortForward(PortForwardParams {
            pod_id: "p".into(),
            ports: vec![80],
        })
    }

    #[test]
    fn a_token_is_used_once() {
        let c = TokenCache::new(Duration::from_secs(60));
        let t = c.insert(req()).unwrap();
        assert_eq!(t.len(), 22);
        assert_eq!(c.consume(&t), Some(req()));
        assert_eq!(c.consume(&t), None);
        assert_eq!(c.consume("made-up"), None);
    }

    #[test]
    fn a_token_expires() {
        let c = TokenCache::new(Duration::from_millis(20));
        let t = c.insert(req()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.consume(&t), None);
    }

    #[test]
    fn tokens_are_distinct_and_bounded() {
        let c = TokenCache::new(Duration::from_secs(60));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..MAX_TOKENS {
            assert!(seen.insert(c.insert(req()).unwrap()));
        }
        assert_eq!(c.insert(req()), Err(TokenError::Full));
    }
}
