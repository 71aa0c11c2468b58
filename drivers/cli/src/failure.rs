//! Terminal failures: one `error: …` line on stderr and an exit code.

use genesys_keepalive::StopReason;

/// Exit code for an internal failure (a bug, or the runtime could not start).
pub const EXIT_INTERNAL: u8 = 1;
/// Exit code for bad configuration or input.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for refused authentication or authorization.
pub const EXIT_AUTH: u8 = 3;
/// Exit code after the last reconnect attempt failed.
pub const EXIT_EXHAUSTED: u8 = 4;
/// `fleet`: shut down on a signal after one or more connections had stopped on their own.
pub const EXIT_SOME_STOPPED: u8 = 5;

/// Why the command ends with a non-zero code; the message names the cause and what to do.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        Failure::new(EXIT_CONFIG, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Failure::new(EXIT_INTERNAL, message)
    }

    /// The failure for a machine that stopped for `reason`; `None` for a requested shutdown.
    pub fn from_stop(reason: &StopReason) -> Option<Self> {
        let code = match reason {
            StopReason::Shutdown => return None,
            StopReason::AuthenticationFailed { .. } | StopReason::Forbidden { .. } => EXIT_AUTH,
            StopReason::ReconnectAttemptsExhausted { .. } => EXIT_EXHAUSTED,
        };
        Some(Failure::new(code, reason.to_string()))
    }

    /// The message on one line (a multi-line error from a parser is folded).
    pub fn line(&self) -> String {
        let mut out = String::with_capacity(self.message.len());
        for (i, part) in self
            .message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(part);
        }
        out
    }

    /// Prints the one `error: …` line on stderr.
    pub fn print(&self) {
        eprintln!("error: {}", self.line());
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::internal(format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_lines() {
        let f = Failure::config("TOML parse error at line 1\n  |\n1 | x\n  |\nunknown field");
        assert!(!f.line().contains('\n'));
        assert!(f.line().starts_with("TOML parse error"));
    }

    #[test]
    fn stop_reasons_map_to_codes() {
        let r = StopReason::Forbidden { detail: "x".into() };
        assert_eq!(Failure::from_stop(&r).unwrap().code, EXIT_AUTH);
        let r = StopReason::ReconnectAttemptsExhausted {
            attempts: 2,
            last_error: "refused".into(),
        };
        assert_eq!(Failure::from_stop(&r).unwrap().code, EXIT_EXHAUSTED);
        assert!(Failure::from_stop(&StopReason::Shutdown).is_none());
    }
}
