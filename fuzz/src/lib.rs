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

/// A whole image file (header, framing, every record kind, pages files).
pub fn file(data: &[u8]) {
    let mut rep = FileReport::new("fuzz.img");
    let _ = decode_into(data, &mut rep);
}

/// A page index with its consistency checks.
pub fn pagemap(data: &[u8]) {
    if let Ok(mut rr) = RecordReader::new(data, "fuzz.img") {
        if let Ok(idx) = PageIndex::read(&mut rr) {
            for run in &idx.runs {
                let (found, page) = idx.find(run.vaddr).expect("every run must be found by its address");
                assert_eq!((found, page), (run, 0));
            }
        }
    }
}

/// The file header alone.
pub fn header(data: &[u8]) {
    let _ = crest::image::header::Header::read(&mut &data[..], "fuzz.img");
}
