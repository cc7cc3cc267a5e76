//! The backend author's kit: [`check`] runs a component through the host's rules, [`inspect`]
//! says what a component is, [`scaffold`] writes a new backend crate, [`contract`] is the
//! contract's reference. It drives the runtime the way the lifecycle layer does, without a CO,
//! a socket or the node.

pub mod check;
pub mod contract;
pub mod inspect;
pub mod scaffold;
