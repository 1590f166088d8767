//! The on-disk entry format of the disk tier, and its decoder.
//!
//! One file per entry, at `ZONE/ab/abcdef…` (the hex of the combined cache key). The body comes
//! first so it can be streamed to disk as it arrives; the footer, written last, holds the key,
//! the URL, the serialized `CacheMeta` and the body length, and a CRC-32 covers body and footer:
//!
//! ```text
//! body … | footer | crc32(body ‖ footer): u32 | footer_len: u32 | MAGIC (8 bytes)
//! footer = key[16] primary[16] has_variance:u8 [variance[16]] tag_len:u16 tag
//!          url_len:u32 url meta0_len:u32 meta0 meta1_len:u32 meta1 body_len:u64
//! ```
//!
//! Files are written under `ZONE/tmp/` and renamed into place, so a crash leaves either the old
//! entry, the new one, or a temp file that the next start deletes. [`decode`] checks every length
//! against the file and the checksum over all of it before any byte is served: a torn,
//! truncated or corrupted entry is reported, never returned.

use pingora_cache::key::HashBinary;
use std::path::{Path, PathBuf};

/// Trailing magic of every entry file (format version 1).
pub(crate) const MAGIC: &[u8; 8] = b"GEDGEC01";
/// Bytes after the footer: crc, footer length, magic.
pub(crate) const TAIL_LEN: usize = 4 + 4 + 8;
/// Largest footer accepted (meta is the response header; far below this in practice).
pub(crate) const MAX_FOOTER: usize = 1 << 20;

/// What the footer describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Combined key (primary and variance): the file's name.
    pub key: HashBinary,
    /// Primary key hash: all variants of one URL share it.
    pub primary: HashBinary,
    /// Variance hash, if the response varies.
    pub variance: Option<HashBinary>,
    /// The key's user tag (the zone name).
    pub user_tag: String,
    /// The primary key text (scheme, host, path and query), for purges by URL prefix.
    pub url: String,
    /// `CacheMeta::serialize()` output.
    pub meta: (Vec<u8>, Vec<u8>),
    /// Body length.
    pub body_len: u64,
}

/// Why an entry file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    /// Shorter than a tail, or the magic is wrong.
    #[error("not a cache entry (bad magic or truncated)")]
    BadMagic,
    /// A length field points outside the file.
    #[error("a length field is inconsistent with the file size")]
    BadLength,
    /// The checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// The footer names another key than the file name.
    #[error("entry belongs to another key")]
    WrongKey,
}

/// Hex of a 16-byte hash.
pub(crate) fn hex(h: &HashBinary) -> String {
    let mut s = String::with_capacity(32);
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Where the entry for `key` lives under `dir`.
pub(crate) fn entry_path(dir: &Path, key: &HashBinary) -> PathBuf {
    let h = hex(key);
    dir.join(&h[..2]).join(h)
}

/// Serializes a footer.
pub(crate) fn encode_footer(f: &Footer) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + f.url.len() + f.meta.0.len() + f.meta.1.len());
    out.extend_from_slice(&f.key);
    out.extend_from_slice(&f.primary);
    match &f.variance {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
    let tag = &f.user_tag.as_bytes()[..f.user_tag.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
    out.extend_from_slice(tag);
    for part in [f.url.as_bytes(), &f.meta.0, &f.meta.1] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&f.body_len.to_le_bytes());
    out
}

/// The tail written after the footer, given the running checksum over body and footer.
pub(crate) fn tail(crc: u32, footer_len: usize) -> [u8; TAIL_LEN] {
    let mut t = [0u8; TAIL_LEN];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    t[4..8].copy_from_slice(&(footer_len as u32).to_le_bytes());
    t[8..].copy_from_slice(MAGIC);
    t
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.pos.checked_add(n).ok_or(Corrupt::BadLength)?;
        let s = self.buf.get(self.pos..end).ok_or(Corrupt::BadLength)?;
        self.pos = end;
        Ok(s)
    }
    fn hash(&mut self) -> Result<HashBinary, Corrupt> {
        let mut h = [0u8; 16];
        h.copy_from_slice(self.take(16)?);
        Ok(h)
    }
    fn u16(&mut self) -> Result<usize, Corrupt> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, Corrupt> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, Corrupt> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

