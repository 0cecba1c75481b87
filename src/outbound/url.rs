//! What a webhook URL is and which addresses the hub may reach: a receiver's URL checked at
//! the edge ([`EndpointUrl`]), and the ranges of addresses a webhook never connects to unless
//! the hub is started with `--webhook-allow-private`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use hyper::Uri;

/// Longest webhook URL accepted, in bytes, as given and as normalised.
pub const MAX_URL_BYTES: usize = 2048;
/// The command-line flag that lets webhooks reach non-public addresses, named in refusals.
pub const ALLOW_PRIVATE_FLAG: &str = "--webhook-allow-private";

/// Why a webhook URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("webhook URL is {bytes} bytes; at most {MAX_URL_BYTES} are accepted")]
    TooLong { bytes: usize },
    #[error("webhook URL must start with http:// or https://")]
    Scheme,
    #[error("webhook URL is not a valid URL: {0}")]
    Malformed(String),
    #[error("webhook URL has no host; give one, as in https://example.com/hooks")]
    NoHost,
    #[error("webhook URL has port 0; give the port the receiver listens on, or none")]
    PortZero,
    #[error(
        "webhook URL must not carry a user name or password (user:pass@); receivers authenticate the hub by the webhook signature"
    )]
    UserInfo,
    #[error(
        "address {ip} is private ({kind}); the hub refuses it unless started with {ALLOW_PRIVATE_FLAG}"
    )]
    Private { ip: IpAddr, kind: &'static str },
}

/// A receiver's URL, checked: `http` or `https`, a host, no user info, a bounded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: url::Url,
    pub(super) https: bool,
    /// The host to resolve and to name in TLS: a domain, or an IP address without brackets.
    pub(super) host: String,
    pub(super) port: u16,
    /// The `Host` header: the host as written in a URL, with the port unless it is the default.
    pub(super) authority: String,
    /// The request target: path and query.
    pub(super) target: Uri,
}

impl EndpointUrl {
    /// Checks a receiver's URL. An IP-literal host in a refused range is refused here unless
    /// `allow_private`; a name is judged by what it resolves to, at each attempt.
    pub fn parse(text: &str, allow_private: bool) -> Result<EndpointUrl, UrlError> {
        let text = text.trim();
        if text.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong { bytes: text.len() });
        }
        let https = starts_with_ignoring_case(text, "https://");
        if !https && !starts_with_ignoring_case(text, "http://") {
            return Err(UrlError::Scheme);
        }
        let url = url::Url::parse(text).map_err(|err| match err {
            url::ParseError::EmptyHost => UrlError::NoHost,
            other => UrlError::Malformed(other.to_string()),
        })?;
        if url.as_str().len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong {
                bytes: url.as_str().len(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        let (host, ip) = match url.host() {
            None | Some(url::Host::Domain("")) => return Err(UrlError::NoHost),
            Some(url::Host::Domain(domain)) => (domain.to_owned(), None),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
        };
        if let Some(ip) = ip
            && !allow_private
            && let Some(kind) = refused_kind(ip)
        {
            return Err(UrlError::Private { ip, kind });
        }
        let port = url
            .port_or_known_default()
            .unwrap_or(if https { 443 } else { 80 });
        if port == 0 {
            return Err(UrlError::PortZero);
        }
        let written_host = url.host_str().unwrap_or(&host);
        let authority = match url.port() {
            Some(port) => format!("{written_host}:{port}"),
            None => written_host.to_owned(),
        };
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let target = target.parse::<Uri>().map_err(|err| {
            UrlError::Malformed(format!("its path or query cannot be sent: {err}"))
        })?;
        Ok(EndpointUrl {
            url,
            https,
            host,
            port,
            authority,
            target,
        })
    }

    /// The URL as normalised (what an operator sees in a listing).
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The host to resolve: a domain, or an IP address without brackets.
    #[cfg(test)]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port connected to (the scheme's default when the URL names none).
    #[cfg(test)]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True for `https`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// True when the host is a loopback address (written as an IP address, or `localhost`).
    pub fn is_loopback(&self) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host.eq_ignore_ascii_case("localhost"),
        }
    }

    /// The URL's origin: scheme, host, and the port unless it is the scheme's default.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// True when a webhook may connect to `ip`: false for loopback, private (RFC 1918, IPv6
/// unique local), link-local, unspecified and "this network", broadcast, multicast, shared
/// address space (100.64.0.0/10) and reserved (240.0.0.0/4) addresses. An IPv4 address
/// inside IPv6 (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is judged as itself.
/// Documentation ranges are allowed: nothing answers there.
#[cfg(test)]
pub fn address_allowed(ip: IpAddr) -> bool {
    refused_kind(ip).is_none()
}

/// Which refused range `ip` lies in, named for a person, or `None` when it is allowed.
pub(super) fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => refused_kind_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return refused_kind_v4(v4);
            }
            let segments = ip.segments();
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let embedded = (u32::from(segments[6]) << 16) | u32::from(segments[7]);
                return refused_kind_v4(Ipv4Addr::from(embedded));
            }
            if ip.is_loopback() {
                Some("loopback")
            } else if ip.is_unspecified() {
                Some("unspecified")
            } else if ip.is_multicast() {
                Some("multicast")
            } else if segments[0] & 0xfe00 == 0xfc00 {
                Some("unique local")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if segments[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else {
                None
            }
        }
    }
}

fn refused_kind_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [first, second, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("RFC 1918")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if first == 0 {
        Some("this network")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first == 100 && second & 0xc0 == 64 {
        Some("shared address space")
    } else if first >= 240 {
        Some("reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
