//! The certificates' cluster side, for a replica in a cluster: the Secret
//! that holds CA and serving certificate ([`secret`]), the objects that call
//! keyhook and the caBundle in each ([`ca_bundle`]), readiness against that
//! bundle ([`trust`]), and, on the leader, the controller that keeps the
//! Secret valid ([`controller`]) by the pure rotation planner
//! ([`rotation`]). With a certificate someone else issues, [`external`]
//! reports what their injection misses.

pub mod ca_bundle;
pub mod controller;
pub mod external;
pub mod rotation;
pub mod secret;
pub mod trust;
