//! SIGINT / SIGTERM as a future (tokio). Listeners are installed when [`Shutdown::install`] is called, so a
//! signal that arrives later is never the default "terminate now".

use std::io;

#[cfg(unix)]
pub struct Shutdown {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Shutdown {
    /// Installs the handlers. Must be called inside a tokio runtime.
    pub fn install() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Shutdown {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM, with the signal's name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

#[cfg(not(unix))]
pub struct Shutdown;

#[cfg(not(unix))]
impl Shutdown {
    pub fn install() -> io::Result<Self> {
        Ok(Shutdown)
    }

    pub async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
