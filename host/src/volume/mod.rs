//! What a request means, independent of transport and OS: validation of ids, names and paths,
//! the attachment carried in volume context, and per-volume operation locks.

pub mod attachment;
pub mod locks;
pub mod validate;
