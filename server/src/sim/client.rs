//! Who a request is from, as the rate limit and the per-client job cap count it.
//!
//! A client is what the server has checked, never what a request merely claims: the API key
//! only when `auth.api_key` is set and the request's `X-Api-Key` matched it, and otherwise the
//! peer's address. Keying on an unchecked header would let a client mint a fresh identity
//! (and a fresh quota) per request, and would store bytes of its choosing. An identity is a few
//! bytes, whatever the request carried, so a table of them is bounded by its entry count alone.
//!
//! An IPv6 peer is counted by its `/64` prefix: one host is routinely given a whole `/64`, and
//! could otherwise rotate through its addresses. An IPv4-mapped IPv6 address counts as the
//! IPv4 address it maps.

use std::net::{IpAddr, Ipv6Addr};

/// The identity a request is counted under. `Copy`, fixed size, no client-chosen bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// A request whose `X-Api-Key` matched the configured `auth.api_key`.
    ApiKey,
    /// The peer's address: IPv4, or the `/64` prefix of IPv6.
    Peer(IpAddr),
    /// No peer address is known (the app was served without connection info).
    Unknown,
}

impl ClientId {
    /// The identity of a request from `ip` that carried no checked key.
    pub fn peer(ip: IpAddr) -> Self {
        ClientId::Peer(match ip {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(Ipv6Addr::from(prefix))
                }
            },
        })
    }
}

impl ClientId {
    /// The identity as text, for keys in a shared store: `k` (the API key), `u` (unknown), or
    /// `p` and the address. Never longer than 40 bytes.
    pub fn key(&self) -> String {
        match self {
            ClientId::ApiKey => "k".to_owned(),
            ClientId::Unknown => "u".to_owned(),
            ClientId::Peer(ip) => format!("p{ip}"),
        }
    }

    /// The identity [`ClientId::key`] wrote; `None` for anything else.
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "k" => Some(ClientId::ApiKey),
            "u" => Some(ClientId::Unknown),
            _ => key
                .strip_prefix('p')?
                .parse::<IpAddr>()
                .ok()
                .map(ClientId::peer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_by_address_and_ipv6_by_its_prefix() {
        let p = |s: &str| ClientId::peer(s.parse().unwrap());
        assert_eq!(p("192.0.2.7"), ClientId::Peer("192.0.2.7".parse().unwrap()));
        assert_ne!(p("192.0.2.7"), p("192.0.2.8"));
        assert_eq!(p("::ffff:192.0.2.7"), p("192.0.2.7"));
        assert_eq!(p("2001:db8:1:2:aaaa::1"), p("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(
            p("2001:db8:1:2::9"),
            ClientId::Peer("2001:db8:1:2::".parse().unwrap())
        );
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
        assert!(std::mem::size_of::<ClientId>() <= 24);
    }

    #[test]
    fn a_key_reads_back_as_the_same_client() {
        let p = |s: &str| ClientId::peer(s.parse().unwrap());
        for c in [
            ClientId::ApiKey,
            ClientId::Unknown,
            p("192.0.2.7"),
            p("2001:db8:1:2::9"),
        ] {
            assert_eq!(ClientId::from_key(&c.key()), Some(c));
            assert!(c.key().len() <= 40);
        }
        for bad in ["", "p", "pnope", "x", "k1"] {
            assert_eq!(ClientId::from_key(bad), None, "{bad:?}");
        }
    }
}
