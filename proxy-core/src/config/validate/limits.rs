//! `[limits]`: rate-limit classes, the sketch, exemptions, the backend; and a route's `limit`.

use super::{valid_name, Validator};
use crate::config::{
    LimitBackend, LimitClassSettings, LimitsSettings, RawLimits, RawRoute, RedisSettings,
};
use crate::ratelimit;

impl Validator {
    pub(super) fn limits(&mut self, raw: &RawLimits) -> LimitsSettings {
        let mut classes = Vec::new();
        for (name, c) in &raw.classes {
            let field = format!("limits.classes.{name}");
            if !valid_name(name) || name == "off" {
                self.err(
                    field.clone(),
                    format!("{name:?}"),
                    "class names use letters, digits, '_' and '-' (and \"off\" is reserved)",
                );
            }
            let rates = ratelimit::RATE_RANGE;
            let rate = match c.rate {
                Some(r) if rates.contains(&r) => r,
                Some(r) => {
                    self.err(
                        format!("{field}.rate"),
                        r.to_string(),
                        format!(
                            "must be between {} and {} requests per window",
                            rates.start(),
                            rates.end()
                        ),
                    );
                    1
                }
                None => {
                    self.err(
                        format!("{field}.rate"),
                        "",
                        "missing: requests per window, such as 100",
                    );
                    1
                }
            };
            let burst = c.burst.unwrap_or(ratelimit::DEFAULT_BURST);
            if burst > ratelimit::MAX_BURST {
                self.err(
                    format!("{field}.burst"),
                    burst.to_string(),
                    format!("must be at most {}", ratelimit::MAX_BURST),
                );
            }
            classes.push(LimitClassSettings {
                name: name.clone(),
                rate,
                burst: burst.min(ratelimit::MAX_BURST),
                json: c.json.unwrap_or(ratelimit::DEFAULT_JSON),
            });
        }
        if classes.len() > ratelimit::MAX_CLASSES {
            self.err(
                "limits.classes",
                classes.len().to_string(),
                format!("at most {} classes", ratelimit::MAX_CLASSES),
            );
        }
        let sketch_slots = raw.sketch_slots.unwrap_or(ratelimit::DEFAULT_SLOTS);
        let (min_slots, max_slots) = (ratelimit::MIN_SLOTS, ratelimit::MAX_SLOTS);
        if !(min_slots..=max_slots).contains(&sketch_slots) {
            self.err(
                "limits.sketch_slots",
                sketch_slots.to_string(),
                format!(
                    "must be between {min_slots} and {max_slots} (memory is 64 bytes per slot)"
                ),
            );
        }
        let mut exempt_paths = Vec::new();
        for (i, p) in raw.exempt_paths.iter().flatten().enumerate() {
            if p.starts_with('/') {
                exempt_paths.push(p.clone());
            } else {
                self.err(
                    format!("limits.exempt_paths[{i}]"),
                    format!("{p:?}"),
                    "expected a path prefix starting with '/'",
                );
            }
        }
        LimitsSettings {
            window: {
                let w = self.duration("limits.window", &raw.window, ratelimit::DEFAULT_WINDOW);
                if w < ratelimit::MIN_WINDOW || w > ratelimit::MAX_WINDOW || w.subsec_nanos() != 0 {
                    self.err(
                        "limits.window",
                        raw.window.as_ref().map(|d| d.shown()).unwrap_or_default(),
                        "must be whole seconds from 1s to 1d, such as \"60s\"",
                    );
                }
                w
            },
            sketch_slots: sketch_slots.clamp(min_slots, max_slots),
            allow: self.cidrs("limits.allow", raw.allow.as_deref().unwrap_or(&[])),
            exempt_paths,
            max_connections_per_ip: raw
                .max_connections_per_ip
                .unwrap_or(ratelimit::DEFAULT_MAX_CONNECTIONS_PER_IP),
            classes,
            backend: match raw.backend.as_deref() {
                None | Some("local") => LimitBackend::Local,
                Some("redis") => LimitBackend::Redis,
                Some(other) => {
                    self.err(
                        "limits.backend",
                        format!("{other:?}"),
                        "expected \"local\" (this process counts) or \"redis\" (shared through [redis])",
                    );
                    LimitBackend::Local
                }
            },
        }
    }

    /// `backend = "redis"` needs a `[redis]` section.
    pub(super) fn limits_backend(
        &mut self,
        limits: &LimitsSettings,
        redis: Option<&RedisSettings>,
    ) {
        if limits.backend == LimitBackend::Redis && redis.is_none() {
            self.err(
                "limits.backend",
                "\"redis\"",
                "needs a [redis] section with url = \"redis://127.0.0.1:6379/4\", or use backend = \"local\"",
            );
        }
    }

    pub(super) fn route_limit(
        &mut self,
        rfield: &str,
        r: &RawRoute,
        limits: &LimitsSettings,
    ) -> Option<usize> {
        match r.limit.as_deref() {
            Some("off") => None,
            None => limits.classes.iter().position(|c| c.name == "default"),
            Some(name) => match limits.classes.iter().position(|c| c.name == name) {
                Some(i) => Some(i),
                None => {
                    let known: Vec<&str> = limits.classes.iter().map(|c| c.name.as_str()).collect();
                    self.err(
                        format!("{rfield}.limit"),
                        format!("{name:?}"),
                        format!(
                            "no [limits.classes.{name}]; use \"off\" or one of: {}",
                            if known.is_empty() {
                                "(no classes defined)".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    None
                }
            },
        }
    }
}
