//! An nginx of the test's own: the machine's nginx binary run in the foreground as one process
//! (`daemon off`, `master_process off`), with its configuration, pid file, logs and temporary
//! files in a scratch directory, listening on a loopback port. Nothing of the machine's own
//! nginx setup (`/etc/nginx`, `/var/log/nginx`, a running service) is read or touched.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::{ScratchDir, WAIT};

/// The environment variable naming the nginx binary, when it is neither on the `PATH` nor
/// `/usr/sbin/nginx`.
pub const NGINX_VAR: &str = "JUSTIN_TEST_NGINX";

/// The nginx binary: [`NGINX_VAR`] when set, else `nginx` on the `PATH`, else
/// `/usr/sbin/nginx` (the `PATH` of a user other than root often lacks `/usr/sbin`). Fails the
/// test saying how to install nginx when there is none.
pub fn binary() -> PathBuf {
    let found = match std::env::var_os(NGINX_VAR) {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|dir| dir.join("nginx"))
            .chain([PathBuf::from("/usr/sbin/nginx")])
            .find(|path| path.is_file()),
    };
    found.unwrap_or_else(|| {
        let looked = match std::env::var_os(NGINX_VAR) {
            Some(path) => format!("{NGINX_VAR}={}", Path::new(&path).display()),
            None => "nginx on the PATH and /usr/sbin/nginx".to_owned(),
        };
        panic!(
            "nginx is not installed (looked for {looked}): this test runs several justin \
             processes behind it. Install Debian's package with `sudo apt-get install -y nginx` \
             (.ci/run does this in CI), or set {NGINX_VAR} to an nginx binary"
        )
    })
}

/// A running nginx, stopped at drop.
pub struct Nginx {
    child: Child,
    scratch: ScratchDir,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
}

/// What a stopped nginx wrote.
#[derive(Debug)]
pub struct NginxLogs {
    /// The access log, one line per request in the format the configuration set.
    pub access: String,
    /// The error log (upstream failures are logged here).
    pub error: String,
}

impl Nginx {
    /// Starts nginx with `http` as the inside of its `http {}` block, which must listen on
    /// `127.0.0.1:<port>`; `log_format` is the format of its access log (nginx variables such
    /// as `$status $upstream_addr`). Waits until it accepts connections.
    pub fn start(port: u16, http: &str, log_format: &str) -> Self {
        let scratch = ScratchDir::new();
        let dir = scratch.path();
        let path = |name: &str| dir.join(name).display().to_string();
        let config = format!(
            "daemon off;\n\
             master_process off;\n\
             pid {pid};\n\
             lock_file {lock};\n\
             error_log {error} notice;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             client_body_temp_path {body};\n\
             proxy_temp_path {proxy};\n\
             fastcgi_temp_path {fastcgi};\n\
             uwsgi_temp_path {uwsgi};\n\
             scgi_temp_path {scgi};\n\
             log_format test '{log_format}';\n\
             access_log {access} test;\n\
             {http}\n\
             }}\n",
            pid = path("nginx.pid"),
            lock = path("nginx.lock"),
            error = path("error.log"),
            body = path("client_body"),
            proxy = path("proxy"),
            fastcgi = path("fastcgi"),
            uwsgi = path("uwsgi"),
            scgi = path("scgi"),
            access = path("access.log"),
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).expect("can write the nginx configuration");
        let output = std::fs::File::create(dir.join("output.log")).expect("can create a log");
        let child = Command::new(binary())
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&config_path)
            // Where it logs until it has read the configuration (the default may not be ours
            // to write).
            .arg("-e")
            .arg(dir.join("error.log"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("can share the log"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let mut nginx = Self {
            child,
            scratch,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!(
                    "nginx exited at start ({status}): {}{}",
                    nginx.read("output.log"),
                    nginx.read("error.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on port {port} within {WAIT:?}: {}",
                nginx.read("error.log")
            );
            std::thread::yield_now();
        }
        nginx
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.scratch.path().join(name)).unwrap_or_default()
    }

    /// Stops it (SIGTERM: a fast shutdown), waits for it and returns its logs.
    pub fn stop(mut self) -> NginxLogs {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
        self.child.wait().expect("nginx can be waited for");
        NginxLogs {
            access: self.read("access.log"),
            error: self.read("error.log"),
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Already stopped when stop() ran; otherwise stop it hard.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
