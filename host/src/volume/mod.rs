//! What a request means, independent of transport and OS: validation of ids, names and paths,
//! the attachment carried in volume context, per-volume operation locks, the host's record of
//! the volumes it created and of the volumes this node staged, and the list tokens it handed out.

pub mod attachment;
pub mod locks;
pub mod mkfs;
pub mod records;
pub mod staged;
pub mod tokens;
pub mod types;
pub mod validate;
