//! Parsers for /proc files, over byte slices.
