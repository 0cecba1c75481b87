//! Webhooks: Standard Webhooks signatures ([`sign`]) and one signed POST to a receiver
//! ([`http`]), the two pieces the delivery engine calls for each attempt.

pub mod http;
pub mod sign;
pub mod url;
