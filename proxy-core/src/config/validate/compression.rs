//! `[compression]`: levels, minimum size and MIME types.

use super::Validator;
use crate::config::{CompressionSettings, RawCompression};

impl Validator {
    pub(super) fn compression(&mut self, raw: &RawCompression) -> CompressionSettings {
        let gzip_level = raw
            .gzip_level
            .unwrap_or(crate::compression::DEFAULT_GZIP_LEVEL);
        if !(1..=9).contains(&gzip_level) {
            self.err(
                "compression.gzip_level",
                gzip_level.to_string(),
                "must be between 1 and 9",
            );
        }
        let brotli_quality = raw
            .brotli_quality
            .unwrap_or(crate::compression::DEFAULT_BROTLI_QUALITY);
        if brotli_quality > 11 {
            self.err(
                "compression.brotli_quality",
                brotli_quality.to_string(),
                "must be between 0 and 11",
            );
        }
        if let Some(types) = &raw.types {
            for (i, t) in types.iter().enumerate() {
                if !t.contains('/') || t.chars().any(|c| c.is_whitespace() || c == ';') {
                    self.err(
                        format!("compression.types[{i}]"),
                        format!("{t:?}"),
                        "expected a MIME type such as \"application/json\" or a prefix such as \"text/\"",
                    );
                }
            }
        }
        CompressionSettings {
            enabled: raw.enabled.unwrap_or(true),
            gzip_level: gzip_level.clamp(1, 9),
            brotli_quality: brotli_quality.min(11),
            min_size: self.size(
                "compression.min_size",
                &raw.min_size,
                crate::compression::DEFAULT_MIN_SIZE as u64,
                0,
                1 << 30,
            ),
            types: raw.types.clone(),
        }
    }
}
