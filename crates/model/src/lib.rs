//! `model`: the simulated kernel — host mm, KVM, and the drivers whose mmaps end up in
//! guests — written as actor code for the [`world`] runtime.
#![forbid(unsafe_code)]

pub mod drivers;
pub mod harness;
pub mod kvm;
pub mod mm;
