//! A real Kafka-protocol broker for tests and benches: tansu on a loopback
//! port, started and stopped through the repository's own
//! `scripts/kafka-broker` (which installs tansu if it is missing), plus
//! topic creation. Tests and benches share it so that there is one way to
//! run a broker, the one CI uses.
//!
//! Panics on failure: it only serves tests and benches.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Where topics live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In memory: lost when the broker stops.
    Memory,
    /// In a SQLite file in the broker's directory: kept across restarts.
    Sqlite,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::Sqlite => "sqlite",
        }
    }
}

/// A running broker, stopped on drop (its log is printed if the thread is
/// panicking, so a failing test shows what the broker said).
pub struct Broker {
    dir: tempfile::TempDir,
    storage: Storage,
    /// `host:port` to bootstrap from.
    pub addr: String,
}

/// `scripts/kafka-broker` of the checkout being tested (see
/// `wafer_guests_build::checkout`: not necessarily where this crate was
/// compiled).
fn script() -> PathBuf {
    wafer_guests_build::checkout(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker")
}

/// Runs `scripts/kafka-broker start <dir> [port]`.
fn launch(dir: &Path, port: Option<&str>, storage: Storage) -> Output {
    let mut cmd = Command::new(script());
    cmd.arg("start").arg(dir).env("TANSU_STORAGE", storage.name());
    if let Some(p) = port {
        cmd.arg(p);
    }
    cmd.output().expect("run scripts/kafka-broker")
}

impl Broker {
    /// A broker on a free port.
    pub fn start(storage: Storage) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = launch(dir.path(), None, storage);
        assert!(
            out.status.success(),
            "broker did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        Broker { dir, storage, addr }
    }

    /// The broker process's id, while it runs (benchmarks read its CPU
    /// time from /proc).
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("broker.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn stop(&self) {
        let _ = Command::new(script()).arg("stop").arg(self.dir.path()).status();
    }

    /// Stops the broker and starts it again on the same port and storage.
    /// tansu does not set SO_REUSEADDR, so the port can only be bound again
    /// once the killed broker's connections left TIME_WAIT (60 s on Linux):
    /// starting is retried until then.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.addr.rsplit(':').next().unwrap_or_default().to_string();
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            std::thread::sleep(Duration::from_secs(5));
            let out = launch(self.dir.path(), Some(&port), self.storage);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not restart: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Creates topics with the given partition counts.
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .expect("admin client");
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for r in rt
            .block_on(admin.create_topics(&new, &options))
            .expect("create topics")
        {
            r.expect("topic created");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("broker log (last lines, newest first):\n{}", tail.join("\n"));
        }
    }
}
