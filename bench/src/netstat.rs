//! What the kernel's network stack counted while a scenario ran, machine-wide, from
//! `/proc`: packets dropped because a core's receive backlog was full, and TCP segments
//! sent again. On loopback a dropped packet is sent again only after a retransmission
//! timeout (200 ms or more), so one drop shows up as one slow delivery.

use serde::Serialize;

/// The counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Counters {
    /// Packets dropped for a full backlog, summed over the cores (`/proc/net/softnet_stat`).
    backlog_drops: u64,
    /// TCP segments retransmitted (`RetransSegs` in `/proc/net/snmp`).
    retransmitted: u64,
}

/// What the kernel counted between two readings.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Losses {
    pub backlog_drops: u64,
    pub tcp_retransmits: u64,
}

impl std::ops::Add for Losses {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            backlog_drops: self.backlog_drops + other.backlog_drops,
            tcp_retransmits: self.tcp_retransmits + other.tcp_retransmits,
        }
    }
}

impl Counters {
    /// Reads both counters; `None` where `/proc` does not have them (not Linux).
    pub fn read() -> Option<Self> {
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
        let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
        Some(Self {
            backlog_drops: backlog_drops(&softnet)?,
            retransmitted: snmp_field(&snmp, "Tcp:", "RetransSegs")?,
        })
    }

    /// What was counted from `self` to `later`.
    pub fn until(self, later: Self) -> Losses {
        Losses {
            backlog_drops: later.backlog_drops.saturating_sub(self.backlog_drops),
            tcp_retransmits: later.retransmitted.saturating_sub(self.retransmitted),
        }
    }
}

/// The sum of the second column (packets dropped) over every core's line, in hex.
fn backlog_drops(softnet: &str) -> Option<u64> {
    softnet
        .lines()
        .map(|line| u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// One field of `/proc/net/snmp`, where each protocol has a line of names and then a
/// line of values, both starting with `prefix`.
fn snmp_field(snmp: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with(prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_over_cores_in_hex() {
        let softnet = "0d4727d8 0000770a 00000009 00000000\n0b802eeb 0001211a 0000000a 00000000\n";
        assert_eq!(backlog_drops(softnet), Some(0x770a + 0x1211a));
        assert_eq!(backlog_drops("0d4727d8 zz\n"), None);
    }

    #[test]
    fn the_named_field_of_the_protocol_is_read() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Tcp: RtoAlgorithm RtoMin RetransSegs InErrs\nTcp: 1 200 364527 3\n\
                    Udp: InDatagrams RetransSegs\nUdp: 5 9\n";
        assert_eq!(snmp_field(snmp, "Tcp:", "RetransSegs"), Some(364_527));
        assert_eq!(snmp_field(snmp, "Udp:", "RetransSegs"), Some(9));
        assert_eq!(snmp_field(snmp, "Tcp:", "Missing"), None);
    }

    #[test]
    fn the_difference_is_what_was_counted_between() {
        let (a, b) = (
            Counters {
                backlog_drops: 10,
                retransmitted: 100,
            },
            Counters {
                backlog_drops: 15,
                retransmitted: 130,
            },
        );
        assert_eq!(
            a.until(b),
            Losses {
                backlog_drops: 5,
                tcp_retransmits: 30
            }
        );
        assert_eq!((a.until(b) + a.until(b)).tcp_retransmits, 60);
    }
}
