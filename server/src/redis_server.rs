//! A private `redis-server` on loopback, for the tests and measurements of the Redis backend.
//!
//! [`RedisServer::start`] runs Debian's `redis-server` (or `$REDIS_SERVER`) on a free loopback
//! port, in a directory of its own under the system's temporary directory, with the persistence
//! asked for ([`Persistence`]); the guard stops it and removes the directory when dropped. It
//! can be stopped (cleanly: `SHUTDOWN`, which writes what persistence needs), killed, and
//! started again on the same port and directory, to play an outage. Nothing here talks to a
//! Redis it did not start.
//!
//! The simulator itself never uses this: it connects to `store.redis_url`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a started server has to answer `PING`.
const START_PATIENCE: Duration = Duration::from_secs(10);

/// What the server keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing: a restart starts empty.
    None,
    /// An append-only file written on every write (`appendfsync always`): a restart, clean or
    /// not, loses nothing.
    Aof,
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisServerError {
    /// The program is not there.
    #[error(
        "`{program}` could not be run ({source}): the Redis backend's tests need Redis's server \
         (Debian: `apt-get install -y redis-server`; .ci/run installs it), or set REDIS_SERVER"
    )]
    Missing {
        /// What was run.
        program: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// It started but did not answer in time, or exited.
    #[error("redis-server did not answer PING within {0:?} (see its log in {1})")]
    NotReady(Duration, String),
    /// Its directory could not be made.
    #[error("cannot prepare redis-server's directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A running `redis-server` of one's own (see the module docs).
#[derive(Debug)]
pub struct RedisServer {
    program: String,
    dir: PathBuf,
    port: u16,
    persistence: Persistence,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free loopback port.
    pub async fn start(persistence: Persistence) -> Result<Self, RedisServerError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sim-redis-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let program = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut last = None;
        // A free port may be taken between the probe and the bind: try a few.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut server = RedisServer {
                program: program.clone(),
                dir: dir.clone(),
                port,
                persistence,
                child: None,
            };
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e @ RedisServerError::Missing { .. }) => return Err(e),
                Err(e) => {
                    server.dir = PathBuf::new(); // keep the directory for the next try
                    last = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.unwrap_or(RedisServerError::NotReady(
            START_PATIENCE,
            dir.display().to_string(),
        )))
    }

    async fn launch(&mut self) -> Result<(), RedisServerError> {
        let appendonly = match self.persistence {
            Persistence::None => "no",
            Persistence::Aof => "yes",
        };
        let child = Command::new(&self.program)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--save", "", "--appendonly", appendonly])
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RedisServerError::Missing {
                program: self.program.clone(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_PATIENCE;
        while Instant::now() < deadline {
            if self.command("PING").await.is_some_and(|r| r == "+PONG") {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill().await;
        Err(RedisServerError::NotReady(
            START_PATIENCE,
            self.dir.join("redis.log").display().to_string(),
        ))
    }

    /// Sends one command without arguments; its first reply line.
    async fn command(&self, name: &str) -> Option<String> {
        let mut con = tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(("127.0.0.1", self.port)),
        )
        .await
        .ok()?
        .ok()?;
        let request = format!("*1\r\n${}\r\n{name}\r\n", name.len());
        con.write_all(request.as_bytes()).await.ok()?;
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), con.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        Some(text.lines().next().unwrap_or_default().to_owned())
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it cleanly (`SHUTDOWN`: with an append-only file, everything written is kept).
    pub async fn stop(&mut self) {
        let _ = self.command("SHUTDOWN").await;
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Kills it (`SIGKILL`): what the append-only file has is what survives.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again, on the same port and directory (after [`RedisServer::stop`] or
    /// [`RedisServer::kill`]).
    pub async fn restart(&mut self) -> Result<(), RedisServerError> {
        self.stop().await;
        self.launch().await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if !self.dir.as_os_str().is_empty() {
            // The server may still be writing as it dies: a second try after a moment.
            if std::fs::remove_dir_all(&self.dir).is_err() {
                std::thread::sleep(Duration::from_millis(50));
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}
