//! The front end's state: the FC listener, the admin socket, every client connection, the HTTP
//! limits, the `Date` cache, FC's hook log and request ids.

use super::conn::Conn;
use crate::fc::{FcLog, RequestIds};
use crate::http::date::DateCache;
use crate::http::request::RequestLimits;
use crate::reactor::slab::{Key, Slab};
use mio::net::{TcpListener, UnixListener};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The listeners and the connections they accepted.
pub(super) struct FrontEnd {
    pub(super) listener: TcpListener,
    /// The address actually bound (useful with port 0).
    pub(super) local_addr: SocketAddr,
    pub(super) admin: UnixListener,
    pub(super) admin_path: PathBuf,
    pub(super) conns: Slab<Conn>,
    pub(super) request_limits: RequestLimits,
    /// A connection's read buffer size: the largest allowed head plus a little.
    pub(super) rbuf_size: usize,
    pub(super) ids: RequestIds,
    pub(super) fc_log: FcLog,
    pub(super) date: DateCache,
    /// Unsent response bytes all connections hold (`http.maxBufferedBytes`).
    pub(super) buffered_output: usize,
    /// An fd kept open so that, out of fds, one can be given back to accept and refuse a client.
    pub(super) reserve_fd: Option<std::fs::File>,
}

impl FrontEnd {
    /// Marks every connection that is between requests to close once its output is written;
    /// returns them, to be flushed.
    pub(super) fn close_idle(&mut self) -> Vec<Key> {
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
