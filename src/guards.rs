//! What a browser page may reach: the `Origin` check (cross-site requests) and the `Host`
//! check (DNS rebinding). Pure, so each rule is tested on its own.

use std::net::{IpAddr, SocketAddr};

/// Same origin, a listed origin, `*`, or (with `loopback` listed) a page on this machine.
pub fn origin_allowed(origin: &str, host: &str, allowed: &[String]) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    if !host.is_empty() && authority.eq_ignore_ascii_case(host) {
        return true;
    }
    let origin_host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    allowed.iter().any(|entry| match entry.trim() {
        "*" => true,
        "loopback" => matches!(origin_host, "localhost" | "127.0.0.1" | "[::1]"),
        listed => listed.trim_end_matches('/').eq_ignore_ascii_case(origin),
    })
}

/// Whether a hub listening on `listen` answers to `host` (a `Host` header, `name[:port]`):
/// a loopback name or address, the listen address, a host listed in `allowed` (names
/// without port, any case; `*` allows all), or, when listening on every interface, any
/// IP address (a rebinding attack needs a name).
pub fn host_allowed(host: &str, listen: SocketAddr, allowed: &[String]) -> bool {
    let name = host_name(host);
    if name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return ip.is_loopback() || ip == listen.ip() || listen.ip().is_unspecified();
    }
    allowed
        .iter()
        .map(|entry| entry.trim())
        .any(|entry| entry == "*" || host_name(entry).eq_ignore_ascii_case(name))
}

/// The name or address of a `Host` value, without its port or IPv6 brackets.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_a_rebinding_page_could_use_are_refused() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let listed = vec!["hub.internal".to_owned()];
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.1.2.3",
            "a.localhost",
        ] {
            assert!(host_allowed(host, local, &[]), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.5:8080",
            "localhost.evil.example",
        ] {
            assert!(!host_allowed(host, local, &listed), "{host}");
        }
        assert!(host_allowed("HUB.internal:8080", local, &listed));
        let lan: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        assert!(host_allowed("10.0.0.5:8080", lan, &[]));
        assert!(!host_allowed("10.0.0.6:8080", lan, &[]));
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(host_allowed("192.168.1.9:8080", any, &[]));
        assert!(!host_allowed("rebound.example:8080", any, &[]));
        assert!(host_allowed("anything", local, &["*".to_owned()]));
    }
}
