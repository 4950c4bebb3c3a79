//! Shared bodies of the fuzz targets: each decodes untrusted bytes and, when
//! decoding succeeds, checks that encoding the result and decoding it again
//! gives the same value (so a decoder cannot silently misread its input).

use crest::image::codec::Writer;
use crest::image::pages::PageIndex;
use crest::image::record::decode_payload;
use crest::image::show::{FileReport, decode_into};
use crest::image::stream::RecordReader;

/// One record kind's payload decoder.
pub fn payload(kind: u16, data: &[u8]) {
    if let Ok(rec) = decode_payload(kind, data) {
        let mut w = Writer::new();
        rec.encode(&mut w);
        let again = decode_payload(kind, w.as_bytes()).expect("a re-encoded record must decode");
        assert_eq!(again, rec, "decode(encode(x)) != x for kind {kind}");
    }
}

/// Rewrites the header CRC and every record CRC that the framing can reach,
/// so mutated files get past the checksums and exercise what lies behind.
pub fn fix_crcs(data: &[u8]) -> Vec<u8> {
    use crest::image::crc::crc32c;
    let mut b = data.to_vec();
    if b.len() < 14 {
        return b;
    }
    let hlen = u16::from_le_bytes([b[12], b[13]]) as usize;
    if !(32..=256).contains(&hlen) || !hlen.is_multiple_of(4) || b.len() < hlen {
        return b;
    }
    let crc = crc32c(&b[..hlen - 4]);
    b[hlen - 4..hlen].copy_from_slice(&crc.to_le_bytes());
    let mut off = hlen;
    while off + 8 <= b.len() {
        let len = u32::from_le_bytes([b[off + 4], b[off + 5], b[off + 6], b[off + 7]]) as usize;
        let end = off + 8 + len;
        if end + 4 > b.len() {
            break;
        }
        let crc = crc32c(&b[off..end]);
        b[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        off = end + 4;
    }
    b
}

/// A whole image file (header, framing, every record kind, pages files),
/// as given and with its checksums repaired.
pub fn file(data: &[u8]) {
    for bytes in [data.to_vec(), fix_crcs(data)] {
        let mut rep = FileReport::new("fuzz.img");
        let _ = decode_into(&bytes[..], &mut rep);
    }
}

/// A page index with its consistency checks.
pub fn pagemap(data: &[u8]) {
    let fixed = fix_crcs(data);
    if let Ok(mut rr) = RecordReader::new(&fixed[..], "fuzz.img")
        && let Ok(idx) = PageIndex::read(&mut rr)
    {
        for run in &idx.runs {
            let (found, page) = idx
                .find(run.vaddr)
                .expect("every run must be found by its address");
            assert_eq!((found, page), (run, 0));
        }
    }
}

/// The file header alone.
pub fn header(data: &[u8]) {
    let _ = crest::image::header::Header::read(&mut &data[..], "fuzz.img");
}
