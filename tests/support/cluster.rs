//! A PostgreSQL server of the test's own: `initdb` into a scratch directory, started on a free
//! port, which the test may stop and start again as an operator restarting PostgreSQL would.
//! The machine's shared server is never touched, so other tests running at the same time keep
//! their database.
//!
//! PostgreSQL refuses to run as root; when the tests run as root, the server's commands run
//! as the `postgres` system user (`runuser`), which owns the data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{free_port, ScratchDir};

/// The environment variable naming the directory of `initdb`, `pg_ctl` and `postgres`, when
/// they are neither under `/usr/lib/postgresql/<version>/bin` nor on the `PATH`.
pub const BINDIR_VAR: &str = "JUSTIN_TEST_PG_BINDIR";

/// A private PostgreSQL server, stopped and deleted at drop.
pub struct PrivateCluster {
    scratch: ScratchDir,
    bindir: Option<PathBuf>,
    port: u16,
    run_as_postgres: bool,
}

impl PrivateCluster {
    /// Creates the data directory (trust authentication, user `postgres`) and starts it.
    pub fn start() -> Self {
        let scratch = ScratchDir::new();
        let run_as_postgres = is_root();
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(scratch.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "cannot hand the data directory to postgres"
            );
        }
        let cluster = Self {
            scratch,
            bindir: bindir(),
            port: free_port(),
            run_as_postgres,
        };
        cluster.pg(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.resume();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.scratch.path().join("data")
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.scratch.path().display()
        );
        let log = self.scratch.path().join("server.log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server the way `pg_ctlcluster stop` does by default (fast: open sessions
    /// are ended, their transactions rolled back) and waits until it is down.
    pub fn halt(&self) {
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    fn program(&self, name: &str) -> PathBuf {
        self.bindir
            .as_ref()
            .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let mut cmd = if self.run_as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"])
                .arg(self.program(program));
            cmd
        } else {
            Command::new(self.program(program))
        };
        let out = cmd
            .args(args)
            .current_dir(self.scratch.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program}: {e}; install PostgreSQL's server binaries or set {BINDIR_VAR}"
                )
            });
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Best effort: a server that is down already has nothing to stop.
        let data = self.data().display().to_string();
        let mut cmd = if self.run_as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"])
                .arg(self.program("pg_ctl"));
            cmd
        } else {
            Command::new(self.program("pg_ctl"))
        };
        cmd.args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The newest `/usr/lib/postgresql/<version>/bin`, or [`BINDIR_VAR`], or the `PATH` (None).
fn bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_VAR) {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            Path::new(&bin)
                .join("initdb")
                .is_file()
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
