//! Files and media (issue 15): uploads in chunks over HTTP on the client listeners, downloads
//! with ranges, and the storage port the bytes live behind.

pub mod storage;
pub mod thumbnail;
