//! A worker's body pipe: request-body bytes on their way from a client's TCP socket to the
//! worker's protocol channel, moved inside the kernel with splice(2) (socket → pipe → channel)
//! instead of being copied into the runtime and out again.
//!
//! The pipe holds at most one frame's payload at a time. Its REQUEST_BODY frame header goes
//! through the worker's write queue like any frame, and the payload follows it from here
//! (`Worker::flush`), so frames stay in order.

use crate::sys;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The size asked of the kernel for a body pipe: a protocol channel's worth, so that one
/// frame can carry what a credit window allows. Where the kernel refuses (an unprivileged
/// runtime past `fs.pipe-user-pages-soft`), the pipe keeps its default size, and frames are
/// that much smaller.
pub const BODY_PIPE_BYTES: usize = crate::turf::spawn::PROTOCOL_CHANNEL_BYTES;

/// The pipe, and how many bytes it holds for the worker's channel.
#[derive(Debug)]
pub struct BodyPipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    held: usize,
}

impl BodyPipe {
    /// A new, empty pipe.
    pub fn new() -> io::Result<Self> {
        let (read, write) = sys::nonblocking_pipe()?;
        // A pipe starts with 16 pages, whatever the page size; 64 KiB is the floor for frames.
        let capacity = sys::set_pipe_size(write.as_fd(), BODY_PIPE_BYTES).unwrap_or(64 * 1024);
        Ok(BodyPipe {
            read,
            write,
            capacity,
            held: 0,
        })
    }

    /// Bytes in the pipe, not yet moved to the channel.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Moves up to `len` bytes from `source` into the pipe, which must be empty (a full pipe
    /// and an empty source would both say `WouldBlock`). Returns the bytes moved; 0 is the end
    /// of `source`'s stream.
    pub fn take_from(&mut self, source: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        debug_assert_eq!(self.held, 0, "splicing into a pipe that still holds bytes");
        let n = sys::splice(source, self.write.as_fd(), len.min(self.capacity))?;
        self.held = n;
        Ok(n)
    }

    /// Moves what the pipe holds to `sink`, as much as `sink` takes now. Returns whether the
    /// pipe is empty.
    pub fn give_to(&mut self, sink: BorrowedFd<'_>) -> io::Result<bool> {
        while self.held > 0 {
            match sys::splice(self.read.as_fd(), sink, self.held) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.held -= n.min(self.held),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    #[test]
    fn bytes_move_from_a_socket_through_the_pipe_to_a_channel_in_order() {
        let (mut client, server) = connected();
        let (sending, receiving) = sys::one_way_stream_pair().unwrap();
        let mut pipe = BodyPipe::new().unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).unwrap();
        let mut received = Vec::new();
        let mut channel = std::fs::File::from(receiving);
        while received.len() < sent.len() {
            match pipe.take_from(server.as_fd(), sent.len() - received.len()) {
                Ok(n) => assert!(n > 0),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait_readable(server.as_fd(), std::time::Duration::from_secs(5)).unwrap();
                    continue;
                }
                Err(err) => panic!("{err}"),
            }
            let held = pipe.held();
            assert!(pipe.give_to(sending.as_fd()).unwrap());
            assert_eq!(pipe.held(), 0);
            let mut piece = vec![0; held];
            channel.read_exact(&mut piece).unwrap();
            received.extend_from_slice(&piece);
        }
        assert_eq!(received, sent);
    }

    #[test]
    fn a_source_with_nothing_to_read_would_block_and_a_closed_one_ends() {
        let (client, server) = connected();
        let mut pipe = BodyPipe::new().unwrap();
        let err = pipe.take_from(server.as_fd(), 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(pipe.held(), 0);
        client.shutdown(std::net::Shutdown::Write).unwrap();
        sys::wait_readable(server.as_fd(), std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(pipe.take_from(server.as_fd(), 1024).unwrap(), 0);
    }

    /// Moves everything from `source` to `sink` through `pipe` until `source` ends, retrying
    /// while either would block. Returns whether a `give_to` ever found the channel full.
    fn relay(pipe: &mut BodyPipe, source: BorrowedFd<'_>, sink: BorrowedFd<'_>) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut found_full = false;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the relay made no progress"
            );
            if pipe.held() > 0 {
                if !pipe.give_to(sink).unwrap() {
                    found_full = true;
                    std::thread::yield_now();
                }
                continue;
            }
            match pipe.take_from(source, 1 << 20) {
                Ok(0) => return found_full,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    sys::wait_readable(source, std::time::Duration::from_secs(5)).unwrap();
                }
                Err(err) => panic!("{err}"),
            }
        }
    }

    #[test]
    fn a_full_channel_keeps_the_rest_in_the_pipe_until_it_takes_more() {
        const TOTAL: usize = 4 << 20;
        let (mut client, server) = connected();
        let (sending, receiving) = sys::one_way_stream_pair().unwrap();
        sys::set_socket_buffer(sending.as_fd(), libc::SO_SNDBUF, 4096).unwrap();
        let sending = std::os::unix::net::UnixStream::from(sending);
        sending.set_nonblocking(true).unwrap();
        let writer = std::thread::spawn(move || {
            let piece: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
            for _ in 0..TOTAL / piece.len() {
                client.write_all(&piece).unwrap();
            }
        });
        // A slow reader: the channel fills, and the pipe keeps what it could not take.
        let reader = std::thread::spawn(move || {
            let mut channel = std::fs::File::from(receiving);
            let (mut received, mut at) = (0usize, 0u32);
            let mut piece = [0u8; 4096];
            loop {
                let n = channel.read(&mut piece).unwrap();
                if n == 0 {
                    return received;
                }
                for &b in &piece[..n] {
                    assert_eq!(b, (at % 253) as u8, "byte {received}");
                    at = (at + 1) % (64 * 1024);
                    received += 1;
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        });
        let mut pipe = BodyPipe::new().unwrap();
        let found_full = relay(&mut pipe, server.as_fd(), sending.as_fd());
        writer.join().unwrap();
        drop(sending);
        assert_eq!(reader.join().unwrap(), TOTAL);
        assert!(
            found_full,
            "a 4 KiB channel with a slow reader never filled"
        );
    }
}
