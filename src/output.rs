//! What the commands print on standard output. A reader that goes away early
//! (`orion run analyze --repo . | head -2`) ends the command quietly: the write fails with
//! [`OutputClosed`], which the command returns like any error and `main` exits 0 on.

use std::fmt;
use std::io::Write;

/// Standard output's reader has gone: nothing more can be said.
#[derive(Debug)]
pub struct OutputClosed;

impl fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for OutputClosed {}

/// Writes to standard output; a closed pipe is [`OutputClosed`].
pub fn write(args: fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(OutputClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("while writing to standard output")),
    }
}

/// Whether `error` is (or was caused by) a closed standard output: ours, or a broken pipe
/// of a writer handed to a library (the benches write to what they are given).
pub fn closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<OutputClosed>()
            || cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` for the commands: a closed pipe returns [`OutputClosed`] from the caller.
macro_rules! say {
    () => {
        $crate::output::write(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))?
    };
}
pub(crate) use say;
