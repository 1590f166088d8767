//! The `accept_encoding` target: `Accept-Encoding` negotiation against a reference.

use super::lines;
use crate::cache;
use crate::compression::{self, Encoding};
use http::header::{HeaderMap, HeaderValue};
use std::collections::HashMap;

/// `Accept-Encoding` negotiation: `data` is the header value; its lines (split on `\n`) are
/// also tried as several header lines.
///
/// Invariants: [`compression::negotiate`] agrees with a reference written from RFC 9110
/// §12.5.3 and the documented rules (it only answers a coding the client listed, or covered
/// with `*`, with a weight above zero); several header lines mean the same as one
/// comma-joined line; the cache's variant key is the negotiated token.
pub fn accept_encoding(data: &[u8]) {
    let got = compression::negotiate(Some(data));
    assert_eq!(got, reference_negotiate(&[data]), "negotiate({data:?})");
    assert_eq!(cache::normalise_accept_encoding(data), got.as_str());
    if got != Encoding::Identity {
        let listed = data
            .split(|b| *b == b',')
            .filter_map(|e| e.split(|b| *b == b';').next())
            .map(|c| c.trim_ascii().to_ascii_lowercase())
            .any(|c| {
                c == got.as_str().as_bytes()
                    || c == b"*"
                    || (got == Encoding::Gzip && c == b"x-gzip")
            });
        assert!(listed, "{got} chosen but not listed in {data:?}");
    }

    let parts: Vec<&[u8]> = lines(data).collect();
    let mut headers = HeaderMap::new();
    for part in &parts {
        match HeaderValue::from_bytes(part) {
            Ok(v) => headers.append(http::header::ACCEPT_ENCODING, v),
            Err(_) => return,
        };
    }
    let joined = parts.join(&b","[..]);
    assert_eq!(
        compression::negotiate_headers(&headers),
        compression::negotiate(Some(&joined)),
        "lines {parts:?}"
    );
}

/// A qvalue (`0`, `0.x`, `1`, `1.0`, up to three decimals) as a float; `None` if malformed.
fn reference_qvalue(v: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(v).ok()?;
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if int != "0" && int != "1" {
        return None;
    }
    if let Some(f) = frac {
        if f.len() > 3 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if int == "1" && f.bytes().any(|b| b != b'0') {
            return None;
        }
    }
    text.parse::<f64>().ok()
}

fn reference_negotiate(values: &[&[u8]]) -> Encoding {
    // Lowest weight of each listed coding (a malformed weight counts as 0).
    let mut weights: HashMap<&'static str, f64> = HashMap::new();
    for value in values {
        for element in value.split(|b| *b == b',') {
            let mut parts = element.split(|b| *b == b';');
            let coding = parts
                .next()
                .unwrap_or_default()
                .trim_ascii()
                .to_ascii_lowercase();
            let key = match coding.as_slice() {
                b"br" => "br",
                b"gzip" | b"x-gzip" => "gzip",
                b"*" => "*",
                _ => continue,
            };
            let mut q: f64 = 1.0;
            for param in parts {
                let mut kv = param.splitn(2, |b| *b == b'=');
                let name = kv.next().unwrap_or_default().trim_ascii();
                let value = kv.next().unwrap_or_default().trim_ascii();
                if name.eq_ignore_ascii_case(b"q") {
                    q = q.min(reference_qvalue(value).unwrap_or(0.0));
                }
            }
            let w = weights.entry(key).or_insert(q);
            *w = w.min(q);
        }
    }
    let star = weights.get("*").copied();
    let weight = |k: &str| weights.get(k).copied().or(star).unwrap_or(0.0);
    let (br, gzip) = (weight("br"), weight("gzip"));
    if br <= 0.0 && gzip <= 0.0 {
        Encoding::Identity
    } else if br >= gzip {
        Encoding::Brotli
    } else {
        Encoding::Gzip
    }
}
