//! The page server: `crest page-server` in its own network namespace,
//! joined to the host by a veth pair, receives the pages of a `crest dump
//! --page-server` of the memory victim (tests/restore/memory.rs); the
//! metadata is then put next to them and the restored victim checks every
//! byte of its memory itself. And the refusals: a stream that is cut short
//! or malformed at any point leaves no file behind, neither complete-looking
//! nor temporary, and `crest page-server` exits 1.

// A victim's failure reason lives inline in the Err (Msg, 240 bytes).
#![allow(clippy::result_large_err)]

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(crate::common::victim::Msg::new(format_args!($($fmt)+)));
        }
    };
}

mod common;
#[path = "restore/memory.rs"]
#[allow(dead_code)]
mod memory;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child as Process, Command, Stdio};
use std::time::{Duration, Instant};

use common::victim::{Victim, crest, scratch};
use crest::image::crc::crc32c;
use crest::pageserver::proto::{CLOSE, COMMIT, DATA, DATA_CRC, Frame, HELLO, OPEN, VERSION};
use crest::pageserver::server::receive;

const HOST_IP: &str = "10.231.77.1";
const SERVER_IP: &str = "10.231.77.2";

fn sh(cmd: &str) {
    let s = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(s.success(), "{cmd}");
}

/// `crest page-server` in a new network namespace, reachable at
/// SERVER_IP:port through a veth pair; removed (namespace, veth) on drop.
struct NetnsServer {
    child: Process,
    err: std::path::PathBuf,
    veth: String,
}

