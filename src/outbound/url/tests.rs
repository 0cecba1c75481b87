//! Tests of what a webhook URL may be and which addresses the hub refuses.

use std::net::Ipv6Addr;

use super::*;

#[test]
fn parse_keeps_what_the_request_needs() {
    let url = EndpointUrl::parse("https://Example.COM/a/b?c=1&d=%2F#frag", false).unwrap();
    assert!(url.is_https());
    assert_eq!(url.host(), "example.com");
    assert_eq!(url.port(), 443);
    assert_eq!(url.authority, "example.com");
    assert_eq!(url.target, "/a/b?c=1&d=%2F");
    assert_eq!(url.as_str(), "https://example.com/a/b?c=1&d=%2F#frag");

    let url = EndpointUrl::parse("HTTP://hooks.example.com:8080", false).unwrap();
    assert!(!url.is_https());
    assert_eq!(url.port(), 8080);
    assert_eq!(url.authority, "hooks.example.com:8080");
    assert_eq!(url.target, "/");

    let url = EndpointUrl::parse("http://example.com:80/x", false).unwrap();
    assert_eq!((url.port(), url.authority.as_str()), (80, "example.com"));

    let url = EndpointUrl::parse("http://[::1]:9000/x", true).unwrap();
    assert_eq!(url.host(), "::1");
    assert_eq!(url.authority, "[::1]:9000");

    let url = EndpointUrl::parse("https://8.8.8.8/x", false).unwrap();
    assert_eq!((url.host(), url.port()), ("8.8.8.8", 443));
}

#[test]
fn parse_refuses_with_a_reason_a_person_can_act_on() {
    let cases: &[(&str, UrlError, &str)] = &[
        (
            "ftp://example.com/",
            UrlError::Scheme,
            "webhook URL must start with http:// or https://",
        ),
        (
            "example.com/hook",
            UrlError::Scheme,
            "webhook URL must start with http:// or https://",
        ),
        (
            "",
            UrlError::Scheme,
            "webhook URL must start with http:// or https://",
        ),
        (
            "http://:8080/hook",
            UrlError::NoHost,
            "webhook URL has no host; give one, as in https://example.com/hooks",
        ),
        (
            "https://user:pass@example.com/",
            UrlError::UserInfo,
            "webhook URL must not carry a user name or password (user:pass@); receivers authenticate the hub by the webhook signature",
        ),
        (
            "https://user@example.com/",
            UrlError::UserInfo,
            "webhook URL must not carry a user name or password (user:pass@); receivers authenticate the hub by the webhook signature",
        ),
        (
            "http://example.com:0/",
            UrlError::PortZero,
            "webhook URL has port 0; give the port the receiver listens on, or none",
        ),
        (
            "http://10.0.0.1/hook",
            UrlError::Private {
                ip: "10.0.0.1".parse().unwrap(),
                kind: "RFC 1918",
            },
            "address 10.0.0.1 is private (RFC 1918); the hub refuses it unless started with --webhook-allow-private",
        ),
        (
            "http://[::ffff:127.0.0.1]/",
            UrlError::Private {
                ip: "::ffff:127.0.0.1".parse().unwrap(),
                kind: "loopback",
            },
            "address ::ffff:127.0.0.1 is private (loopback); the hub refuses it unless started with --webhook-allow-private",
        ),
        (
            // The URL parser reads this as 127.0.0.1.
            "http://0x7f.1/",
            UrlError::Private {
                ip: "127.0.0.1".parse().unwrap(),
                kind: "loopback",
            },
            "address 127.0.0.1 is private (loopback); the hub refuses it unless started with --webhook-allow-private",
        ),
    ];
    for (text, error, message) in cases {
        let refused = EndpointUrl::parse(text, false).unwrap_err();
        assert_eq!(&refused, error, "{text}");
        assert_eq!(refused.to_string(), *message, "{text}");
    }
    assert!(matches!(
        EndpointUrl::parse("http://exa mple.com/", false),
        Err(UrlError::Malformed(_))
    ));
    assert!(EndpointUrl::parse("http://10.0.0.1/hook", true).is_ok());
}

#[test]
fn parse_bounds_the_length() {
    let at_limit = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES - 20));
    assert_eq!(at_limit.len(), MAX_URL_BYTES);
    assert!(EndpointUrl::parse(&at_limit, false).is_ok());
    let over = format!("{at_limit}a");
    assert_eq!(
        EndpointUrl::parse(&over, false),
        Err(UrlError::TooLong {
            bytes: MAX_URL_BYTES + 1
        })
    );
    assert_eq!(
        UrlError::TooLong { bytes: 3000 }.to_string(),
        "webhook URL is 3000 bytes; at most 2048 are accepted"
    );
    // Within the limit as given, over it once the parser has percent-encoded it.
    let expands = format!("https://example.com/{}", " ".repeat(1000));
    assert!(matches!(
        EndpointUrl::parse(&format!("{expands}x"), false),
        Err(UrlError::TooLong { .. })
    ));
}

fn kind(ip: &str) -> Option<&'static str> {
    let ip: IpAddr = ip.parse().unwrap();
    assert_eq!(address_allowed(ip), refused_kind(ip).is_none());
    refused_kind(ip)
}

#[test]
fn ipv4_ranges() {
    let cases = [
        ("127.0.0.1", Some("loopback")),
        ("127.255.255.254", Some("loopback")),
        ("10.0.0.1", Some("RFC 1918")),
        ("10.255.255.255", Some("RFC 1918")),
        ("172.16.0.1", Some("RFC 1918")),
        ("172.31.255.255", Some("RFC 1918")),
        ("172.15.255.255", None),
        ("172.32.0.0", None),
        ("192.168.1.1", Some("RFC 1918")),
        ("192.169.0.1", None),
        ("169.254.169.254", Some("link-local")),
        ("0.0.0.0", Some("this network")),
        ("0.1.2.3", Some("this network")),
        ("255.255.255.255", Some("broadcast")),
        ("224.0.0.1", Some("multicast")),
        ("239.255.255.250", Some("multicast")),
        ("100.64.0.1", Some("shared address space")),
        ("100.127.255.255", Some("shared address space")),
        ("100.63.255.255", None),
        ("100.128.0.0", None),
        ("240.0.0.1", Some("reserved")),
        ("192.0.2.1", None),
        ("198.51.100.7", None),
        ("203.0.113.9", None),
        ("8.8.8.8", None),
        ("1.1.1.1", None),
    ];
    for (ip, expected) in cases {
        assert_eq!(kind(ip), expected, "{ip}");
    }
}

#[test]
fn ipv6_ranges() {
    let cases = [
        ("::1", Some("loopback")),
        ("::", Some("unspecified")),
        ("fc00::1", Some("unique local")),
        ("fd12:3456:789a::1", Some("unique local")),
        ("fe80::1", Some("link-local")),
        ("febf::1", Some("link-local")),
        ("fec0::1", Some("site-local")),
        ("ff02::1", Some("multicast")),
        ("::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:10.1.2.3", Some("RFC 1918")),
        ("::ffff:169.254.169.254", Some("link-local")),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::10.0.0.1", Some("RFC 1918")),
        ("64:ff9b::8.8.8.8", None),
        ("2001:db8::1", None),
        ("2606:4700:4700::1111", None),
    ];
    for (ip, expected) in cases {
        assert_eq!(kind(ip), expected, "{ip}");
    }
    assert!(!address_allowed(IpAddr::V6(Ipv6Addr::LOCALHOST)));
}
