//! Call budgets: how many calls a WebSocket session, or a client of `POST /rpc`, may make
//! per window, every batch entry and ping counted.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;

use crate::config::RateLimit;
use crate::sync::lock;

/// A caller that makes this many times its allowance in one window is flooding (a session
/// doing so is closed, 1008).
pub const FLOOD_FACTOR: u32 = 2;
/// Most `/rpc` clients (addresses; IPv6 by /64) whose budgets the hub tracks at once. When
/// more call within one window, the newest are refused (HTTP 503) until a window ends.
pub const MAX_RPC_CLIENTS: usize = 10_000;

/// Whether a caller may make one more call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallAdmission {
    Allowed,
    /// Over the allowance; the call is refused.
    Refused {
        retry_after_ms: u64,
    },
    /// Far over it: refused, and a session is to be closed.
    Flooding {
        retry_after_ms: u64,
    },
}

/// Calls counted in the current fixed window.
#[derive(Debug)]
struct CallWindow {
    started: Instant,
    calls: u32,
}

/// One caller's allowance and the calls counted against it.
#[derive(Debug)]
pub struct CallBudget {
    limit: RateLimit,
    window: Mutex<CallWindow>,
}

impl CallBudget {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            window: Mutex::new(CallWindow {
                started: Instant::now(),
                calls: 0,
            }),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Counts one call.
    pub fn admit(&self) -> CallAdmission {
        if self.limit.is_off() {
            return CallAdmission::Allowed;
        }
        let mut window = lock(&self.window);
        if window.started.elapsed() >= self.limit.window {
            *window = CallWindow {
                started: Instant::now(),
                calls: 0,
            };
        }
        window.calls = window.calls.saturating_add(1);
        if window.calls <= self.limit.max {
            return CallAdmission::Allowed;
        }
        let retry_after_ms = self
            .limit
            .window
            .saturating_sub(window.started.elapsed())
            .as_millis() as u64
            + 1;
        if window.calls > self.limit.max.saturating_mul(FLOOD_FACTOR) {
            CallAdmission::Flooding { retry_after_ms }
        } else {
            CallAdmission::Refused { retry_after_ms }
        }
    }

    /// Whether the current window has ended (the budget counts nothing any more).
    fn is_idle(&self) -> bool {
        lock(&self.window).started.elapsed() >= self.limit.window
    }
}

/// The budgets of the clients calling `POST /rpc`, one per address (IPv6 per /64, which
/// one host usually holds whole), with at most [`MAX_RPC_CLIENTS`] tracked.
#[derive(Debug)]
pub struct RpcBudgets {
    limit: RateLimit,
    clients: DashMap<IpAddr, Arc<CallBudget>>,
    /// When idle budgets were last dropped: at most once per window, so a full table
    /// costs a lookup per refused request, not a sweep.
    swept: Mutex<Instant>,
}

impl RpcBudgets {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            clients: DashMap::new(),
            swept: Mutex::new(Instant::now()),
        }
    }

    /// The budget of the client at `ip`; `None` when too many clients are tracked already.
    pub fn of(&self, ip: IpAddr) -> Option<Arc<CallBudget>> {
        let key = client_key(ip);
        if let Some(budget) = self.clients.get(&key) {
            return Some(budget.clone());
        }
        if self.clients.len() >= MAX_RPC_CLIENTS {
            {
                let mut swept = lock(&self.swept);
                if swept.elapsed() < self.limit.window {
                    return None;
                }
                *swept = Instant::now();
            }
            self.clients.retain(|_, budget| !budget.is_idle());
            if self.clients.len() >= MAX_RPC_CLIENTS {
                return None;
            }
        }
        let budget = self
            .clients
            .entry(key)
            .or_insert_with(|| Arc::new(CallBudget::new(self.limit)));
        Some(budget.clone())
    }
}

/// The address a budget is kept for: IPv4 as is, IPv6 by its /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_budget_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_budget_refuses_past_its_allowance_then_flags_flooding() {
        let budget = CallBudget::new(RateLimit {
            max: 2,
            window: std::time::Duration::from_secs(60),
        });
        assert_eq!(budget.admit(), CallAdmission::Allowed);
        assert_eq!(budget.admit(), CallAdmission::Allowed);
        assert!(matches!(budget.admit(), CallAdmission::Refused { .. }));
        assert!(matches!(budget.admit(), CallAdmission::Refused { .. }));
        assert!(matches!(budget.admit(), CallAdmission::Flooding { .. }));
    }
}
