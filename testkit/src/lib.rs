//! Test helpers shared by the crates' unit tests (a dev-dependency only).

use std::sync::{Arc, Mutex, PoisonError};

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the current thread logs at `level` and above while `f` runs, as
/// text (no time stamps, no colours), with what `f` returned.
pub fn logged_at<T>(level: tracing::Level, f: impl FnOnce() -> T) -> (String, T) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let bytes = buffer
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (String::from_utf8_lossy(&bytes).into_owned(), result)
}

/// What the current thread logs at info and above while `f` runs.
pub fn logged(f: impl FnOnce()) -> String {
    logged_at(tracing::Level::INFO, f).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_what_is_logged_at_the_level_and_above() {
        let (text, value) = logged_at(tracing::Level::WARN, || {
            tracing::info!("not at this level");
            tracing::warn!(answer = 42, "a warning");
            7
        });
        assert_eq!(value, 7);
        assert!(
            text.contains("a warning") && text.contains("answer=42"),
            "{text}"
        );
        assert!(!text.contains("not at this level"), "{text}");
        assert!(logged(|| tracing::info!("seen")).contains("seen"));
        assert_eq!(logged(|| {}), "");
    }
}
