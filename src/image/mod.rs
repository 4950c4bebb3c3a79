//! The crest image format (being written).

use std::fmt;

/// A damaged, truncated or unsupported image: which file, where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageError {
    /// The image file.
    pub file: String,
    /// Byte offset in the file where the problem was found.
    pub offset: u64,
    /// What is wrong, as a sentence fragment.
    pub problem: String,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "image {} is damaged at offset {}: {}",
            self.file, self.offset, self.problem
        )
    }
}
