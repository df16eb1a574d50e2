//! Layer 8, the command line: the client commands `dynakv get|put|delete|...`
//! ([`client`]), layout changes with `dynakv admin` ([`admin`]), and a local cluster of
//! child processes with `dynakv dev` ([`dev`]), and namespaces with `dynakv ns` ([`ns`]).

pub mod admin;
pub mod api;
pub mod client;
pub mod dev;
pub mod ns;
