//! The build-time ELF gate, against the real linked parasite and damaged
//! copies of it.

#[path = "../../parasite/build/elf.rs"]
#[allow(dead_code)]
mod elf;

use crest::blob;

/// The linked parasite ELF that build.rs checked and cut the image from.
const PARASITE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/parasite.elf"));

fn spec(budget: usize, symbols: &'static [&'static str]) -> elf::BlobSpec<'static> {
    let arch = std::env::consts::ARCH;
    elf::BlobSpec {
        name: "parasite",
        arch,
        budget,
        symbols,
    }
}

#[test]
fn accepts_the_real_parasite_and_cuts_the_embedded_image() {
    let checked = elf::check_blob(PARASITE_ELF, &spec(16 * 1024, &["__crest_head"])).unwrap();
    let blob = blob::parasite();
    assert_eq!(checked.image, blob.bytes);
    assert_eq!(checked.mem_size as usize, blob.mem_size);
    assert_eq!(checked.symbols["__crest_head"].0 as usize, blob.entry);
}

#[test]
fn refuses_budget_missing_symbol_and_relocations() {
    let too_small = elf::check_blob(PARASITE_ELF, &spec(8, &[])).unwrap_err();
    assert!(too_small.contains("over the budget of 8"), "{too_small}");
    let missing = elf::check_blob(PARASITE_ELF, &spec(16 * 1024, &["no_such"])).unwrap_err();
    assert!(missing.contains("symbol `no_such` is missing"), "{missing}");
    // Turn the code section's type into SHT_RELA: the gate must see entries.
    let mut damaged = PARASITE_ELF.to_vec();
    let shoff = u64::from_le_bytes(damaged[40..48].try_into().unwrap()) as usize;
    let code = shoff + 64; // section 1 is `.blob` (blob.ld puts it first)
    damaged[code + 4..code + 8].copy_from_slice(&4u32.to_le_bytes());
    let relocs = elf::check_blob(&damaged, &spec(16 * 1024, &[])).unwrap_err();
    assert!(relocs.contains("it has relocations (.blob"), "{relocs}");
}

#[test]
fn refuses_an_ordinary_executable() {
    let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let err = elf::check_blob(&exe, &spec(usize::MAX, &[])).unwrap_err();
    assert!(err.contains("loadable segments, not exactly 1"), "{err}");
}

#[test]
fn refuses_garbage_without_panicking() {
    for len in [0, 4, 64, 200] {
        let mut junk = PARASITE_ELF[..len.min(PARASITE_ELF.len())].to_vec();
        junk.resize(len, 0xff);
        assert!(elf::check_blob(&junk, &spec(16 * 1024, &[])).is_err());
    }
    // Table offsets near u64::MAX must not overflow the arithmetic.
    for field in [32..40, 40..48] {
        let mut bad = PARASITE_ELF.to_vec();
        bad[field].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        assert!(elf::check_blob(&bad, &spec(16 * 1024, &[])).is_err());
    }
}
