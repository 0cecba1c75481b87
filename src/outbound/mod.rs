//! Requests the hub makes to endpoints outside it, webhook receivers and push services
//! alike: which URLs and addresses it may reach, and one bounded HTTP POST.
//!
//! - [`url`]: what an endpoint URL is, and which addresses the hub may reach.
//! - [`http`]: one bounded POST to an endpoint.

pub mod http;
pub mod url;
