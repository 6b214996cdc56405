//! What the `error` stream carries at the end of an exec or attach.
//!
//! Protocol v4 and later (SPDY `v4.channel.k8s.io`, WebSocket v4/v5) send
//! a `metav1.Status` as JSON; client-go turns `NonZeroExitCode` with an
//! `ExitCode` cause into the exit code `kubectl exec` exits with. Older
//! protocols send the error's text, and nothing on success.

use crate::Outcome;

/// The bytes for the error stream; empty means "say nothing".
pub fn encode(outcome: &Outcome, cmd: &[String], json: bool) -> Vec<u8> {
    match (outcome, json) {
        (Outcome::Exited(0), true) => br#"{"metadata":{},"status":"Success"}"#.to_vec(),
        (Outcome::Exited(0), false) => Vec::new(),
        (Outcome::Exited(code), true) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "type": "ExitCode", "message": code.to_string()}]},
        })
        .to_string()
        .into_bytes(),
        (Outcome::Exited(code), false) => {
            format!("command terminated with non-zero exit code: exit code {code}").into_bytes()
        }
        (Outcome::Failed(msg), true) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
        })
        .to_string()
        .into_bytes(),
        (Outcome::Failed(msg), false) => msg.clone().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&Outcome::Exited(3), &cmd, true)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["type"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: serde_json::Value =
            serde_json::from_slice(&encode(&Outcome::Exited(0), &cmd, true)).unwrap();
        assert_eq!(v["status"], "Success");
        assert!(encode(&Outcome::Exited(0), &cmd, false).is_empty());
        let v: serde_json::Value = serde_json::from_slice(&encode(
            &Outcome::Failed("no such container".into()),
            &cmd,
            true,
        ))
        .unwrap();
        assert_eq!(v["message"], "no such container");
        assert_eq!(
            encode(&Outcome::Failed("x".into()), &cmd, false),
            b"x".to_vec()
        );
    }
}
