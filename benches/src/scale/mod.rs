//! `shadowcat-scale`: Shadowcat side by side with nginx on a fast upstream.
//!
//! A run reads top-down: [`cli`] checks the flags into a plan, [`fleet`]
//! starts the upstream ([`crate::upstream`]), nginx ([`nginx`]), the
//! shadowcats and a redis-server, [`run`] drives the scenarios — the slice
//! scenarios through [`workload`] and [`crate::load`], [`busy`] and [`held`]
//! on their own — measuring with [`meter`]; [`figures`] holds what they
//! found, [`report`] prints it and [`plots`] draws it.

pub mod busy;
pub mod cli;
pub mod control;
pub mod figures;
pub mod fleet;
pub mod held;
pub mod meter;
pub mod nginx;
pub mod plots;
pub mod report;
pub mod run;
pub mod target;
pub mod workload;
