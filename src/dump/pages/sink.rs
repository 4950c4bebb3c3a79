//! Where a page dump writes: the two page files (the pagemap index and the
//! page data) either in the local image directory or on a page server.
//! [`PageTarget`] makes the [`PageWriter`] for either, and [`Sink`] is the
//! byte stream under it: page runs are spliced from the page pipe into the
//! file or the socket, the index and copied pages are written normally.
//! Pre-dump and incremental dumps write through the same target.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::BorrowedFd;

use crate::error::{Error, Result};
use crate::image::ImageDir;
use crate::image::dir::host_page_size;
use crate::image::header::Arch;
use crate::image::pagemap::Space;
use crate::image::pages::PageWriter;
use crate::pageserver::{Client, RemoteFile};

/// The writer of a page dump, over either kind of sink.
pub type Writer<'c> = PageWriter<BufWriter<Sink<'c>>, Sink<'c>>;

/// Where the page files go.
#[derive(Debug, Clone, Copy)]
pub enum PageTarget<'c> {
    /// Files in the image directory.
    Dir(&'c ImageDir),
    /// Files on a page server, over its connection.
    Server(&'c Client),
}

/// One page file's byte stream.
#[derive(Debug)]
pub enum Sink<'c> {
    /// A local file (unbuffered: data is also spliced into its fd).
    File(File),
    /// A file on the page server.
    Remote(RemoteFile<'c>),
}

impl<'c> PageTarget<'c> {
    /// Opens the index `index_name` and the data `data_name` and starts a
    /// writer for the address space `space`.
    pub fn writer(&self, index_name: &str, data_name: &str, space: Space) -> Result<Writer<'c>> {
        let (index, data) = match *self {
            PageTarget::Dir(dir) => (
                Sink::File(dir.create_file(index_name)?),
                Sink::File(dir.create_file(data_name)?),
            ),
            PageTarget::Server(c) => (
                Sink::Remote(c.open(index_name)?),
                Sink::Remote(c.open(data_name)?),
            ),
        };
        let ps = host_page_size();
        PageWriter::new(
            BufWriter::new(index),
            index_name,
            data,
            data_name,
            Arch::host(),
            ps,
            space,
        )
    }
}

/// Finishes `writer` (its end record) and closes both sinks.
pub fn finish(writer: Writer<'_>, index_name: &str) -> Result<()> {
    let (index, data) = writer.finish()?;
    let index = index
        .into_inner()
        .map_err(|e| Error::io("write", index_name, e.into_error()))?;
    index.close()?;
    data.close()
}

impl Sink<'_> {
    /// Moves `bytes` from `pipe` to the end of the stream with splice(2);
    /// returns how many moved (short if the pipe ran dry).
    pub fn splice_from(&mut self, pipe: BorrowedFd<'_>, bytes: u64) -> std::io::Result<u64> {
        match self {
            Sink::File(f) => super::pipe::drain(pipe, f, bytes),
            Sink::Remote(r) => r.splice_from(pipe, bytes),
        }
    }

    /// Ends the stream: a remote file is closed with its size.
    pub fn close(self) -> Result<()> {
        match self {
            Sink::File(_) => Ok(()),
            Sink::Remote(r) => r.close(),
        }
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Remote(r) => r.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Remote(r) => r.flush(),
        }
    }
}
