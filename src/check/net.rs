//! Probes of TCP repair mode on a loopback connection: how dump reads and
//! restore rebuilds established and half-closed TCP connections.
//!
//! The sockets are closed in repair mode (which drops them silently) or with
//! a zero linger (a reset), so no connection lingers in TIME_WAIT.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;

use crate::sys::Errno;
use crate::sys::net::{self as n, SOL_TCP};

use super::probe::{Fail, ProbeResult, SysExt, expect};

/// A loopback TCP connection (client, server) whose server side resets on
/// close instead of lingering.
pub(super) fn connected() -> Result<(TcpStream, TcpStream), Fail> {
    let listener = TcpListener::bind("127.0.0.1:0").ctx("bind(127.0.0.1)")?;
    let addr = listener.local_addr().ctx("getsockname")?;
    let client = TcpStream::connect(addr).map_err(|e| {
        if e.raw_os_error() == Some(Errno::ENETUNREACH.into_raw()) {
            Fail::error(
                "connect(127.0.0.1) failed with ENETUNREACH: the loopback interface is down".into(),
            )
        } else {
            Fail::from_io("connect(127.0.0.1)", &e)
        }
    })?;
    let (server, _) = listener.accept().ctx("accept")?;
    no_linger(&server)?;
    Ok((client, server))
}

/// linger {on, 0}: close sends a reset instead of waiting in TIME_WAIT, so
/// a probe leaves no connection state behind in the kernel.
pub(super) fn no_linger(s: &TcpStream) -> Result<(), Fail> {
    let linger = [1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat();
    n::setsockopt(s.as_fd(), n::SOL_SOCKET, n::SO_LINGER, &linger).ctx("setsockopt(SO_LINGER)")
}

/// TCP_REPAIR on, then the window and the send queue sequence read back.
pub fn tcp_repair() -> ProbeResult {
    let (client, _server) = connected()?;
    let fd = client.as_fd();
    n::setsockopt_int(fd, SOL_TCP, n::TCP_REPAIR, 1).ctx("setsockopt(TCP_REPAIR)")?;
    let mut window = [0u8; 20];
    let len = n::getsockopt(fd, SOL_TCP, n::TCP_REPAIR_WINDOW, &mut window)
        .ctx("getsockopt(TCP_REPAIR_WINDOW)")?;
    expect(len == 20, || {
        format!("TCP_REPAIR_WINDOW returned {len} bytes, expected 20")
    })?;
    n::setsockopt_int(fd, SOL_TCP, n::TCP_REPAIR_QUEUE, n::TCP_SEND_QUEUE)
        .ctx("setsockopt(TCP_REPAIR_QUEUE)")?;
    let mut seq = [0u8; 4];
    n::getsockopt(fd, SOL_TCP, n::TCP_QUEUE_SEQ, &mut seq).ctx("getsockopt(TCP_QUEUE_SEQ)")?;
    Ok("repair mode, window and send sequence of a loopback connection".into())
}

/// TCP_REPAIR on a connection whose write side was shut down.
pub fn tcp_half_closed() -> ProbeResult {
    let (client, _server) = connected()?;
    client.shutdown(Shutdown::Write).ctx("shutdown(SHUT_WR)")?;
    n::setsockopt_int(client.as_fd(), SOL_TCP, n::TCP_REPAIR, 1).ctx("setsockopt(TCP_REPAIR)")?;
    Ok("repair mode on a half-closed loopback connection".into())
}
