//! An fd kind made of plain fields is described once, as its list of
//! fields in wire order ([`Field`]), and both its encoding and its
//! `crest show` values follow from that list (anon.rs, kinds.rs), so the
//! two cannot drift apart. Decoding stays by hand: it builds the variant.
//!
//! `crest show` puts the kind first, the path or name next (what a reader
//! looks for), then the other fields in wire order.

use super::FileId;
use crate::image::codec::Writer;
use crate::image::value::Value;

/// One field of an fd record: its wire type and how `crest show` prints it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Field<'a> {
    /// u32, shown in hex (open flags, masks, seals).
    Hex(u32),
    /// u64, shown in hex (signal masks).
    Hex64(u64),
    /// u32, shown in decimal.
    U32(u32),
    /// u64, shown in decimal (positions, ids, sizes, counts).
    U64(u64),
    /// i32, shown in decimal.
    I32(i32),
    /// A length-prefixed path or name, shown as text.
    Path(&'a [u8]),
    /// u32 file mode, shown in octal.
    Mode(u32),
    /// A file's identity ([`FileId`]).
    Id(&'a FileId),
    /// A yes/no/unknown byte (0, 1, 2), shown as a bool or null.
    Tri(Option<bool>),
}

/// A kind's fields in wire order, each with its `crest show` name.
pub(super) type Fields<'a> = Vec<(&'static str, Field<'a>)>;

impl Field<'_> {
    fn encode(&self, w: &mut Writer) {
        match *self {
            Field::Hex(v) | Field::U32(v) | Field::Mode(v) => w.u32(v),
            Field::Hex64(v) | Field::U64(v) => w.u64(v),
            Field::I32(v) => w.i32(v),
            Field::Path(b) => w.bytes(b),
            Field::Id(id) => id.encode(w),
            Field::Tri(b) => w.u8(b.map_or(2, u8::from)),
        }
    }

    fn value(&self) -> Value {
        match *self {
            Field::Hex(v) => Value::Hex(v as u64),
            Field::Hex64(v) => Value::Hex(v),
            Field::U32(v) => Value::U(v as u64),
            Field::U64(v) => Value::U(v),
            Field::I32(v) => Value::I(v as i64),
            Field::Path(b) => Value::path(b),
            Field::Mode(v) => Value::Str(format!("{v:o}")),
            Field::Id(id) => id.to_value(),
            Field::Tri(b) => b.map_or(Value::Null, Value::Bool),
        }
    }
}

/// Writes kind byte `kind`, then `fields` in order.
pub(super) fn encode(kind: u8, fields: &[(&str, Field<'_>)], w: &mut Writer) {
    w.u8(kind);
    for (_, f) in fields {
        f.encode(w);
    }
}

/// The `crest show` fields of kind `name`: the kind, the paths, the rest.
pub(super) fn value(
    name: &str,
    fields: &[(&'static str, Field<'_>)],
) -> Vec<(&'static str, Value)> {
    let is_path = |f: &Field<'_>| matches!(f, Field::Path(_));
    let paths = fields.iter().filter(|(_, f)| is_path(f));
    let rest = fields.iter().filter(|(_, f)| !is_path(f));
    std::iter::once(("kind", Value::Str(name.into())))
        .chain(paths.chain(rest).map(|(k, f)| (*k, f.value())))
        .collect()
}

/// Encodes fd 7 holding `file` and decodes it again: the same record,
/// every byte read.
#[cfg(test)]
pub(super) fn round_trip(file: super::FdFile) {
    use super::Fd;
    use crate::image::codec::Reader;
    use crate::image::record::Record;
    let fd = Fd {
        fd: 7,
        fd_flags: 1,
        file,
    };
    let mut w = Writer::new();
    fd.encode(&mut w);
    let mut r = Reader::new(w.as_bytes(), "files-1.img", 0);
    assert_eq!(Fd::decode(&mut r).unwrap(), fd);
    assert!(!r.has_more(), "every byte read");
}
