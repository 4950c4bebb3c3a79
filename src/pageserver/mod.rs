//! The page server (CRIU's `page-server`): a dump's page files sent over a
//! TCP connection (std's sockets; page data spliced from the page pipe into
//! the socket) to `crest page-server` on another machine or network
//! namespace, which writes them into its image directory. The rest of the
//! image stays in the dump's own directory. Wire format in [`proto`].

pub mod client;
pub mod proto;
pub mod server;

pub use client::{Client, RemoteFile};
