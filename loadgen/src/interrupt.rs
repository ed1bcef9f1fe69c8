//! The first SIGINT or SIGTERM, for the binaries' clean-up: a run stopped by a
//! signal still deletes the namespaces it made (the baseline's queues, dead-letter
//! exchanges and keys; `memory_targets`' phases), which a default exit would leave
//! on a shared broker.

/// A signal that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Sigint,
    Sigterm,
}

impl Interrupt {
    pub fn name(self) -> &'static str {
        match self {
            Interrupt::Sigint => "SIGINT",
            Interrupt::Sigterm => "SIGTERM",
        }
    }

    /// The shell's status for a process ended by this signal (128 + its number).
    pub fn exit_status(self) -> u8 {
        match self {
            Interrupt::Sigint => 130,
            Interrupt::Sigterm => 143,
        }
    }
}

/// SIGINT and SIGTERM, listened for from the moment this is made: from then on
/// neither ends the process by itself, and one that arrives while nothing waits
/// is kept for the next [`Interrupts::next`].
pub struct Interrupts {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Interrupts {
    pub fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            // Without either stream, next() falls back to tokio's Ctrl-C.
            let streams = signal(SignalKind::interrupt()).and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
            Self { streams: streams.ok() }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next SIGINT or SIGTERM.
    pub async fn next(&mut self) -> Interrupt {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            return tokio::select! {
                _ = int.recv() => Interrupt::Sigint,
                _ = term.recv() => Interrupt::Sigterm,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Interrupt::Sigint
    }
}

/// Waits for the first SIGINT or SIGTERM from now on.
pub async fn interrupted() -> Interrupt {
    Interrupts::listen().next().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_status_is_the_shells_for_the_signal() {
        assert_eq!((Interrupt::Sigint.name(), Interrupt::Sigint.exit_status()), ("SIGINT", 130));
        assert_eq!((Interrupt::Sigterm.name(), Interrupt::Sigterm.exit_status()), ("SIGTERM", 143));
    }
}
