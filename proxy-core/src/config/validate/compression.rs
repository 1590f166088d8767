//! `[compression]`: levels, minimum size and MIME types.

use super::Validator;
use crate::compression as owner;
use crate::config::{CompressionSettings, RawCompression};

impl Validator {
    pub(super) fn compression(&mut self, raw: &RawCompression) -> CompressionSettings {
        let levels = owner::GZIP_LEVELS;
        let gzip_level = raw.gzip_level.unwrap_or(owner::DEFAULT_GZIP_LEVEL);
        if !levels.contains(&gzip_level) {
            self.err(
                "compression.gzip_level",
                gzip_level.to_string(),
                format!("must be between {} and {}", levels.start(), levels.end()),
            );
        }
        let qualities = owner::BROTLI_QUALITIES;
        let brotli_quality = raw.brotli_quality.unwrap_or(owner::DEFAULT_BROTLI_QUALITY);
        if !qualities.contains(&brotli_quality) {
            self.err(
                "compression.brotli_quality",
                brotli_quality.to_string(),
                format!(
                    "must be between {} and {}",
                    qualities.start(),
                    qualities.end()
                ),
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
            enabled: raw.enabled.unwrap_or(owner::DEFAULT_ENABLED),
            gzip_level: gzip_level.clamp(*levels.start(), *levels.end()),
            brotli_quality: brotli_quality.clamp(*qualities.start(), *qualities.end()),
            min_size: self.size(
                "compression.min_size",
                &raw.min_size,
                owner::DEFAULT_MIN_SIZE as u64,
                owner::MIN_SIZE_RANGE,
            ),
            types: raw.types.clone(),
        }
    }
}
