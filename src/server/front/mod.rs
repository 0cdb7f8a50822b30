//! The front end's state: the FC listener, the admin socket, every client connection, the HTTP
//! limits, the `Date` cache, FC's hook log and request ids.

pub(super) mod client;
pub(super) mod conn;

use super::client::refuse_connection;
use super::conn::{Conn, Socket};
use crate::config::{AccessLogDestination, SystemConfig};
use crate::fc::{FcLog, RequestIds};
use crate::http::date::DateCache;
use crate::http::request::RequestLimits;
use crate::reactor::slab::{Key, Slab};
use crate::reactor::token::{self, Source};
use crate::server::ServerError;
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The listeners and the connections they accepted.
pub(in crate::server) struct FrontEnd {
    /// The HTTP listener: the FC port, or `gateway.runtimePort` while a gateway owns the FC
    /// port; `None` when `gateway.runtimePort` is off.
    listener: Option<TcpListener>,
    /// The address actually bound (useful with port 0).
    local_addr: Option<SocketAddr>,
    admin: UnixListener,
    admin_path: PathBuf,
    /// The metrics listener (`metrics.address`), when configured.
    metrics: Option<TcpListener>,
    /// Clients refused with 503 `TooManyConnections` (`noslate metrics`).
    refused: u64,
    conns: Slab<Conn>,
    /// Buffers connections gave back between requests, for the next requests.
    spares: conn::ConnSpares,
    request_limits: RequestLimits,
    /// A connection's read buffer size: the largest allowed head plus a little.
    rbuf_size: usize,
    ids: RequestIds,
    fc_log: FcLog,
    date: DateCache,
    /// Unsent response bytes all connections hold (`http.maxBufferedBytes`).
    buffered_output: usize,
    /// An fd kept open so that, out of fds, one can be given back to accept and refuse a client.
    reserve_fd: Option<std::fs::File>,
    /// Requests that ended since the loop last took them, for the access log; `None` while
    /// the access log is off.
    ended: Option<Vec<conn::EndedRequest>>,
    /// `metrics.enabled`: ended invocations carry their `Finished` record for the metrics.
    count_invocations: bool,
}

impl FrontEnd {
    /// Binds the HTTP listener at `addr` (when there is one) and the admin socket at
    /// `admin_path`, both watched by `registry`, with the HTTP limits of `http`.
    pub(in crate::server) fn bind(
        addr: Option<SocketAddr>,
        admin_path: PathBuf,
        config: &SystemConfig,
        registry: &Registry,
    ) -> Result<FrontEnd, ServerError> {
        let http = &config.http;
        let (listener, local_addr) = match addr {
            Some(addr) => {
                let mut listener =
                    TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
                let local_addr = listener.local_addr().map_err(ServerError::Poll)?;
                registry
                    .register(
                        &mut listener,
                        token::token(Source::Listener),
                        Interest::READABLE,
                    )
                    .map_err(ServerError::Poll)?;
                (Some(listener), Some(local_addr))
            }
            None => (None, None),
        };
        let mut admin = bind_admin(&admin_path)?;
        registry
            .register(&mut admin, token::token(Source::Admin), Interest::READABLE)
            .map_err(ServerError::Poll)?;
        let metrics = match config.metrics_address {
            Some(addr) => {
                let mut listener = TcpListener::bind(addr)
                    .map_err(|source| ServerError::MetricsBind { addr, source })?;
                let bound = listener.local_addr().map_err(ServerError::Poll)?;
                registry
                    .register(
                        &mut listener,
                        token::token(Source::Metrics),
                        Interest::READABLE,
                    )
                    .map_err(ServerError::Poll)?;
                log::info!("metrics on http://{bound}/metrics (metrics.address)");
                Some(listener)
            }
            None => None,
        };
        Ok(FrontEnd {
            listener,
            local_addr,
            admin,
            admin_path,
            metrics,
            refused: 0,
            conns: Slab::default(),
            spares: conn::ConnSpares::default(),
            request_limits: RequestLimits {
                max_head_bytes: http.max_header_bytes,
                max_headers: http.max_headers,
                max_body_bytes: http.max_request_body_size,
            },
            // The read buffer must hold the largest allowed head plus a little, to tell "too
            // large" from "incomplete".
            rbuf_size: (http.max_header_bytes + 1024).max(16 * 1024),
            ids: RequestIds::new(),
            fc_log: FcLog::default(),
            date: DateCache::new(),
            buffered_output: 0,
            reserve_fd: std::fs::File::open("/dev/null").ok(),
            ended: (config.logger.access_log != AccessLogDestination::Off).then(Vec::new),
            count_invocations: config.metrics_enabled,
        })
    }

