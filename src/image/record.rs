//! The record kinds: their numbers, names and size limits, the [`Record`]
//! trait every typed record implements, and [`AnyRecord`], which decodes any
//! known kind (for `crest show` and the fuzzers).
//!
//! Kind numbers are never reused. A reader skips kinds it does not know
//! unless the frame says MUST_UNDERSTAND (see [`super::stream`]).

use super::codec::{Reader, Writer};
use super::stream::{END_KIND, RawRecord};
use super::value::Value;
use super::{ImageError, MAX_RECORD};

/// A typed record: its kind number, its name and its codec.
pub trait Record: Sized {
    /// The kind number in the frame.
    const KIND: u16;
    /// The name in `crest show` and in errors.
    const NAME: &'static str;
    /// Appends the payload.
    fn encode(&self, w: &mut Writer);
    /// Decodes the payload, ignoring trailing fields it does not know.
    fn decode(r: &mut Reader) -> Result<Self, ImageError>;
    /// Every field, for `crest show`.
    fn to_value(&self) -> Value;
}

/// Declares the table of kinds once: number, name, limit and type.
macro_rules! kinds {
    ($($variant:ident = $kind:literal, $name:literal, $limit:expr, $ty:ty;)*) => {
        /// Any known record, decoded.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyRecord {
            $(
                #[doc = concat!("A `", $name, "` record.")]
                $variant($ty),
            )*
            /// A kind this crest does not know (skipped).
            Unknown(u16),
        }

        /// The name of a record kind.
        pub fn name(kind: u16) -> &'static str {
            match kind {
                $($kind => $name,)*
                END_KIND => "end",
                _ => "unknown",
            }
        }

        /// The largest payload a record of `kind` may have.
        pub fn max_len(kind: u16) -> u32 {
            match kind {
                $($kind => $limit,)*
                END_KIND => 1024,
                _ => MAX_RECORD,
            }
        }

        /// Whether this crest knows `kind`.
        pub fn is_known(kind: u16) -> bool {
            [$($kind),*].contains(&kind)
        }

        $(
            const _: () = assert!(<$ty as Record>::KIND == $kind);
        )*

        impl AnyRecord {
            /// Decodes a framed record of any kind.
            pub fn decode(raw: &RawRecord, file: &str) -> Result<AnyRecord, ImageError> {
                Ok(match raw.kind {
                    $($kind => AnyRecord::$variant(raw.decode(file)?),)*
                    k => AnyRecord::Unknown(k),
                })
            }

            /// The record's kind number.
            pub fn kind(&self) -> u16 {
                match self {
                    $(AnyRecord::$variant(_) => $kind,)*
                    AnyRecord::Unknown(k) => *k,
                }
            }

            /// Appends the payload (nothing for an unknown kind).
            pub fn encode(&self, w: &mut Writer) {
                match self {
                    $(AnyRecord::$variant(r) => r.encode(w),)*
                    AnyRecord::Unknown(_) => {}
                }
            }

            /// The record's name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(AnyRecord::$variant(_) => $name,)*
                    AnyRecord::Unknown(_) => "unknown",
                }
            }

            /// Every field, for `crest show`.
            pub fn to_value(&self) -> Value {
                match self {
                    $(AnyRecord::$variant(r) => r.to_value(),)*
                    AnyRecord::Unknown(k) => Value::Obj(vec![("kind", Value::U(*k as u64))]),
                }
            }
        }
    };
}

kinds! {
    Inventory = 1, "inventory", 1 << 20, super::inventory::Inventory;
    Process = 2, "process", MAX_RECORD, super::pstree::Process;
    ThreadCore = 3, "thread-core", 8 << 20, super::thread::ThreadCore;
    TaskMisc = 4, "task-misc", 64 << 10, super::task::TaskMisc;
    Creds = 5, "creds", 1 << 20, super::creds::Creds;
    Rlimits = 6, "rlimits", 4 << 10, super::rlimits::Rlimits;
    Sigactions = 7, "sigactions", 8 << 10, super::sigactions::Sigactions;
    Itimers = 8, "itimers", 1 << 10, super::timers::Itimers;
    PosixTimer = 9, "posix-timer", 1 << 10, super::timers::PosixTimer;
    SharedSignals = 10, "shared-signals", MAX_RECORD, super::signals::SharedSignals;
    Mm = 11, "mm", 64 << 10, super::mm::Mm;
    Vma = 12, "vma", 16 << 10, super::vma::Vma;
    Fd = 13, "fd", 16 << 10, super::files::Fd;
    PipeData = 14, "pipe-data", MAX_RECORD, super::files::PipeData;
    PagemapHead = 15, "pagemap-head", 16 << 10, super::pagemap::PagemapHead;
    PageRun = 16, "page-run", 1 << 10, super::pagemap::PageRun;
    FdDesc = 20, "fd-desc", 1 << 10, super::files::FdDesc;
    ProcessComm = 21, "process-comm", 1 << 10, super::pstree::ProcessComm;
    GhostData = 40, "ghost-data", MAX_RECORD, super::files::GhostData;
    UnixQueue = 41, "unix-queue", MAX_RECORD, super::files::UnixQueue;
    FileLock = 42, "file-lock", 1 << 10, super::files::FileLock;
    Ctty = 50, "ctty", 1 << 10, super::tty::Ctty;
    PtyQueue = 51, "pty-queue", 1 << 20, super::tty::PtyQueue;
    UnixFlightFile = 55, "unix-flight-file", 1 << 10, super::files::UnixFlightFile;
    MemfdObject = 60, "memfd-object", 1 << 10, super::files::MemfdObject;
}

/// Every known kind number, in order.
pub fn known_kinds() -> impl Iterator<Item = u16> {
    (1..=u16::MAX).filter(|k| is_known(*k))
}

/// Encodes `rec` to a payload (for tests and the fuzzers' seeds).
pub fn to_payload<R: Record>(rec: &R) -> Vec<u8> {
    let mut w = Writer::new();
    rec.encode(&mut w);
    w.as_bytes().to_vec()
}

/// Decodes a bare payload of `kind` (for the fuzzers and tests).
pub fn decode_payload(kind: u16, payload: &[u8]) -> Result<AnyRecord, ImageError> {
    let raw = RawRecord {
        kind,
        flags: 0,
        offset: 0,
        payload: payload.to_vec(),
    };
    AnyRecord::decode(&raw, "payload")
}
