//! Whether a TCP client on this machine is one of the runtime's own descendants (a worker, a
//! seed, a spare, or anything they started).
//!
//! FC's lifecycle hooks (`/initialize`, `/pre-freeze`, `/pre-stop`) come from the platform.
//! A function can reach the FC port over loopback like any other client, and a `/pre-stop`
//! from it would stop the runtime for everyone, so hooks from the runtime's descendants are
//! refused. The check reads `/proc`: the client socket's inode from `/proc/net/tcp{,6}`, the
//! processes holding that inode, and their parent chains. Every process a worker starts stays
//! below the runtime in that chain, even after double-forking, because the runtime is a child
//! subreaper that adopts orphaned descendants.
//!
//! It is only done for hooks from a local address, which the platform never uses, so the
//! scan's cost never touches invocations.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// Where a local client comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A process below the runtime holds the client socket: this pid.
    Descendant(i32),
    /// No process below the runtime holds it.
    Outside,
    /// No process holds the client's end any more (it closed or handed its socket off): nobody
    /// is left to read an answer, so nothing is lost by refusing it.
    Gone,
    /// `/proc` cannot be read here (the reason).
    Untraceable(String),
}

/// Whether `peer` (seen from a connection accepted on `local`) is on this machine: loopback,
/// or the connection's own address.
pub fn is_local_peer(local: SocketAddr, peer: SocketAddr) -> bool {
    let ip = canonical(peer.ip());
    ip.is_loopback() || ip == canonical(local.ip())
}

/// Traces the client socket of a connection accepted on `local` from `peer` to the process
/// holding it, and tells whether that process descends from `runtime_pid`.
pub fn trace(local: SocketAddr, peer: SocketAddr, runtime_pid: i32) -> Origin {
    trace_in(Path::new("/proc"), local, peer, runtime_pid)
}

fn trace_in(proc: &Path, local: SocketAddr, peer: SocketAddr, runtime_pid: i32) -> Origin {
    let inode = match client_inode(proc, local, peer) {
        Err(why) => return Origin::Untraceable(why),
        Ok(None) => return Origin::Gone,
        Ok(Some(inode)) => inode,
    };
    let holders = holders_of(proc, inode);
    if holders.is_empty() {
        return Origin::Gone;
    }
    let parents = ParentMap::read(proc);
    match holders
        .iter()
        .find(|&&pid| parents.descends_from(pid, runtime_pid))
    {
        Some(&pid) => Origin::Descendant(pid),
        None => Origin::Outside,
    }
}

/// Whether process `pid` descends from the runtime `runtime_pid` other than through
/// `trusted` (the user's gateway, which runs outside the sandbox and may use the admin socket
/// and the hooks): a worker, or anything a worker started.
pub fn is_workers_process(pid: i32, runtime_pid: i32, trusted: Option<i32>) -> bool {
    let parents = ParentMap::read(Path::new("/proc"));
    parents.descends_from(pid, runtime_pid)
        && !trusted.is_some_and(|root| pid == root || parents.descends_from(pid, root))
}

/// The inode of the client's end: the `/proc/net/tcp{,6}` line whose local address is `peer`
/// and whose remote address is `local`. `None` when no open socket has it (a closed socket
/// lingers in the table with inode 0); an error when neither table can be read.
fn client_inode(proc: &Path, local: SocketAddr, peer: SocketAddr) -> Result<Option<u64>, String> {
    let mut readable = false;
    for table in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc.join(table)) else {
            continue;
        };
        readable = true;
        let found = text.lines().skip(1).find_map(|line| {
            let entry = parse_tcp_line(line)?;
            (same(entry.local, peer) && same(entry.remote, local) && entry.inode != 0)
                .then_some(entry.inode)
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    if readable {
        Ok(None)
    } else {
        Err(format!("cannot read {}/net/tcp", proc.display()))
    }
}

/// One socket of `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpEntry {
    local: SocketAddr,
    remote: SocketAddr,
    inode: u64,
}

/// Parses one line of `/proc/net/tcp` or `/proc/net/tcp6`: `sl local rem st ... uid timeout
/// inode ...`, addresses in hex as the kernel stores them (each 32-bit word in host order).
fn parse_tcp_line(line: &str) -> Option<TcpEntry> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(TcpEntry {
        local: parse_hex_addr(fields.get(1)?)?,
        remote: parse_hex_addr(fields.get(2)?)?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

fn parse_hex_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| {
            let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
            Some(word.to_ne_bytes())
        })
        .collect::<Option<Vec<[u8; 4]>>>()?;
    let ip = match words.as_slice() {
        [a] => IpAddr::V4(Ipv4Addr::from(*a)),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, word) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word[..]);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// IPv4-mapped IPv6 addresses as IPv4, so that a dual-stack client matches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

