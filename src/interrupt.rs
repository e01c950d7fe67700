//! Ctrl-C and SIGTERM (a cancelled CI job): the first signal asks the
//! running command to stop starting new steps, let running ones finish and
//! be recorded, release the lock and exit non-zero; a second signal exits at
//! once. State stays consistent either way, since every step is recorded as
//! it finishes.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Listens for SIGINT and SIGTERM on the current tokio runtime.
pub fn install() {
    tokio::spawn(async {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let Ok(mut int) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        else {
            return;
        };
        let mut count = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            count += 1;
            if count == 1 {
                REQUESTED.store(true, Ordering::SeqCst);
                eprintln!(
                    "Interrupt received: no new steps will start; waiting for the running ones to finish and be recorded (a second interrupt exits at once)"
                );
            } else {
                eprintln!(
                    "Second interrupt: exiting now; the steps that were running are not recorded (their objects carry berth's labels and are adopted by the next run)"
                );
                std::process::exit(130);
            }
        }
    });
}
