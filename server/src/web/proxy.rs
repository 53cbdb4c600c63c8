//! `--trusted-proxy` and `X-Forwarded-For`: whose address a web client has.
//!
//! Behind a reverse proxy every client arrives from the proxy's address,
//! and one browser would spend everyone's `--max-per-ip`. The proxy says
//! who it forwards for in `X-Forwarded-For`, but anyone can write that
//! header, so it is believed only from the proxies the operator named, and
//! only as far as they vouch for it: proxies append the address they saw,
//! so the list is read from the right, past every trusted proxy, and the
//! first address that is not one is the client's. Whatever a client wrote
//! further left is its own claim and is ignored.

use std::fmt;
use std::net::IpAddr;

/// A trusted proxy: one address, or a block of them (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    /// The block's first address, IPv4-mapped IPv6 as IPv4.
    addr: IpAddr,
    /// Bits of the prefix: 32 or 128 for one address.
    bits: u8,
}

impl Net {
    /// `192.0.2.7`, `10.0.0.0/8`, `::1` or `2001:db8::/32`; host bits are
    /// cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    pub fn parse(text: &str) -> Result<Net, String> {
        let wrong = || {
            format!(
                "`{text}` is not an IP address or a CIDR block; write one like 192.0.2.7, \
                 10.0.0.0/8 or 2001:db8::/32"
            )
        };
        let (addr, bits) = match text.trim().split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| wrong())?;
        let addr = addr.to_canonical();
        let most = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => most,
            Some(bits) => match bits.parse::<u8>() {
                Ok(bits) if bits <= most => bits,
                _ => return Err(wrong()),
            },
        };
        Ok(Net {
            addr: mask(addr, bits),
            bits,
        })
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.bits) == self.addr
    }
}

/// `ip` with all but its first `bits` bits cleared.
fn mask(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4((v4.to_bits() & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6((v6.to_bits() & keep).into())
        }
    }
}

/// As `--trusted-proxy` reads it back: the address alone for one address.
impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let most = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.bits == most {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.bits)
        }
    }
}

/// An `X-Forwarded-For` from a trusted proxy that names no address where
/// one was due: the proxy is misconfigured, or the header is not its.
#[derive(Debug, PartialEq, Eq)]
pub struct BadForwarded;

/// The client's address: `peer` itself unless it is a trusted proxy;
/// then the last address of `forwarded` (the `X-Forwarded-For` values, in
/// order) that is not a trusted proxy, or, when all are, the first one.
pub fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a [u8]>,
    trusted: &[Net],
) -> Result<IpAddr, BadForwarded> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return Ok(peer);
    }
    let mut hops: Vec<&[u8]> = Vec::new();
    for value in forwarded {
        hops.extend(value.split(|&b| b == b','));
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        let ip = hop_address(hop).ok_or(BadForwarded)?;
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Ok(client)
}

/// One entry of the list: `192.0.2.7`, `2001:db8::1`, and the forms some
/// proxies write with a port (`192.0.2.7:4711`, `[2001:db8::1]:4711`).
fn hop_address(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?.trim();
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match text.parse::<std::net::SocketAddr>() {
            Ok(addr) => addr.ip(),
            Err(_) => text.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?,
        },
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<Net> {
        texts.iter().map(|t| Net::parse(t).expect(t)).collect()
    }

    fn client(peer: &str, header: &[&str], trusted: &[&str]) -> Result<IpAddr, BadForwarded> {
        client_address(
            peer.parse().unwrap(),
            header.iter().map(|h| h.as_bytes()),
            &nets(trusted),
        )
    }

    #[test]
    fn nets_parse_print_and_contain() {
        let net = Net::parse("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.9".parse().unwrap()));
        let one = Net::parse("127.0.0.1").unwrap();
        assert_eq!(one.to_string(), "127.0.0.1");
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Net::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(Net::parse("::/0").unwrap().to_string(), "::/0");
        for bad in [
            "",
            "10.0.0.0/33",
            "::1/129",
            "example.com",
            "10.0.0.0/x",
            "1.2.3",
        ] {
            let error = Net::parse(bad).expect_err(bad);
            assert!(error.contains("CIDR"), "{error}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            client("192.0.2.9", &["203.0.113.1"], &["127.0.0.1"]),
            Ok("192.0.2.9".parse().unwrap())
        );
    }

    #[test]
    fn the_last_untrusted_hop_is_the_client() {
        let trusted = ["127.0.0.1", "10.0.0.0/8"];
        // The client forged the first entry; the proxies appended the rest.
        assert_eq!(
            client(
                "127.0.0.1",
                &["6.6.6.6, 198.51.100.7", "10.0.0.2"],
                &trusted
            ),
            Ok("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            client("127.0.0.1", &["[2001:db8::7]:4711"], &trusted),
            Ok("2001:db8::7".parse().unwrap())
        );
        assert_eq!(
            client("127.0.0.1", &["198.51.100.7:4711"], &trusted),
            Ok("198.51.100.7".parse().unwrap())
        );
        // No header: the proxy itself.
        assert_eq!(
            client("127.0.0.1", &[], &trusted),
            Ok("127.0.0.1".parse().unwrap())
        );
        // All trusted: the farthest one named.
        assert_eq!(
            client("127.0.0.1", &["10.0.0.5, 10.0.0.6"], &trusted),
            Ok("10.0.0.5".parse().unwrap())
        );
        // Garbage left of the client is never read.
        assert_eq!(
            client("127.0.0.1", &["unknown, 198.51.100.7"], &trusted),
            Ok("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            client("127.0.0.1", &["198.51.100.7, unknown"], &trusted),
            Err(BadForwarded)
        );
    }
}