    /// The requests that ended since the last call, for the access log; `into` is handed back
    /// empty, so that one buffer serves every iteration.
    pub(in crate::server) fn take_ended(&mut self, into: &mut Vec<conn::EndedRequest>) {
        if let Some(ended) = self.ended.as_mut() {
            std::mem::swap(ended, into);
        }
    }

    /// The address the HTTP listener is bound to (useful with port 0), if there is one.
    pub(in crate::server) fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The admin socket's path.
    pub(in crate::server) fn admin_path(&self) -> &std::path::Path {
        &self.admin_path
    }

    /// Connection `key`, if it is still open.
    pub(in crate::server) fn conn(&self, key: Key) -> Option<&Conn> {
        self.conns.get(key)
    }

    /// Connection `key`, to change its flags or its current request.
    pub(in crate::server) fn conn_mut(&mut self, key: Key) -> Option<&mut Conn> {
        self.conns.get_mut(key)
    }

    /// The open connections.
    pub(in crate::server) fn connections(&self) -> impl Iterator<Item = &Conn> {
        self.conns.iter()
    }

    /// The keys of the open connections (the glue tests find the one they connected).
    #[cfg(test)]
    pub(in crate::server) fn connections_keys(&self) -> Vec<Key> {
        self.conns.keys()
    }

    /// Clients refused with 503 `TooManyConnections` so far.
    pub(in crate::server) fn refused_connections(&self) -> u64 {
        self.refused
    }

    /// How many connections are open.
    pub(in crate::server) fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// FC's hook and invocation log lines.
    /// Kept read and write buffers (`ConnSpares`).
    #[cfg(test)]
    pub(in crate::server) fn spare_buffers(&self) -> (usize, usize) {
        self.spares.counts()
    }

    pub(in crate::server) fn fc_log_mut(&mut self) -> &mut FcLog {
        &mut self.fc_log
    }

    /// A fresh request id.
    pub(in crate::server) fn next_request_id(&mut self) -> String {
        self.ids.next_id()
    }