/// Parses a footer (without checking the checksum).
pub(crate) fn decode_footer(footer: &[u8]) -> Result<Footer, Corrupt> {
    let mut r = Reader {
        buf: footer,
        pos: 0,
    };
    let key = r.hash()?;
    let primary = r.hash()?;
    let variance = match r.take(1)?[0] {
        0 => None,
        1 => Some(r.hash()?),
        _ => return Err(Corrupt::BadLength),
    };
    let n = r.u16()?;
    let user_tag = String::from_utf8_lossy(r.take(n)?).into_owned();
    let n = r.u32()?;
    let url = String::from_utf8_lossy(r.take(n)?).into_owned();
    let n = r.u32()?;
    let m0 = r.take(n)?.to_vec();
    let n = r.u32()?;
    let m1 = r.take(n)?.to_vec();
    let body_len = r.u64()?;
    if r.pos != footer.len() {
        return Err(Corrupt::BadLength);
    }
    Ok(Footer {
        key,
        primary,
        variance,
        user_tag,
        url,
        meta: (m0, m1),
        body_len,
    })
}

/// Reads the footer length from a file's last [`TAIL_LEN`] bytes.
pub(crate) fn footer_len_from_tail(t: &[u8]) -> Result<usize, Corrupt> {
    if t.len() != TAIL_LEN || &t[8..] != MAGIC {
        return Err(Corrupt::BadMagic);
    }
    let n = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize;
    if n > MAX_FOOTER {
        return Err(Corrupt::BadLength);
    }
    Ok(n)
}

/// Validates a whole entry file and returns its footer and the body's byte range.
pub fn decode(
    file: &[u8],
    expect: &HashBinary,
) -> Result<(Footer, std::ops::Range<usize>), Corrupt> {
    if file.len() < TAIL_LEN {
        return Err(Corrupt::BadMagic);
    }
    let t = &file[file.len() - TAIL_LEN..];
    let footer_len = footer_len_from_tail(t)?;
    let footer_end = file.len() - TAIL_LEN;
    let footer_start = footer_end
        .checked_sub(footer_len)
        .ok_or(Corrupt::BadLength)?;
    let stored = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
    if crc32fast::hash(&file[..footer_end]) != stored {
        return Err(Corrupt::Checksum);
    }
    let footer = decode_footer(&file[footer_start..footer_end])?;
    if footer.body_len != footer_start as u64 {
        return Err(Corrupt::BadLength);
    }
    if &footer.key != expect {
        return Err(Corrupt::WrongKey);
    }
    Ok((footer, 0..footer_start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &[u8]) -> (Vec<u8>, Footer) {
        let f = Footer {
            key: [7; 16],
            primary: [3; 16],
            variance: Some([9; 16]),
            user_tag: "api".into(),
            url: "https://galion.app/api/x?y=1".into(),
            meta: (vec![1, 2, 3], vec![4, 5]),
            body_len: body.len() as u64,
        };
        let footer = encode_footer(&f);
        let mut file = body.to_vec();
        file.extend_from_slice(&footer);
        let crc = crc32fast::hash(&file);
        file.extend_from_slice(&tail(crc, footer.len()));
        (file, f)
    }

    #[test]
    fn round_trip() {
        let (file, f) = entry(b"hello body");
        let (got, range) = decode(&file, &[7; 16]).unwrap();
        assert_eq!(got, f);
        assert_eq!(&file[range], b"hello body");
    }

    #[test]
    fn every_single_byte_flip_and_truncation_is_caught() {
        let (file, _) = entry(&[0x5a; 300]);
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad, &[7; 16]).is_err(), "flip at {i} not caught");
        }
        for n in 0..file.len() {
            assert!(
                decode(&file[..n], &[7; 16]).is_err(),
                "truncation to {n} not caught"
            );
        }
        assert_eq!(decode(&file, &[8; 16]), Err(Corrupt::WrongKey));
    }
}
