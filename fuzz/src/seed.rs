//! Writes a seed corpus for every fuzz target into fuzz/corpus/<target>/,
//! from the realistic sample images of `crest::image::sample`.

use std::fs;
use std::path::Path;

use crest::image::ImageDir;
use crest::image::codec::Writer;
use crest::image::sample;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let tmp = std::env::temp_dir().join(format!("crest-fuzz-seed-{}", std::process::id()));
    let d = ImageDir::create(&tmp)?;
    let info = sample::write_image(&d, None, 1)?;
    for name in &info.files {
        let bytes = fs::read(tmp.join(name))?;
        let target = if name.starts_with("pagemap-") {
            vec!["file", "pagemap"]
        } else {
            vec!["file"]
        };
        for t in target.into_iter().chain(["header"]) {
            fs::create_dir_all(root.join(t))?;
            fs::write(root.join(t).join(name), &bytes)?;
        }
    }
    for (i, rec) in sample::every_record().iter().enumerate() {
        let mut w = Writer::new();
        rec.encode(&mut w);
        let dir = root.join(format!("record_{}", rec.name().replace('-', "_")));
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(format!("seed-{i}")), w.as_bytes())?;
    }
    fs::remove_dir_all(&tmp)?;
    println!("seed corpus written to {}", root.display());
    Ok(())
}
