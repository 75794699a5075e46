//! Wiring: builds the adapters, hands them to the core service and starts the HTTP server.
//! This is the only place that knows which storage adapter the service holds.

use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix_service::{IntoServiceFactory, Service as _, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use chrono::{DateTime, Utc};
use justin_core::service::error_chain;
use justin_core::{
    CallbackPolicy, Clock, NoTelemetry, Registry, Service, ServiceSettings, Telemetry,
};

use crate::access_log::{self, AccessLog};
use crate::auth::{self, ApiKeys};
use crate::blocking::DecisionThreads;
use crate::callbacks::HttpNotifier;
use crate::config::Config;
use crate::connection::{self, Connection, ConnectionLimit};
use crate::database::{Database, OpenMode};
use crate::metrics::Metrics;
use crate::routes::export::download::ExportSlot;
use crate::shutdown::{self, StopSignal};
use crate::state::AppState;
use crate::{request_metrics, routes, updates};

/// Why the service could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration or priors are invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database could not be reached, created or migrated.
    #[error("{0}")]
    Database(String),
    /// The stored state does not fit the configuration (priors, algorithm).
    #[error("{0}")]
    Service(String),
    /// The API would be open to the network: no API keys on an address other than loopback.
    #[error("{0}")]
    Unprotected(String),
    /// The address could not be bound or a thread could not start.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Builds the core service on the configured database, with the algorithm of `algorithms`
/// that `algorithm.name` names, and installs the priors when no parameters exist.
///
/// # Errors
/// When the configuration, the priors or the database are not usable.
pub fn build_service(config: &Config, algorithms: &Registry) -> Result<Arc<Service>, StartupError> {
    build_observed_service(config, algorithms, Arc::new(NoTelemetry))
}

/// Builds the core service as [`build_service`] does, telling `telemetry` how its updates,
/// callbacks and database pool go (the metrics).
///
/// # Errors
/// When the configuration, the priors or the database are not usable.
fn build_observed_service(
    config: &Config,
    algorithms: &Registry,
    telemetry: Arc<dyn Telemetry>,
) -> Result<Arc<Service>, StartupError> {
    let database = Database::open_observed(
        &config.database,
        OpenMode::configured(&config.database),
        telemetry.clone(),
    )
    .map_err(StartupError::Database)?;
    let service = observed_service_on(config, algorithms, &database, telemetry)?;
    let priors = config.priors()?;
    service.initialise(&priors).map_err(|e| {
        StartupError::Service(format!("cannot install the priors: {}", error_chain(&e)))
    })?;
    Ok(service)
}

/// Builds the core service on an open database, with the algorithm of `algorithms` that
/// `algorithm.name` names, without installing the priors (commands that only read, such as
/// replay, leave the database as it is).
///
/// # Errors
/// When the configuration, the priors or the database are not usable.
pub fn service_on(
    config: &Config,
    algorithms: &Registry,
    database: &Database,
) -> Result<Arc<Service>, StartupError> {
    observed_service_on(config, algorithms, database, Arc::new(NoTelemetry))
}

fn observed_service_on(
    config: &Config,
    algorithms: &Registry,
    database: &Database,
    telemetry: Arc<dyn Telemetry>,
) -> Result<Arc<Service>, StartupError> {
    let priors = config.priors()?;
    let algorithm = algorithms
        .build(&config.algorithm.name, &config.algorithm.options)
        .map_err(|e| StartupError::Service(e.to_string()))?;
    // Check the priors before touching the database, and name where they came from.
    let checked = algorithm
        .initial_parameters(&priors)
        .and_then(|values| algorithm.validate_parameters(&values));
    if let Err(e) = checked {
        let source = match &config.algorithm.priors_file {
            Some(path) => format!("algorithm.priors_file ({})", path.display()),
            None => "algorithm.priors".to_owned(),
        };
        return Err(StartupError::Service(format!("{source}: {e}")));
    }
    let settings = ServiceSettings {
        seed: config.algorithm.seed,
        backup_dir: config.backup.enabled.then(|| config.backup.dir.clone()),
        update_attempts: config.update.max_attempts,
        callbacks: CallbackPolicy {
            attempts: config.update.callback_attempts,
            first_backoff: Duration::from_millis(config.update.callback_backoff_ms),
            attempt_timeout: Duration::from_secs(config.update.callback_timeout_secs),
        },
        service_version: env!("CARGO_PKG_VERSION").to_owned(),
        config_hash: config.fingerprint(),
        trial: config.trial()?,
        // Erasure always takes a backup first, whether or not backups before updates are on.
        erasure_backup_dir: config.backup.dir.clone(),
    };
    Ok(Arc::new(
        Service::new(
            database.store(),
            algorithm,
            Arc::new(SystemClock),
            Arc::new(HttpNotifier::new(Duration::from_secs(
                config.update.callback_timeout_secs,
            ))),
            settings,
        )
        .with_telemetry(telemetry)
        .with_monitor(crate::monitor::setup(config)?),
    ))
}

/// The API keys, after refusing to serve an open API to the network unless that is asked for,
/// and warning about what the configuration exposes.
///
/// # Errors
/// When no key is configured, `server.host` is not a loopback address and
/// `auth.allow_unauthenticated` is not set.
fn check_access(config: &Config) -> Result<ApiKeys, StartupError> {
    let keys = ApiKeys::from_config(&config.auth.api_keys)
        .map_err(|e| StartupError::Config(crate::config::ConfigError::Invalid(e)))?;
    let host = &config.server.host;
    if keys.is_empty() {
        if !is_loopback(host) && !config.auth.allow_unauthenticated {
            return Err(StartupError::Unprotected(format!(
                "refusing to serve an open API on {host}, which is not a loopback address: \
                 configure auth.api_keys (see docs/operations.md, Authentication), or set \
                 auth.allow_unauthenticated = true if something in front of the service \
                 authenticates its callers"
            )));
        }
        log::warn!(
            "auth.api_keys is empty: the API under /api/v1 is OPEN to anyone who can reach \
             {host}; configure auth.api_keys to require a key"
        );
    } else {
        log::info!(
            "API keys required under /api/v1; accepted keys: {}",
            keys.names().collect::<Vec<_>>().join(", ")
        );
    }
    if config.logging.log_bodies {
        log::warn!(
            "logging.log_bodies = true: REQUEST BODIES, WHICH HOLD PARTICIPANTS' HEALTH DATA, \
             ARE WRITTEN TO THE LOGS; turn it off once debugging is done, and delete the logs \
             written meanwhile"
        );
    }
    Ok(keys)
}

/// Whether `host` only reaches this machine: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A server running on its own thread.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    service: Arc<Service>,
    updates: updates::UpdateQueue,
    server: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
    watchdog: Option<crate::monitor::Watchdog>,
    /// Where `/action` decides; shut down once the server has stopped.
    decisions: DecisionThreads,
    stop: StopSignal,
    grace: Duration,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully on SIGTERM or SIGINT, as [`RunningServer::stop`] does; for the
    /// process that serves, not for servers started inside tests.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    pub fn stop_on_signals(&self) -> std::io::Result<()> {
        shutdown::stop_on_signals(self.handle.clone(), self.stop.clone(), self.grace)
    }

    /// Stops accepting, lets in-flight requests finish, then waits for the update under way
    /// (queued ones stay in the database for the next start); all within the grace period.
    pub fn stop(self) {
        self.stop.begin();
        // Stopping a server that has already stopped is harmless; nothing to report.
        let handle = self.handle.clone();
        std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(true)))
            .join()
            .ok();
        self.wait().ok();
    }

    /// Blocks until the server stops (see [`RunningServer::stop_on_signals`]), then lets the
    /// update under way finish within what is left of the grace period; one that does not is
    /// put back, uncounted, for the next start.
    ///
    /// # Errors
    /// When the server thread ended with an IO error.
    pub fn wait(self) -> std::io::Result<()> {
        let result = self
            .server
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked")));
        // Every request has ended with the server, so no decision runs on these threads.
        drop(self.decisions);
        self.updates.stop();
        if let Some(watchdog) = &self.watchdog {
            watchdog.stop();
        }
        let deadline = self.stop.deadline(self.grace);
        let mut put_back = false;
        while !self.worker.is_finished() {
            if !put_back && Instant::now() >= deadline {
                log::warn!(
                    "the update under way did not finish within server.shutdown_grace_secs \
                     ({}s); it is put back for the next start",
                    self.grace.as_secs()
                );
                self.service.stop_updates();
                put_back = true;
            }
            // Short naps: the worker ends on its own and has no channel to say so.
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.worker.join().is_err() {
            log::error!("the update worker panicked");
        }
        result
    }
}

