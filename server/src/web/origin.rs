//! Which pages may open the chat's WebSocket: the server's own, and those
//! named with `--web-origin`.
//!
//! A browser sends cookies and its user's network position with any
//! WebSocket a page opens, whoever wrote the page, and the WebSocket
//! handshake is not bound by the same-origin policy. So a page elsewhere
//! could log its visitors in here, under its own script. The browser does
//! say which page asks (`Origin`), and that is checked; a request without
//! `Origin` does not come from a browser page and is allowed.
//!
//! Origins are compared as `scheme://host[:port]`, in lower case, without
//! the scheme's default port.

/// A `--web-origin` value, as it is kept and compared: `scheme://host[:port]`
/// in lower case, the default port left out. Anything else is refused
/// with an example.
pub fn parse(text: &str) -> Result<String, String> {
    normalize(text).ok_or_else(|| {
        format!(
            "`{text}` is not an origin; write scheme://host[:port] with http or https and \
             nothing after the host or port, like https://chat.example.com"
        )
    })
}

/// `scheme://host[:port]` as compared, or `None` if `text` is not one.
fn normalize(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    let (scheme, rest) = text.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    // A port, unless the colon is inside an IPv6 address's brackets.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    if host.is_empty()
        || host.starts_with('[') != host.ends_with(']')
        || (!host.starts_with('[') && host.contains(':'))
    {
        return None;
    }
    let host = match port {
        None => host,
        Some(port) if port.parse::<u16>().is_err() => return None,
        Some(port) if port == default_port => host,
        Some(_) => authority,
    };
    Some(format!("{scheme}://{host}"))
}

/// Whether a WebSocket upgrade with this `Origin` may go on: no `Origin`
/// (not a browser page), the page the request was made to (`scheme://`
/// and its `Host`), or one of `listed`.
pub fn allowed(
    origin: Option<&[u8]>,
    host: Option<&[u8]>,
    scheme: &str,
    listed: &[String],
) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(origin) = std::str::from_utf8(origin).ok().and_then(normalize) else {
        // `null` (a sandboxed page, a file) and anything unreadable.
        return false;
    };
    if listed.contains(&origin) {
        return true;
    }
    let own = host
        .and_then(|host| std::str::from_utf8(host).ok())
        .and_then(|host| normalize(&format!("{scheme}://{host}")));
    own.as_ref() == Some(&origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(origin: Option<&str>, host: Option<&str>, scheme: &str, listed: &[&str]) -> bool {
        let listed: Vec<String> = listed.iter().map(|l| parse(l).expect(l)).collect();
        allowed(
            origin.map(str::as_bytes),
            host.map(str::as_bytes),
            scheme,
            &listed,
        )
    }

    #[test]
    fn origins_are_kept_in_one_form() {
        assert_eq!(
            parse("HTTPS://Chat.Example.com:443/").unwrap(),
            "https://chat.example.com"
        );
        assert_eq!(
            parse("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(parse("http://[::1]:80").unwrap(), "http://[::1]");
        assert_eq!(parse("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        for bad in [
            "chat.example.com",
            "ftp://example.com",
            "https://example.com/chat",
            "https://",
            "https://example.com:port",
            "https://user@example.com",
            "null",
            "https://::1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_own_origin_and_listed_ones_pass_and_no_other() {
        let host = Some("127.0.0.1:8080");
        assert!(ok(None, host, "http", &[]), "no Origin: not a browser");
        assert!(ok(Some("http://127.0.0.1:8080"), host, "http", &[]));
        assert!(ok(Some("HTTP://127.0.0.1:8080"), host, "http", &[]));
        assert!(!ok(Some("https://127.0.0.1:8080"), host, "http", &[]));
        assert!(!ok(Some("http://127.0.0.1:8081"), host, "http", &[]));
        assert!(!ok(Some("http://evil.example"), host, "http", &[]));
        assert!(!ok(Some("null"), host, "http", &[]));
        assert!(!ok(Some("http://127.0.0.1:8080"), None, "http", &[]));
        assert!(ok(
            Some("https://chat.example.com"),
            host,
            "http",
            &["https://chat.example.com"]
        ));
        assert!(ok(
            Some("https://chat.example.com"),
            Some("chat.example.com:443"),
            "https",
            &[]
        ));
    }
}