    /// Accepts every client waiting on the FC listener, up to `max_connections` held at once
    /// (clients beyond get 503 `TooManyConnections`), and returns the new connections.
    pub(in crate::server) fn accept(
        &mut self,
        max_connections: usize,
        registry: &Registry,
    ) -> Vec<Key> {
        let mut accepted = Vec::new();
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return accepted;
            };
            match listener.accept() {
                Ok((mut sock, peer)) => {
                    if self.conns.len() >= max_connections {
                        log::warn!(
                            "[http] refusing {peer}: http.maxConnections ({max_connections}) \
                             reached"
                        );
                        let why = format!(
                            "the runtime already holds http.maxConnections ({max_connections}) \
                             connections"
                        );
                        refuse_connection(&mut sock, &why);
                        self.refused += 1;
                        continue;
                    }
                    if let Err(err) = sock.set_nodelay(true) {
                        log::debug!("[http] set_nodelay failed for {peer}: {err}");
                    }
                    if let Some(key) = self.add_conn(Socket::Tcp(sock), registry) {
                        log::trace!("[http conn={}] accepted {peer}", key.idx);
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.peer = Some(peer);
                        }
                        accepted.push(key);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if is_fd_exhaustion(&err) => {
                    // Out of fds: the pending connection would wait in the backlog, and no
                    // new readiness edge would come for it. Give back the reserve fd, accept
                    // it, refuse it with 503, and take the reserve again.
                    if !self.refuse_with_reserve_fd() {
                        log::warn!("[http] accept failed: {err}");
                        break;
                    }
                }
                Err(err) => {
                    log::warn!("[http] accept failed: {err}");
                    break;
                }
            }
        }
        accepted
    }

    /// Accepts one connection on the fd held in reserve and answers it 503 TooManyConnections.
    /// Returns false when there was no reserve to give back, or no connection to take.
    fn refuse_with_reserve_fd(&mut self) -> bool {
        if self.reserve_fd.take().is_none() {
            return false;
        }
        let Some(listener) = self.listener.as_ref() else {
            return false;
        };
        let refused = match listener.accept() {
            Ok((mut sock, peer)) => {
                log::warn!("[http] refusing {peer}: out of file descriptors");
                refuse_connection(
                    &mut sock,
                    "the runtime has no file descriptor left for another connection (raise \
                     RLIMIT_NOFILE or lower http.maxConnections)",
                );
                true
            }
            Err(_) => false,
        };
        self.reserve_fd = std::fs::File::open("/dev/null").ok();
        self.refused += u64::from(refused);
        refused && self.reserve_fd.is_some()
    }

    /// Accepts every scraper waiting on the metrics listener and returns the new connections,
    /// which are answered `GET /metrics` and nothing else.
    pub(in crate::server) fn accept_metrics(&mut self, registry: &Registry) -> Vec<Key> {
        let mut accepted = Vec::new();
        while let Some(listener) = self.metrics.as_ref() {
            match listener.accept() {
                Ok((sock, peer)) => {
                    if let Some(key) = self.add_conn(Socket::Tcp(sock), registry) {
                        log::trace!("[http conn={}] metrics scraper {peer}", key.idx);
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.metrics_only = true;
                        }
                        accepted.push(key);
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("[metrics] accept failed: {err}");
                    break;
                }
            }
        }
        accepted
    }

    /// Accepts every client waiting on the admin socket, except the runtime's own descendants,
    /// and returns the new connections.
    pub(in crate::server) fn accept_admin(
        &mut self,
        registry: &Registry,
        trusted: Option<i32>,
    ) -> Vec<Key> {
        let mut accepted = Vec::new();
        loop {
            match self.admin.accept() {
                Ok((sock, _)) => {
                    // The socket's mode already keeps other users out; a worker that runs as
                    // the runtime's own user is kept out here. The gateway (`trusted`) and
                    // what it starts are let in: that is what the socket is for.
                    if let Ok(pid) = crate::sys::unix_peer_pid(&sock)
                        && crate::turf::origin::is_workers_process(
                            pid,
                            crate::sys::getpid(),
                            trusted,
                        )
                    {
                        log::warn!(
                            "[admin] refusing a connection from pid {pid}, a process of the \
                             runtime's own workers"
                        );
                        continue;
                    }
                    accepted.extend(self.add_conn(Socket::Unix(sock), registry));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    log::warn!("[admin] accept failed: {err}");
                    break;
                }
            }
        }
        accepted
    }

    /// Registers an accepted socket. `None` if it could not be watched.
    fn add_conn(&mut self, sock: Socket, registry: &Registry) -> Option<Key> {
        let key = self.conns.insert(Conn::new(sock, self.rbuf_size));
        let registered = match self.conns.get_mut(key) {
            Some(conn) => registry.register(
                &mut conn.sock,
                token::token(Source::Conn(key)),
                // Writability is watched only while output waits (Conn::watch_writable).
                Interest::READABLE,
            ),
            None => Ok(()),
        };
        if let Err(err) = registered {
            log::warn!("[http] cannot register a connection: {err}");
            self.conns.remove(key);
            return None;
        }
        Some(key)
    }

    /// Marks every connection that is between requests to close once its output is written;
    /// returns them, to be flushed.
    pub(in crate::server) fn close_idle(&mut self) -> Vec<Key> {
        let mut idle = Vec::new();
        for key in self.conns.keys() {
            if let Some(conn) = self.conns.get_mut(key)
                && conn.req.is_none()
                && conn.linger.is_none()
                && !conn.has_parsable_input()
            {
                conn.close_when_flushed = true;
                idle.push(key);
            }
        }
        idle
    }
}

/// Creates the admin socket, mode 0600. A socket file left by a runtime that is gone is
/// replaced; one that still answers belongs to a live runtime sharing this work directory,
/// which is refused.
fn bind_admin(path: &std::path::Path) -> Result<UnixListener, ServerError> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::Admin(format!(
                "another noslate runtime is serving {}; give each runtime its own NOSLATE_WORKDIR",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| {
            ServerError::Admin(format!("cannot remove stale {}: {e}", path.display()))
        })?;
    }
    // Never connectable by another user, not even between bind and chmod: workers run as one.
    crate::turf::privilege::bind_private_socket(path)
        .map_err(|e| ServerError::Admin(format!("cannot create {}: {e}", path.display())))
}

/// Whether an accept failed for want of file descriptors (the process's or the system's).
fn is_fd_exhaustion(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