/// Builds everything, with the algorithm of `algorithms` that `algorithm.name` names, and
/// starts serving; returns once the server accepts connections.
///
/// # Errors
/// When the configuration, the database or the address are not usable.
pub fn start(config: Config, algorithms: &Registry) -> Result<RunningServer, StartupError> {
    let keys = check_access(&config)?;
    let naive_time_zone = config
        .server
        .naive_time_zone()
        .map_err(|e| crate::config::ConfigError::Invalid(format!("server.naive_time_zone: {e}")))?;
    let metrics = config.metrics.enabled.then(|| {
        Arc::new(Metrics::new(Duration::from_secs(
            config.monitor.outcome_due_mins.saturating_mul(60),
        )))
    });
    let telemetry: Arc<dyn Telemetry> = match &metrics {
        Some(metrics) => metrics.clone(),
        None => Arc::new(NoTelemetry),
    };
    let service = build_observed_service(&config, algorithms, telemetry)?;
    // What backups killed mid-way (by this instance or another) left; it logs what it removes.
    justin_backup::write::remove_leftovers(&config.backup.dir);
    let io = |context: String| move |source| StartupError::Io { context, source };
    let listener = TcpListener::bind((config.server.host.as_str(), config.server.port)).map_err(
        io(format!(
            "cannot listen on {}:{}",
            config.server.host, config.server.port
        )),
    )?;
    let addr = listener
        .local_addr()
        .map_err(io("cannot read the bound address".into()))?;
    let (queue, worker) = updates::spawn(
        service.clone(),
        Duration::from_millis(config.update.poll_interval_ms),
    )
    .map_err(io("cannot start the update worker".into()))?;
    let watchdog = if config.monitor.enabled {
        Some(
            crate::monitor::spawn(
                service.clone(),
                Duration::from_secs(config.monitor.check_every_secs),
            )
            .map_err(io("cannot start the watchdog".into()))?,
        )
    } else {
        None
    };
    let decisions = DecisionThreads::new(config.server.decision_threads)
        .map_err(io("cannot start the decision threads".into()))?;
    let state = AppState {
        service: service.clone(),
        deciding: decisions.deciding(),
        updates: queue.clone(),
        max_body_bytes: config.server.max_body_bytes,
        naive_time_zone,
        body_timeout: Duration::from_secs(config.server.body_timeout_secs),
        callback_allowed_hosts: config.update.callback_allowed_hosts.clone(),
        exports: ExportSlot::default(),
        dashboard_zone: config.schedule()?.map_or(chrono_tz::UTC, |s| s.time_zone()),
        metrics: metrics.clone(),
    };
    let access = AccessLog {
        log_bodies: config.logging.log_bodies,
        max_body_bytes: config.server.max_body_bytes,
        body_timeout: Duration::from_secs(config.server.body_timeout_secs),
    };
    let workers = config.server.workers;
    let blocking_threads = blocking_threads_per_worker(workers, config.database.pool_size);
    let grace = config.server.shutdown_grace_secs;
    let header_timeout = Duration::from_secs(config.server.header_timeout_secs);
    let body_timeout = Duration::from_secs(config.server.body_timeout_secs);
    let limit = ConnectionLimit::new(config.server.max_connections);
    let (handle_tx, handle_rx) = mpsc::channel();
    let server = std::thread::Builder::new()
        .name("justin-http".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let mut builder = actix_server::Server::build()
                    // Signals are the binary's business (`stop_on_signals`), not every server's.
                    .disable_signals()
                    .shutdown_timeout(grace);
                if workers > 0 {
                    builder = builder.workers(workers);
                }
                // Every blocking call holds a pool connection for its whole run. With no more
                // blocking threads than connections, requests beyond that wait in the blocking
                // pool's queue, first come first served, instead of all waking for each
                // connection handed back, which is what stretched the tail at high concurrency.
                builder = builder.worker_max_blocking_threads(blocking_threads);
                let shutdown = builder.graceful_shutdown_signal();
                let builder = builder.listen("justin", listener, move || {
                    let keys = keys.clone();
                    let state = state.clone();
                    let metrics = metrics.clone();
                    let app = move || {
                        let keys = keys.clone();
                        let metrics = metrics.clone();
                        App::new()
                            .app_data(web::Data::new(state.clone()))
                            // The last one wrapped runs first: the access log sees every
                            // answer, the 401s included, and the key name the check found.
                            .wrap(from_fn(connection::head_without_body))
                            .wrap(from_fn(move |req, next| {
                                auth::require_key(keys.clone(), req, next)
                            }))
                            .wrap(from_fn(move |req, next| {
                                access_log::log_request(access, req, next)
                            }))
                            .wrap(from_fn(connection::close_when_body_unread))
                            // Outermost: every answer is counted, whichever layer gave it.
                            .wrap(from_fn(move |req, next| {
                                request_metrics::count_request(metrics.clone(), req, next)
                            }))
                            .configure(routes::configure)
                    };
                    let shutdown = shutdown.clone();
                    let http = actix_http::HttpService::build()
                        .graceful_shutdown_signal(move || {
                            let signal = shutdown.clone();
                            async move { signal.notified().await }
                        })
                        // The request line and headers must arrive within this time, else 408.
                        .client_request_timeout(header_timeout)
                        .client_disconnect_timeout(Duration::from_secs(1))
                        .local_addr(addr)
                        .on_connect_ext(|io: &Connection, data| {
                            data.insert(io.note());
                        })
                        .h1(actix_service::map_config(
                            app().into_factory().map_err(|e| e.error_response()),
                            move |()| AppConfig::default(),
                        ));
                    let limit = limit.clone();
                    actix_service::fn_factory(move || {
                        let limit = limit.clone();
                        let http = http.new_service(());
                        async move {
                            let http = std::rc::Rc::new(http.await.map_err(|e| {
                                log::error!("cannot start an HTTP worker: {e:?}");
                            })?);
                            Ok::<_, ()>(actix_service::fn_service(move |stream: TcpStream| {
                                let http = http.clone();
                                let admitted = limit.admit();
                                async move {
                                    let Some(open) = admitted else {
                                        connection::refuse(stream).await;
                                        return Ok(());
                                    };
                                    let peer = stream.peer_addr().ok();
                                    let connection =
                                        Connection::new(stream, open, header_timeout, body_timeout);
                                    http.call((connection, peer)).await
                                }
                            }))
                        }
                    })
                })?;
                let server = builder.run();
                // The receiver waits for this handle; if it is gone, start() has returned.
                handle_tx.send(server.handle()).ok();
                server.await
            })
        })
        .map_err(io("cannot start the server thread".into()))?;
    let Ok(handle) = handle_rx.recv() else {
        // The thread ended before it could serve; its result says why.
        let source = match server.join() {
            Ok(Err(e)) => e,
            Ok(Ok(())) => std::io::Error::other("the server stopped at once"),
            Err(_) => std::io::Error::other("the server thread panicked"),
        };
        queue.stop();
        if let Some(watchdog) = &watchdog {
            watchdog.stop();
        }
        return Err(StartupError::Io {
            context: "the server did not start".into(),
            source,
        });
    };
    log::info!("listening on http://{addr}");
    Ok(RunningServer {
        addr,
        handle,
        service,
        updates: queue,
        server,
        worker,
        watchdog,
        decisions,
        stop: StopSignal::default(),
        grace: Duration::from_secs(grace),
    })
}

/// Blocking threads per HTTP worker: the pool's connections shared out among the workers,
/// at least one each.
fn blocking_threads_per_worker(workers: usize, pool_size: u32) -> usize {
    let workers = if workers > 0 {
        workers
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    };
    (usize::try_from(pool_size).unwrap_or(usize::MAX) / workers).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_threads_share_out_the_pool() {
        assert_eq!(blocking_threads_per_worker(2, 10), 5);
        assert_eq!(blocking_threads_per_worker(4, 10), 2);
        assert_eq!(
            blocking_threads_per_worker(3, 2),
            1,
            "at least one per worker"
        );
        assert!(blocking_threads_per_worker(0, 64) >= 1);
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "0.0.0.0",
            "::",
            "10.0.0.5",
            "192.168.1.2",
            "example.org",
            "localhost.evil",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