impl NetnsServer {
    fn start(dir: &Path, port: u16, veth: &str) -> NetnsServer {
        let go = dir.with_extension("go");
        let _ = std::fs::remove_file(&go);
        let err = dir.with_extension("stderr");
        let script = format!(
            "while [ ! -e {go} ]; do sleep 0.01; done; ip link set lo up && \
             ip addr add {SERVER_IP}/24 dev {veth}p && ip link set {veth}p up && \
             exec {crest} -v3 page-server -D {dir} --address {SERVER_IP} --port {port}",
            go = go.display(),
            crest = env!("CARGO_BIN_EXE_crest"),
            dir = dir.display(),
        );
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let _ = Command::new("ip").args(["link", "del", veth]).status();
        let pid = child.id();
        // The peer end must land in the new namespace, not in ours.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let start = Instant::now();
        while std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()
            .as_ref()
            == Some(&ours)
        {
            assert!(start.elapsed() < Duration::from_secs(10), "no new netns");
            std::thread::sleep(Duration::from_millis(2));
        }
        sh(&format!(
            // busybox ip (the qemu lanes) ignores the peer's name and
            // netns: the peer is found by its link, renamed, then moved.
            "ip link add {veth} type veth peer name {veth}p && \
             if ! ip link show {veth}p >/dev/null 2>&1; then \
               peer=$(ip -o link | awk -F'[:@ ]+' '$3 == \"{veth}\" {{print $2}}'); \
               ip link set dev \"$peer\" name {veth}p; fi && \
             ip link set {veth}p netns {pid} && ip addr add {HOST_IP}/24 dev {veth} && ip link set {veth} up"
        ));
        std::fs::write(&go, b"").unwrap();
        let s = NetnsServer {
            child,
            err,
            veth: veth.into(),
        };
        s.wait_listening();
        s
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn wait_listening(&self) {
        let start = Instant::now();
        while !self.stderr().contains("listening on") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "page server not up: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's exit code (bounded wait).
    fn code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(start.elapsed() < Duration::from_secs(30), "server hangs");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_dump_sent_to_a_page_server_in_another_netns_restores() {
    let dir = scratch("page-server-netns");
    memory::prepare(&dir);
    let received = dir.join("received");
    std::fs::create_dir_all(&received).unwrap();
    let mut server = NetnsServer::start(&received, 27_913, "vcrps0");
    let mut v = Victim::spawn(&dir, memory::victim);
    let img = dir.join("img");
    let pid = v.pid.to_string();
    let out = crest(&[
        "dump",
        "-t",
        &pid,
        "-D",
        img.to_str().unwrap(),
        "--page-server",
        "--address",
        SERVER_IP,
        "--port",
        "27913",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "dump: {err}\nserver: {}",
        server.stderr()
    );
    assert_eq!(server.code(), Some(0), "server: {}", server.stderr());
    let status = v.reap();
    assert!(libc::WIFSIGNALED(status), "dump kills: {status:#x}");
    // The page files are on the server only, complete; the rest is local.
    let want = [format!("pagemap-{pid}.img"), format!("pages-{pid}.img")];
    assert_eq!(names(&received), want);
    let local = names(&img);
    assert!(local.iter().all(|n| !want.contains(n)), "{local:?}");
    assert!(local.contains(&"inventory.img".to_string()), "{local:?}");
    // The destination holds everything, then the victim checks itself.
    for n in &local {
        std::fs::copy(img.join(n), received.join(n)).unwrap();
    }
    let show = crest(&["show", received.to_str().unwrap()]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stdout)
    );
    let mut r = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["restore", "-D", received.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    v.adopt();
    v.go();
    let report = v.wait_report(|| match r.try_wait().unwrap() {
        Some(s) if !s.success() => Some(format!("crest restore: {s}")),
        _ => None,
    });
    assert_eq!(report.trim(), "pass", "restored victim");
    assert!(r.wait().unwrap().success());
    v.forget();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_dump_without_its_page_server_fails_and_the_victim_runs_on() {
    let dir = scratch("page-server-absent");
    memory::prepare(&dir);
    let mut v = Victim::spawn(&dir, memory::victim);
    let img = dir.join("img");
    let pid = v.pid.to_string();
    let args = [
        "dump",
        "-t",
        &pid,
        "-D",
        img.to_str().unwrap(),
        "--page-server",
    ];
    let out = crest(&[&args[..], &["--address", "127.0.0.1", "--port", "1"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("page server at 127.0.0.1:1"), "{err}");
    assert!(!img.join("inventory.img").exists());
    v.go();
    assert_eq!(v.wait_report(|| None).trim(), "pass");
    assert_eq!(v.reap(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection for `receive`: the client's bytes, and what the server
/// answers.
struct Duplex {
    input: std::io::Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn frame(out: &mut Vec<u8>, kind: u16, flags: u16, file: u32, payload: &[u8]) {
    let f = Frame {
        kind,
        flags,
        file,
        len: payload.len() as u64,
    };
    out.extend_from_slice(&f.encode());
    out.extend_from_slice(payload);
}

const INDEX: &[u8] = b"an index, sent with its CRC";

fn page_data() -> Vec<u8> {
    (0..3 * 4096).map(|i| (i * 13 % 251) as u8).collect()
}

/// A complete stream of two files, as `crest dump --page-server` sends.
fn good_stream() -> Vec<u8> {
    let mut s = Vec::new();
    let mut hello = VERSION.to_le_bytes().to_vec();
    hello.extend_from_slice(&4096u32.to_le_bytes());
    frame(&mut s, HELLO, 0, 0, &hello);
    frame(&mut s, OPEN, 0, 1, b"pagemap-7.img");
    frame(&mut s, OPEN, 0, 2, b"pages-7.img");
    let mut with_crc = INDEX.to_vec();
    with_crc.extend_from_slice(&crc32c(INDEX).to_le_bytes());
    frame(&mut s, DATA, DATA_CRC, 1, &with_crc);
    let pages = page_data();
    frame(&mut s, DATA, 0, 2, &pages[..4096]);
    frame(&mut s, DATA, 0, 2, &pages[4096..]);
    frame(&mut s, CLOSE, 0, 1, &(INDEX.len() as u64).to_le_bytes());
    frame(&mut s, CLOSE, 0, 2, &(pages.len() as u64).to_le_bytes());
    frame(&mut s, COMMIT, 0, 0, &2u32.to_le_bytes());
    s
}

fn feed(dir: &Path, stream: Vec<u8>) -> Result<Vec<String>, String> {
    let conn = Duplex {
        input: std::io::Cursor::new(stream),
        output: Vec::new(),
    };
    receive(conn, dir)
        .map(|r| r.files)
        .map_err(|e| e.to_string())
}

#[test]
fn a_complete_stream_is_committed_byte_for_byte() {
    let dir = scratch("page-server-good");
    let files = feed(&dir, good_stream()).expect("committed");
    assert_eq!(files, ["pagemap-7.img", "pages-7.img"]);
    assert_eq!(names(&dir), ["pagemap-7.img", "pages-7.img"]);
    assert_eq!(std::fs::read(dir.join("pagemap-7.img")).unwrap(), INDEX);
    assert_eq!(std::fs::read(dir.join("pages-7.img")).unwrap(), page_data());
    // A second stream may not replace what is there.
    let err = feed(&dir, good_stream()).unwrap_err();
    assert!(err.contains("already in"), "{err}");
    assert_eq!(std::fs::read(dir.join("pages-7.img")).unwrap(), page_data());
}

#[test]
fn a_stream_cut_anywhere_is_refused_and_leaves_nothing() {
    let dir = scratch("page-server-cut");
    let good = good_stream();
    for cut in (0..good.len()).step_by(97).chain([good.len() - 1]) {
        let err = feed(&dir, good[..cut].to_vec()).unwrap_err();
        assert!(err.contains("refused"), "cut at {cut}: {err}");
        assert!(names(&dir).is_empty(), "cut at {cut}: {:?}", names(&dir));
    }
}

#[test]
fn malformed_streams_are_refused_and_leave_nothing() {
    let dir = scratch("page-server-malformed");
    let good = good_stream();
    let index_at = good.windows(INDEX.len()).position(|w| w == INDEX).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for (what, at) in [
        ("magic", 0),
        ("a header", 37),
        ("the index data", index_at + 3),
    ] {
        let mut s = good.clone();
        s[at] ^= 0x40;
        cases.push((what, s));
    }
    let mut bad_name = Vec::new();
    frame(&mut bad_name, HELLO, 0, 0, &[1, 0, 0, 0, 0, 16, 0, 0]);
    frame(&mut bad_name, OPEN, 0, 1, b"../escape.img");
    cases.push(("a name with a directory", bad_name));
    let mut short = good_stream();
    let close_size = (INDEX.len() as u64).to_le_bytes();
    let at = short.windows(8).rposition(|w| w == close_size).unwrap();
    short[at..at + 8].copy_from_slice(&(INDEX.len() as u64 + 1).to_le_bytes());
    // The CLOSE header's CRC covers only the header: the size is checked.
    cases.push(("a size that does not match", short));
    let mut count = good_stream();
    let n = count.len();
    count[n - 4] = 3;
    cases.push(("a wrong file count", count));
    let mut version = good_stream();
    version[24] = 9;
    cases.push(("another version", version));
    for (what, stream) in cases {
        let err = feed(&dir, stream).expect_err(what);
        assert!(err.contains("refused"), "{what}: {err}");
        assert!(names(&dir).is_empty(), "{what}: {:?}", names(&dir));
    }
}

#[test]
fn crest_page_server_exits_1_on_a_cut_stream() {
    let dir = scratch("page-server-cli-cut");
    let recv = dir.join("recv");
    let mut server = Command::new(env!("CARGO_BIN_EXE_crest"))
        .args(["-v3", "page-server", "-D", recv.to_str().unwrap()])
        .args(["--address", "127.0.0.1", "--port", "27914"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut conn = loop {
        match std::net::TcpStream::connect(("127.0.0.1", 27_914)) {
            Ok(c) => break c,
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("server never listened: {e}"),
        }
    };
    let good = good_stream();
    conn.write_all(&good[..good.len() - 30]).unwrap();
    drop(conn);
    let status = server.wait().unwrap();
    let mut err = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(names(&recv).is_empty(), "{:?}", names(&recv));
}
