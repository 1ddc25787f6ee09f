//! What a run cost in log lines: with `--logs DIR`, the lines and bytes the services appended
//! to the `*.log` files in `DIR` while the load ran (`var/log` of `ordertrail up`, or any
//! folder where the services' stdout goes), per service and per order. That is the volume a
//! shipper sends to Elasticsearch, and what the log-volume policy (`ORDERTRAIL_LOG_SAMPLE`)
//! changes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

/// How long the services get to write the lines of the last answers before they are counted:
/// each writes stdout in batches every few milliseconds, and `ordertrail up` copies the lines
/// to the files from pipes.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The log files of a folder and where each one ended when the run started.
#[derive(Debug)]
pub struct LogFiles {
    dir: PathBuf,
    /// `(service, path, length at the start)`.
    files: Vec<(String, PathBuf, u64)>,
}

/// Lines and bytes appended to one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Appended {
    /// Lines.
    pub lines: u64,
    /// Bytes, newlines included.
    pub bytes: u64,
}

/// The log volume of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogVolume {
    /// The folder counted.
    pub dir: String,
    /// Per service (the file's name without `.log`).
    pub services: BTreeMap<String, Appended>,
    /// All services.
    pub total: Appended,
    /// Orders placed: steps of every scenario but `reads`.
    pub orders: u64,
    /// Lines per order, the reads of the mix included.
    pub lines_per_order: f64,
    /// Bytes per order, the reads of the mix included.
    pub bytes_per_order: f64,
}

impl LogFiles {
    /// Notes where each `*.log` file in `dir` ends now.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some(service) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".log"))
            else {
                continue;
            };
            let length = std::fs::metadata(&path)?.len();
            files.push((service.to_owned(), path, length));
        }
        anyhow::ensure!(!files.is_empty(), "no *.log file in {}", dir.display());
        files.sort();
        Ok(Self {
            dir: dir.to_owned(),
            files,
        })
    }

    /// What was appended since [`LogFiles::start`], per `orders` placed.
    pub fn volume(&self, orders: u64) -> anyhow::Result<LogVolume> {
        let mut services = BTreeMap::new();
        let mut total = Appended::default();
        for (service, path, start) in &self.files {
            let appended =
                appended(path, *start).with_context(|| format!("reading {}", path.display()))?;
            total.lines += appended.lines;
            total.bytes += appended.bytes;
            services.insert(service.clone(), appended);
        }
        let per_order = |n: u64| n as f64 / orders.max(1) as f64;
        Ok(LogVolume {
            dir: self.dir.display().to_string(),
            services,
            total,
            orders,
            lines_per_order: per_order(total.lines),
            bytes_per_order: per_order(total.bytes),
        })
    }
}

/// Lines and bytes of `path` after `start` (from its beginning, if it is shorter now: it was
/// truncated or replaced).
fn appended(path: &Path, start: u64) -> std::io::Result<Appended> {
    let mut file = File::open(path)?;
    let start = if file.metadata()?.len() < start {
        0
    } else {
        start
    };
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut counted = Appended::default();
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            return Ok(counted);
        }
        counted.lines += buffer.iter().filter(|&&byte| byte == b'\n').count() as u64;
        counted.bytes += buffer.len() as u64;
        let read = buffer.len();
        reader.consume(read);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn only_what_was_appended_during_the_run_is_counted_per_service_and_order() {
        let dir = std::env::temp_dir().join(format!("ordertrail-load-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let mut file = File::options()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .unwrap();
            file.write_all(text.as_bytes()).unwrap();
        };
        write("gateway.log", "before\n");
        write("order.log", "");
        write("notes.txt", "not a log\n");

        let files = LogFiles::start(&dir).unwrap();
        write("gateway.log", "{\"a\":1}\n{\"b\":2}\n");
        write("order.log", "{\"c\":3}\n");
        write("notes.txt", "more\n");
        let volume = files.volume(2).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(
            volume.services["gateway"],
            Appended {
                lines: 2,
                bytes: 16
            }
        );
        assert_eq!(volume.services["order"], Appended { lines: 1, bytes: 8 });
        assert_eq!(volume.services.len(), 2);
        assert_eq!(
            volume.total,
            Appended {
                lines: 3,
                bytes: 24
            }
        );
        assert_eq!(
            (volume.lines_per_order, volume.bytes_per_order),
            (1.5, 12.0)
        );
    }
}
