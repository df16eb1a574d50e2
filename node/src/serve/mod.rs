//! Layer 7, serving: the roles assembled into a node ([`node`]), served over HTTP from
//! start to stop ([`server`]), through one accept loop ([`http_server`]).

pub mod http_server;
pub mod node;
pub mod server;
