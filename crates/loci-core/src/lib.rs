//! loci-core: the LISP protocol, sans-IO.
//!
//! Each role (Map-Server, Map-Resolver, ETR, ...) is a plain state machine driven by explicit
//! time and datagrams; [`node::Node`] holds the roles one configuration enables. No sockets, no
//! clock, no tokio: the daemon, the simulator and tests drive it the same way.
#![forbid(unsafe_code)]

pub mod config;
pub mod echo_nonce;
pub mod eid;
pub mod encap;
pub mod etr;
pub mod flow_cache;
pub mod itr;
pub mod locator;
pub mod lpm;
pub mod map_cache;
pub mod map_resolver;
pub mod map_server;
pub mod mapping;
pub mod miss_filter;
pub mod miss_queue;
pub mod mobility;
pub mod negative;
pub mod node;
pub mod packet;
pub mod petr;
pub mod prefix_table;
pub mod probing;
pub mod pubsub;
pub mod ratelimit;
pub mod stats;
