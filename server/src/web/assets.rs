//! The browser client's files, built into the binary from `server/web/`:
//! no build step, nothing fetched from another host.
//!
//! Each file is served with its content type, a strong `ETag` (a hash of
//! its bytes) so that a browser revalidates with `If-None-Match` and gets
//! `304 Not Modified`, and, when the browser accepts it and it pays,
//! gzipped. Compression happens once, the first time any file is asked
//! for.

use std::sync::LazyLock;

use hyper::body::Bytes;

/// One file of the page.
pub struct Asset {
    pub content_type: &'static str,
    pub body: Bytes,
    /// The body gzipped, when that makes it smaller by an eighth at least
    /// ([`GZIP_PAYS`]).
    pub gzipped: Option<Bytes>,
    /// The `ETag` of `body`, quoted.
    pub etag: String,
    /// The `ETag` of `gzipped`: another representation, another tag.
    pub gzipped_etag: String,
}

/// The gzipped form is served when it is at least `1 / GZIP_PAYS`
/// smaller: less would not pay for the header and the client's work.
const GZIP_PAYS: usize = 8;

/// The files, in the order of [`FILES`].
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(_, content_type, body)| Asset::new(content_type, body))
        .collect()
});

/// Path, content type and bytes of every file served. Exactly these three:
/// any other path (a favicon included) is 404.
const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
];

/// The file served at `path`; `/` is `/index.html`.
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    let at = FILES.iter().position(|(p, ..)| *p == path)?;
    ASSETS.get(at)
}

impl Asset {
    fn new(content_type: &'static str, body: &'static [u8]) -> Asset {
        let gzipped = gzip(body).filter(|g| g.len() <= body.len() - body.len() / GZIP_PAYS);
        let hash = fnv1a(body);
        Asset {
            content_type,
            body: Bytes::from_static(body),
            gzipped: gzipped.map(Bytes::from),
            etag: format!("\"{hash:016x}\""),
            gzipped_etag: format!("\"{hash:016x}-gzip\""),
        }
    }
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// FNV-1a, 64 bits: enough to tell one version of a file from the next,
/// with no dependency for it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_found_with_its_type_and_tags() {
        let index = find("/").expect("the page");
        assert!(std::ptr::eq(index, find("/index.html").unwrap()));
        assert!(index.content_type.starts_with("text/html"));
        assert!(find("/app.js").unwrap().content_type.contains("javascript"));
        assert!(find("/style.css")
            .unwrap()
            .content_type
            .starts_with("text/css"));
        assert!(find("/favicon.svg").is_none());
        assert!(find("/../Cargo.toml").is_none());
        for (path, ..) in FILES {
            let asset = find(path).unwrap();
            assert_ne!(asset.etag, asset.gzipped_etag);
            if let Some(gzipped) = &asset.gzipped {
                let mut plain = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&gzipped[..]),
                    &mut plain,
                )
                .unwrap();
                assert_eq!(plain, asset.body);
            }
        }
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
