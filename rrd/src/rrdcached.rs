//! rrdcached's text protocol on its unix socket, with timeouts: the one
//! thing the C daemon's librrd client lacks (a hung rrdcached froze it).
//!
//! Hand-written instead of librrd's `rrdc_*` client: that one keeps a
//! process-wide connection with no timeout of ours. The protocol part we
//! use is one line out, one status line back (`<n> <message>`, n < 0 an
//! error, n > 0 more lines that follow).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RrdcachedError {
    #[error("rrdcached at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rrdcached refused the update: {0}")]
    Refused(String),
    #[error("rrdcached answered something else: {0:?}")]
    Garbled(String),
}

/// A connection to rrdcached, made on first use and again after an error.
pub struct Rrdcached {
    socket: PathBuf,
    timeout: Duration,
    stream: Option<BufReader<UnixStream>>,
}

impl Rrdcached {
    pub fn new(socket: &Path, timeout: Duration) -> Rrdcached {
        Rrdcached {
            socket: socket.to_owned(),
            timeout,
            stream: None,
        }
    }

    /// `UPDATE <file> <values>`; `file` absolute, as the C daemon sends it.
    /// Any failure drops the connection (the next call reconnects).
    pub fn update(&mut self, file: &Path, values: &str) -> Result<(), RrdcachedError> {
        let line = format!("UPDATE {} {values}\n", file.display());
        let result = self.command(&line);
        if matches!(
            result,
            Err(RrdcachedError::Io { .. } | RrdcachedError::Garbled(_))
        ) {
            self.stream = None;
        }
        result
    }

    fn command(&mut self, line: &str) -> Result<(), RrdcachedError> {
        let io = |source| RrdcachedError::Io {
            path: self.socket.clone(),
            source,
        };
        if self.stream.is_none() {
            let stream = UnixStream::connect(&self.socket).map_err(io)?;
            stream.set_read_timeout(Some(self.timeout)).map_err(io)?;
            stream.set_write_timeout(Some(self.timeout)).map_err(io)?;
            self.stream = Some(BufReader::new(stream));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(RrdcachedError::Garbled(String::new()));
        };
        stream.get_mut().write_all(line.as_bytes()).map_err(io)?;
        let mut status = String::new();
        read_line(stream, &mut status).map_err(io)?;
        let (count, message) = status
            .trim_end()
            .split_once(' ')
            .unwrap_or((status.trim_end(), ""));
        let count: i64 = count
            .parse()
            .map_err(|_| RrdcachedError::Garbled(status.clone()))?;
        if count < 0 {
            return Err(RrdcachedError::Refused(message.to_owned()));
        }
        // Lines that come with a positive status (not sent for UPDATE).
        for _ in 0..count.min(1024) {
            let mut extra = String::new();
            read_line(stream, &mut extra).map_err(io)?;
        }
        Ok(())
    }
}

/// One line of at most 4 KiB (a longer answer is not rrdcached's).
fn read_line(stream: &mut BufReader<UnixStream>, line: &mut String) -> std::io::Result<()> {
    let read = stream.by_ref().take(4096).read_line(line)?;
    if read == 0 || !line.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed mid-answer",
        ));
    }
    Ok(())
}
