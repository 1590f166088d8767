//! The `disk_entry` target: the disk tier's entry decoder and footer parser.

use crate::cache::{self, disk};
use pingora_cache::CacheMeta;

fn check_decoded(file: &[u8], expect: &[u8; 16]) {
    let Ok((footer, range)) = disk::decode(file, expect) else {
        return;
    };
    let footer_end = file.len() - disk::TAIL_LEN;
    let tail = &file[footer_end..];
    assert_eq!(&tail[8..], disk::MAGIC);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    assert_eq!(
        crc32fast::hash(&file[..footer_end]),
        stored,
        "bad checksum accepted"
    );
    assert_eq!(&footer.key, expect);
    assert_eq!(range.start, 0);
    assert_eq!(range.end as u64, footer.body_len);
    let footer_bytes = &file[range.end..footer_end];
    assert_eq!(
        u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]) as usize,
        footer_bytes.len()
    );
    // The footer read back is the footer written, byte for byte (text fields are stored as
    // UTF-8, so a lossy decode is only possible for files this proxy did not write).
    let reencoded = disk::encode_footer(&footer);
    if !footer.user_tag.contains('\u{fffd}') && !footer.url.contains('\u{fffd}') {
        assert_eq!(reencoded, footer_bytes, "footer does not round-trip");
    }
    // A hit deserializes the meta; it must fail cleanly on garbage, and a memory hit must give
    // the same meta as the full parse.
    memory_hit_meta(&footer.meta);
}

/// A memory hit's meta (`MemObject::meta`: rebuilt from parsed fields, or the stored internal
/// half with the header parsed once) must be exactly what a full parse of the stored bytes
/// gives, on every hit; and it gives a meta whenever the full parse does.
fn memory_hit_meta(stored: &(Vec<u8>, Vec<u8>)) {
    let Ok(full) = CacheMeta::deserialize(&stored.0, &stored.1) else {
        return;
    };
    let object = cache::memory::MemObject::new(stored.clone(), bytes::Bytes::new());
    for hit in 0..2 {
        let fast = object.meta().unwrap_or_else(|| {
            panic!("hit {hit}: the full parse succeeded, the fast path gave none")
        });
        assert_eq!(
            fast.serialize().ok(),
            full.serialize().ok(),
            "hit {hit}: the fast path differs from the full parse"
        );
        assert_eq!(fast.headers(), full.headers(), "hit {hit}: header");
    }
}

/// The on-disk entry decoder: `data` is a whole entry file, decoded as it is and again with
/// its magic and checksum repaired (so that the fuzzer reaches the footer parser), and its
/// footer is also parsed the way the start-up scan does (tail and footer, no checksum).
///
/// Invariants: no panic; an accepted entry has the right magic, a matching checksum, the
/// expected key, a body range that is exactly the bytes before the footer, and a footer that
/// re-encodes to the bytes on disk; the meta parser fails cleanly on anything, and a memory
/// hit's meta is exactly the full parse's.
pub fn disk_entry(data: &[u8]) {
    // The key the caller expects: the footer's own key if there is one (so a valid entry is
    // accepted), and a fixed other key (so `WrongKey` is reached).
    let own_key = footer_key(data).unwrap_or([0; 16]);
    check_decoded(data, &own_key);
    check_decoded(data, &[0xa5; 16]);

    // The start-up scan: tail and footer only, no checksum.
    if data.len() >= disk::TAIL_LEN {
        let tail = &data[data.len() - disk::TAIL_LEN..];
        if let Ok(n) = disk::footer_len_from_tail(tail) {
            let end = data.len() - disk::TAIL_LEN;
            if let Some(start) = end.checked_sub(n) {
                if let Ok(footer) = disk::decode_footer(&data[start..end]) {
                    memory_hit_meta(&footer.meta);
                }
            }
        }
    }

    // The same bytes with the magic and checksum made right.
    if data.len() >= disk::TAIL_LEN {
        let mut fixed = data.to_vec();
        let end = fixed.len() - disk::TAIL_LEN;
        let crc = crc32fast::hash(&fixed[..end]);
        fixed[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        fixed[end + 8..].copy_from_slice(disk::MAGIC);
        let key = footer_key(&fixed).unwrap_or([0; 16]);
        check_decoded(&fixed, &key);
    }
}

/// The key field of an entry's footer, if the tail points at one.
fn footer_key(file: &[u8]) -> Option<[u8; 16]> {
    let end = file.len().checked_sub(disk::TAIL_LEN)?;
    let t = &file[end..];
    let n = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize;
    let start = end.checked_sub(n)?;
    file.get(start..start + 16)?.try_into().ok()
}

/// The key an entry file's footer names (a corpus seed's file name does not carry it), or
/// `None` if the file is too short to have a footer.
pub fn stored_key(file: &[u8]) -> Option<[u8; 16]> {
    let end = file.len().checked_sub(disk::TAIL_LEN)?;
    let n = disk::footer_len_from_tail(&file[end..]).ok()?;
    file.get(end.checked_sub(n)?..)?.get(..16)?.try_into().ok()
}

/// The file the disk tier keeps `key`'s entry in, under a zone's directory.
pub fn entry_path(dir: &std::path::Path, key: &[u8; 16]) -> std::path::PathBuf {
    disk::entry_path(dir, key)
}