/// Pids with an fd on socket `inode`.
fn holders_of(proc: &Path, inode: u64) -> Vec<i32> {
    let wanted = format!("socket:[{inode}]");
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_dir(proc.join(pid.to_string()).join("fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.as_os_str() == wanted.as_str())
                })
            })
        })
        .collect()
}

/// Every process's parent, read once.
struct ParentMap(std::collections::HashMap<i32, i32>);

impl ParentMap {
    fn read(proc: &Path) -> ParentMap {
        let mut map = std::collections::HashMap::new();
        if let Ok(entries) = std::fs::read_dir(proc) {
            for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
                if let Some(ppid) = std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
                    .ok()
                    .and_then(|stat| parent_from_stat(&stat))
                {
                    map.insert(pid, ppid);
                }
            }
        }
        ParentMap(map)
    }

    /// Whether `ancestor` is a strict ancestor of `pid`.
    fn descends_from(&self, pid: i32, ancestor: i32) -> bool {
        let mut seen = HashSet::new();
        let mut current = pid;
        while let Some(&parent) = self.0.get(&current) {
            if parent == ancestor {
                return true;
            }
            if parent <= 1 || !seen.insert(parent) {
                return false;
            }
            current = parent;
        }
        false
    }
}

/// The parent pid from a `/proc/<pid>/stat` line; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parent_from_stat(stat: &str) -> Option<i32> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_and_ipv6_lines() {
        let v4 = "   3: 0100007F:4A38 0100007F:C9EA 06 00000000:00000000 03:00000701 00000000     0        0 4242 3 00000000462d5d06";
        let entry = parse_tcp_line(v4).expect("an IPv4 line");
        assert_eq!(entry.local, "127.0.0.1:19000".parse().expect("addr"));
        assert_eq!(entry.remote, "127.0.0.1:51690".parse().expect("addr"));
        assert_eq!(entry.inode, 4242);
        let v6 = "   0: 0000000000000000FFFF00000100007F:9C40 0000000000000000FFFF00000100007F:2328 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 0 10 -1";
        let entry = parse_tcp_line(v6).expect("an IPv6 line");
        assert!(same(entry.local, "127.0.0.1:40000".parse().expect("addr")));
        assert!(same(entry.remote, "127.0.0.1:9000".parse().expect("addr")));
        assert_eq!(entry.inode, 77);
        assert_eq!(parse_tcp_line("  sl  local_address rem_address"), None);
        assert_eq!(parse_tcp_line("0: zz:1 00:0 0 0 0 0 0 0 1"), None);
    }

    #[test]
    fn local_peers_are_loopback_or_the_connections_own_address() {
        let local: SocketAddr = "10.0.0.5:9000".parse().expect("addr");
        assert!(is_local_peer(
            local,
            "127.0.0.1:5000".parse().expect("addr")
        ));
        assert!(is_local_peer(local, "10.0.0.5:5000".parse().expect("addr")));
        assert!(is_local_peer(
            local,
            "[::ffff:127.0.0.1]:5000".parse().expect("addr")
        ));
        assert!(!is_local_peer(
            local,
            "10.0.0.9:5000".parse().expect("addr")
        ));
    }

    #[test]
    fn parent_chains_end_at_init_and_survive_cycles() {
        assert_eq!(parent_from_stat("12 (a (b) c) S 7 12 12 0"), Some(7));
        let map = ParentMap(
            [(30, 20), (20, 10), (10, 1), (5, 6), (6, 5)]
                .into_iter()
                .collect(),
        );
        assert!(map.descends_from(30, 10));
        assert!(map.descends_from(30, 20));
        assert!(!map.descends_from(10, 30));
        assert!(!map.descends_from(5, 10));
    }

    #[test]
    fn traces_a_socket_of_this_process_to_its_parent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("local");
        let client = std::net::TcpStream::connect(local).expect("connect");
        let peer = client.local_addr().expect("peer");
        let me = std::process::id() as i32;
        let parent = ParentMap::read(Path::new("/proc"))
            .0
            .get(&me)
            .copied()
            .expect("own parent");
        assert_eq!(trace(local, peer, parent), Origin::Descendant(me));
        assert_eq!(trace(local, peer, me), Origin::Outside);
        drop(client);
        assert_eq!(trace(local, peer, parent), Origin::Gone);
        assert!(matches!(
            trace_in(Path::new("/nonexistent"), local, peer, parent),
            Origin::Untraceable(_)
        ));
    }
}
