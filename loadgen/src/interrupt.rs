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

/// Waits for the first SIGINT or SIGTERM (only SIGINT where SIGTERM cannot be
/// listened for).
pub async fn interrupted() -> Interrupt {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Interrupt::Sigint,
                _ = term.recv() => Interrupt::Sigterm,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    Interrupt::Sigint
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
