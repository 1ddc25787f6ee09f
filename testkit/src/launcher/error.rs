//! Why a service could not be started.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use super::Role;

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program could not be run.
    #[error("cannot start {role}: {source}")]
    Spawn {
        /// The service.
        role: Role,
        /// What running the program said.
        source: io::Error,
    },
    /// The child exited before it was ready (its port taken, a bad setting, …).
    #[error("{role} exited during start ({}){}", Status(status), Tail(last_lines))]
    Exited {
        /// The service.
        role: Role,
        /// Its exit status, if it could be read.
        status: Option<ExitStatus>,
        /// Its last lines, stdout and stderr, oldest first.
        last_lines: Vec<String>,
    },
    /// The child did not become ready in time; it was killed.
    #[error(
        "{role} was not ready within {timeout:?}: {missing}{}",
        Tail(last_lines)
    )]
    NotReady {
        /// The service.
        role: Role,
        /// The time it had.
        timeout: Duration,
        /// What it did not do: say where it listens, or answer `/health/ready`.
        missing: String,
        /// Its last lines, stdout and stderr, oldest first.
        last_lines: Vec<String>,
    },
}

impl LaunchError {
    /// The service that could not be started.
    pub fn role(&self) -> Role {
        match self {
            Self::Spawn { role, .. } | Self::Exited { role, .. } | Self::NotReady { role, .. } => {
                *role
            }
        }
    }
}

/// An exit status, or that it is unknown.
struct Status<'a>(&'a Option<ExitStatus>);

impl std::fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(status) => write!(f, "{status}"),
            None => f.write_str("exit status unknown"),
        }
    }
}

/// A child's last lines, each on a line of its own, indented.
struct Tail<'a>(&'a [String]);

impl std::fmt::Display for Tail<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("; it wrote nothing");
        }
        f.write_str("; its last lines:")?;
        for line in self.0 {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}
