//! Cache purges fanned out to every instance through a Redis channel ([`PurgeBus`]).
//!
//! An admin purge (`POST /cache/purge?…`) is applied to this instance's zones at once, then
//! published: [`PUBLISH_LUA`] takes the next number of a sequence kept in Redis
//! (`<key_prefix>purge:seq`, in an epoch `<key_prefix>purge:epoch` that a Redis which lost its
//! data starts afresh) and `PUBLISH`es `"<epoch> <seq> <instance> <what> <arg>"` on
//! `[redis] purge_channel` in one atomic step. Every instance subscribes; each applies the
//! purges of the others to its own memory and disk tiers, and skips its own.
//!
//! # Missed messages: clear what cannot be proved fresh
//!
//! Pub/sub delivers only to connected subscribers, so an instance that was disconnected (Redis
//! restarted, the network dropped, or the process itself was not running) may have missed
//! purges, and any cached object may be one of them. The policy: **an instance keeps its
//! cache only if it can prove it saw every purge; otherwise it clears every zone** (memory and
//! disk, counted in `galion_edge_purge_fanout_total{event="resync_clear"}`). The proof is the
//! sequence: after every (re)subscription the instance reads `(epoch, seq)` from Redis and
//! compares it with the last point it applied (kept in memory, and in a `purge-sync` file in
//! each zone's directory so a restarted process can prove it too). Equal means no purge was
//! published in between: nothing is cleared. While subscribed, a message whose number is not
//! the next one (a gap) clears as well. Clearing is the only choice that is safe without
//! knowing what the missed purges named: an object filled before a missed purge is stale, and
//! one filled after it cannot be told apart by the instance.
//!
//! A purge made while Redis is unreachable is applied here and queued (up to
//! [`QUEUE_LIMIT`]; past that the queue becomes one purge of everything), and published in
//! order when Redis answers again. Other instances clear their cache anyway if Redis lost its
//! data (a new epoch); if it did not, the queued purges reach them when published.

use crate::cache::Caches;
use crate::redis_link::{FailKind, Op, RedisLink};
use ::redis::Script;
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Purges waiting for Redis beyond which the queue collapses into one purge of everything.
pub(crate) const QUEUE_LIMIT: usize = 64;

/// The file in each zone directory that records the last purge applied, `"<epoch> <seq>"`.
pub(crate) const SYNC_FILE: &str = "purge-sync";

/// The publishing script. `KEYS[1]`: sequence, `KEYS[2]`: epoch; `ARGV[1]`: channel,
/// `ARGV[2]`: an epoch to start if there is none, `ARGV[3]`: `"<instance> <what> <arg>"`.
/// Returns the sequence number given to the purge.
pub(crate) const PUBLISH_LUA: &str = r#"
if redis.call('SET', KEYS[2], ARGV[2], 'NX') then
  redis.call('DEL', KEYS[1])
end
local epoch = redis.call('GET', KEYS[2])
local n = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. n .. ' ' .. ARGV[3])
return n
"#;

/// One purge, as the admin listener takes it and as it travels on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purge {
    /// Every variant of one URL (`url=`), in every zone.
    Url(String),
    /// Every URL under a prefix (`prefix=`), in every zone.
    Prefix(String),
    /// One zone, by name (`zone=`).
    Zone(String),
    /// Everything (`all=1`).
    All,
}

impl Purge {
    /// The purge a `/cache/purge` query asks for, or why it names none.
    pub(crate) fn from_query(query: &str) -> Result<Purge, String> {
        let param = |name: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| percent_decode(v))
            })
        };
        if let Some(url) = param("url") {
            return Ok(Purge::Url(url));
        }
        if let Some(prefix) = param("prefix") {
            if prefix
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .is_empty()
            {
                return Err(
                    "prefix must name at least a host; use all=1 to purge everything".into(),
                );
            }
            return Ok(Purge::Prefix(prefix));
        }
        if let Some(name) = param("zone") {
            return Ok(Purge::Zone(name));
        }
        if param("all").is_some() {
            return Ok(Purge::All);
        }
        Err("say what to purge: url=, prefix=, zone= or all=1".into())
    }

    /// Applies the purge to this instance's zones: how many entries went, or an error for a
    /// zone name that does not exist here.
    pub(crate) fn apply(&self, caches: &Caches) -> Result<usize, String> {
        let each = |f: &dyn Fn(&crate::cache::TieredStorage) -> usize| {
            caches.zones.iter().map(|z| f(z.storage)).sum()
        };
        match self {
            Purge::Url(u) => Ok(each(&|z| z.purge_url(u))),
            Purge::Prefix(p) => Ok(each(&|z| z.purge_prefix(p))),
            Purge::Zone(name) => match caches.zone(name) {
                Some(z) => Ok(z.storage.purge_all()),
                None => Err(format!("no cache zone named {name:?}")),
            },
            Purge::All => Ok(each(&|z| z.purge_all())),
        }
    }

    /// `"<what> <arg>"` for the wire (the argument last: it may hold spaces).
    fn encode(&self) -> String {
        match self {
            Purge::Url(u) => format!("url {u}"),
            Purge::Prefix(p) => format!("prefix {p}"),
            Purge::Zone(z) => format!("zone {z}"),
            Purge::All => "all -".to_string(),
        }
    }

    fn decode(what: &str, arg: &str) -> Option<Purge> {
        match what {
            "url" => Some(Purge::Url(arg.to_string())),
            "prefix" => Some(Purge::Prefix(arg.to_string())),
            "zone" => Some(Purge::Zone(arg.to_string())),
            "all" => Some(Purge::All),
            _ => None,
        }
    }
}

/// Decodes `%XX` escapes and `+` (as a space) in a query value; malformed escapes are kept as
/// they are. Never fails; invalid UTF-8 is replaced.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            // Two hex digits exactly: `u8::from_str_radix` alone also takes a sign (`%+5`).
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What happened to a purge beyond this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fanout {
    /// Published: every subscribed instance applies it.
    Published,
    /// Redis did not answer; it is queued and published when Redis is back.
    Queued,
}

impl Fanout {
    /// `"published"` or `"queued"`, as the admin answer says it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Fanout::Published => "published",
            Fanout::Queued => "queued",
        }
    }
}

/// A point in the purge sequence: `epoch` is empty while nothing was ever published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct SyncPoint {
    epoch: String,
    seq: u64,
}

impl SyncPoint {
    fn encode(&self) -> String {
        format!(
            "{} {}\n",
            if self.epoch.is_empty() {
                "-"
            } else {
                &self.epoch
            },
            self.seq
        )
    }

    fn decode(text: &str) -> Option<SyncPoint> {
        let mut it = text.split_whitespace();
        let epoch = it.next()?;
        let seq = it.next()?.parse().ok()?;
        Some(SyncPoint {
            epoch: if epoch == "-" {
                String::new()
            } else {
                epoch.to_string()
            },
            seq,
        })
    }

    /// Whether `next` follows this point with nothing in between.
    fn followed_by(&self, next: &SyncPoint) -> bool {
        if self.epoch == next.epoch {
            next.seq == self.seq + 1
        } else {
            // A fresh epoch's first purge follows a Redis that had none.
            self.epoch.is_empty() && self.seq == 0 && next.seq == 1
        }
    }

    /// Whether `other` is this point or one before it (a message already accounted for).
    fn covers(&self, other: &SyncPoint) -> bool {
        self.epoch == other.epoch && other.seq <= self.seq
    }
}

/// The purge fan-out of one instance. Created with the [`RedisLink`] when `[redis]` names a
/// `purge_channel`; the [`RedisService`](crate::redis_link::RedisService) runs its
/// subscriber and publishes its queue.
pub(crate) struct PurgeBus {
    link: Arc<RedisLink>,
    /// The zones purges apply to (the same across reloads).
    caches: Arc<Caches>,
    channel: String,
    seq_key: String,
    epoch_key: String,
    script: Script,
    queue: tokio::sync::Mutex<VecDeque<Purge>>,
    /// The last point applied (None until the first sync of this process).
    last: std::sync::Mutex<Option<SyncPoint>>,
}

impl std::fmt::Debug for PurgeBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeBus")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl crate::redis_link::LinkUser for PurgeBus {
    async fn connected(&self) {
        self.flush_queue().await;
    }

    async fn run(&self) {
        self.run_subscriber().await;
    }
}

impl PurgeBus {
    /// A bus on `channel` through `link` (keys under the link's `key_prefix`), applying other
    /// instances' purges to `caches`.
    pub(crate) fn new(link: Arc<RedisLink>, channel: &str, caches: Arc<Caches>) -> PurgeBus {
        let prefix = &link.settings().key_prefix;
        PurgeBus {
            seq_key: format!("{prefix}purge:seq"),
            epoch_key: format!("{prefix}purge:epoch"),
            channel: channel.to_string(),
            script: Script::new(PUBLISH_LUA),
            queue: tokio::sync::Mutex::new(VecDeque::new()),
            last: std::sync::Mutex::new(None),
            link,
            caches,
        }
    }

    /// The channel purges travel on.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// Publishes a purge this instance has applied. Purges are published in order: one that
    /// cannot be published now waits in the queue with every later one, until
    /// [`PurgeBus::flush_queue`] succeeds. Never fails.
    pub(crate) async fn publish(&self, purge: Purge) -> Fanout {
        {
            let mut q = self.queue.lock().await;
            if q.len() >= QUEUE_LIMIT {
                q.clear();
                q.push_back(Purge::All);
                log::warn!(
                    "purge fan-out: more than {QUEUE_LIMIT} purges wait for Redis; they will go out as one purge of everything"
                );
            } else if !q.contains(&Purge::All) {
                q.push_back(purge);
            }
        }
        if self.flush_queue().await {
            Fanout::Published
        } else {
            self.link
                .stats
                .purges_queued
                .fetch_add(1, Ordering::Relaxed);
            self.link.poke();
            Fanout::Queued
        }
    }

    /// Publishes the queued purges in order; true when the queue is empty.
    pub(crate) async fn flush_queue(&self) -> bool {
        let mut q = self.queue.lock().await;
        while let Some(p) = q.front() {
            let Some(mut conn) = self.link.conn() else {
                return false;
            };
            let body = format!("{} {}", self.link.instance_id(), p.encode());
            let epoch = format!("{:016x}", rand::random::<u64>());
            let mut call = self.script.key(&self.seq_key);
            call.key(&self.epoch_key)
                .arg(&self.channel)
                .arg(epoch)
                .arg(body);
            let limit = self.link.settings().connect_timeout;
            match tokio::time::timeout(limit, call.invoke_async::<u64>(&mut conn)).await {
                Ok(Ok(_)) => {
                    self.link.succeeded();
                    self.link
                        .stats
                        .purges_published
                        .fetch_add(1, Ordering::Relaxed);
                    q.pop_front();
                }
                Ok(Err(e)) => {
                    self.link.failed(Op::Publish, FailKind::of(&e), &e);
                    return false;
                }
                Err(_) => {
                    self.link
                        .failed(Op::Publish, FailKind::Timeout, &"no answer");
                    return false;
                }
            }
        }
        true
    }

    /// Subscribes and applies other instances' purges to the bus's zones, resubscribing every `retry_interval` after a loss; runs until dropped. Each
    /// (re)subscription resyncs as the module docs say.
    pub(crate) async fn run_subscriber(&self) {
        let retry = self.link.settings().retry_interval;
        let mut told_lost = false;
        loop {
            match self.subscribe_once().await {
                Ok(()) => {
                    told_lost = false;
                    log::warn!(
                        "purge fan-out: subscription to {} lost; resubscribing every {retry:?}",
                        self.channel
                    );
                }
                Err(e) => {
                    if !told_lost {
                        told_lost = true;
                        log::warn!(
                            "purge fan-out: cannot subscribe to {} ({e}); retrying every {retry:?}",
                            self.channel
                        );
                    }
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// One subscription: connect, subscribe, resync, then apply messages until the connection
    /// ends (`Ok`), or the error that prevented it.
    async fn subscribe_once(&self) -> Result<(), ::redis::RedisError> {
        let limit = self.link.settings().connect_timeout;
        let timed_out =
            || ::redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let fail = |e: ::redis::RedisError| {
            self.link.failed(Op::Subscribe, FailKind::of(&e), &e);
            e
        };
        let mut pubsub = tokio::time::timeout(limit, self.link.client().get_async_pubsub())
            .await
            .map_err(|_| timed_out())
            .and_then(|r| r)
            .map_err(fail)?;
        tokio::time::timeout(limit, pubsub.subscribe(&self.channel))
            .await
            .map_err(|_| timed_out())
            .and_then(|r| r)
            .map_err(fail)?;
        // The resync read needs the pool; the maintenance loop brings it up.
        let point = loop {
            if let Some(mut conn) = self.link.conn() {
                let mut mget = ::redis::cmd("MGET");
                mget.arg(&self.epoch_key).arg(&self.seq_key);
                let read = mget.query_async::<(Option<String>, Option<u64>)>(&mut conn);
                match tokio::time::timeout(limit, read).await {
                    Ok(Ok((epoch, seq))) => {
                        break SyncPoint {
                            epoch: epoch.unwrap_or_default(),
                            seq: seq.unwrap_or(0),
                        }
                    }
                    Ok(Err(e)) => return Err(fail(e)),
                    Err(_) => return Err(fail(timed_out())),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.resync(point);
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(text) = std::str::from_utf8(msg.get_payload_bytes()) else {
                continue;
            };
            self.receive(text);
        }
        Ok(())
    }

    /// Compares the point read from Redis after subscribing with the last one applied, clears
    /// the zones that cannot be proved fresh, and records the point.
    fn resync(&self, now: SyncPoint) {
        let last = self.last.lock().map(|l| l.clone()).unwrap_or(None);
        let mut cleared = Vec::new();
        for z in &self.caches.zones {
            let fresh = match &last {
                Some(l) => *l == now,
                // First sync of this process: the zone's file says what it saw before.
                None => read_sync_file(&z.settings.path).is_some_and(|p| p == now),
            };
            if !fresh {
                let n = z.storage.purge_all();
                if n > 0 {
                    cleared.push(format!("{} ({n} entries)", z.settings.name));
                }
            }
        }
        // Clearing an empty zone loses nothing: only real clears are counted and logged.
        if !cleared.is_empty() {
            self.link
                .stats
                .purge_resync_clears
                .fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "purge fan-out: subscribed to {}; purges may have been missed (now at {}), cleared {}",
                self.channel,
                now.encode().trim_end(),
                cleared.join(", ")
            );
        } else {
            log::info!(
                "purge fan-out: subscribed to {}; no purge missed (at {})",
                self.channel,
                now.encode().trim_end()
            );
        }
        self.set_last(&self.caches, now);
    }

    /// Handles one message: applies another instance's purge, skips this instance's own, and
    /// clears everything on a gap in the sequence.
    fn receive(&self, text: &str) {
        let mut parts = text.splitn(5, ' ');
        let (Some(epoch), Some(seq), Some(origin), Some(what), arg) = (
            parts.next(),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
            parts.next(),
            parts.next(),
            parts.next().unwrap_or(""),
        ) else {
            log::warn!(
                "purge fan-out: ignoring a malformed message on {}",
                self.channel
            );
            return;
        };
        let point = SyncPoint {
            epoch: epoch.to_string(),
            seq,
        };
        let last = self.last.lock().map(|l| l.clone()).unwrap_or(None);
        if let Some(l) = &last {
            if l.covers(&point) {
                return;
            }
            if !l.followed_by(&point) {
                let n: usize = self
                    .caches
                    .zones
                    .iter()
                    .map(|z| z.storage.purge_all())
                    .sum();
                if n > 0 {
                    self.link
                        .stats
                        .purge_resync_clears
                        .fetch_add(1, Ordering::Relaxed);
                }
                log::warn!(
                    "purge fan-out: purges missed (had {}, got {}); cleared every zone ({n} entries)",
                    l.encode().trim_end(),
                    point.encode().trim_end()
                );
                self.set_last(&self.caches, point);
                return;
            }
        }
        if origin != self.link.instance_id() {
            match Purge::decode(what, arg) {
                Some(p) => {
                    let n = p.apply(&self.caches).unwrap_or(0);
                    self.link
                        .stats
                        .purges_applied
                        .fetch_add(1, Ordering::Relaxed);
                    log::info!("purge fan-out: applied {what} {arg} from {origin}: {n} entries");
                }
                None => log::warn!("purge fan-out: unknown purge {what:?} from {origin}"),
            }
        }
        self.set_last(&self.caches, point);
    }

    /// Records `point` as applied, in memory and in every zone's sync file.
    fn set_last(&self, caches: &Caches, point: SyncPoint) {
        for z in &caches.zones {
            let path = z.settings.path.join(SYNC_FILE);
            if let Err(e) = std::fs::write(&path, point.encode()) {
                log::warn!("purge fan-out: cannot write {}: {e}", path.display());
            }
        }
        if let Ok(mut l) = self.last.lock() {
            *l = Some(point);
        }
    }
}

fn read_sync_file(dir: &Path) -> Option<SyncPoint> {
    SyncPoint::decode(&std::fs::read_to_string(dir.join(SYNC_FILE)).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_takes_two_hex_digits_only() {
        assert_eq!(percent_decode("a%20b+c%2Fd%c3%a9"), "a b c/dé");
        // A sign is not a hex digit: kept as it is (it decoded to 0x05 before).
        assert_eq!(percent_decode("%+5x"), "% 5x");
        assert_eq!(percent_decode("%-5"), "%-5");
        // Short, malformed and trailing escapes are kept.
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz%"), "%zz%");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%41%4a%4A"), "AJJ");
    }

    fn p(epoch: &str, seq: u64) -> SyncPoint {
        SyncPoint {
            epoch: epoch.into(),
            seq,
        }
    }

    #[test]
    fn sequence_rules() {
        assert!(p("a", 4).followed_by(&p("a", 5)));
        assert!(!p("a", 4).followed_by(&p("a", 6)), "a gap");
        assert!(
            !p("a", 4).followed_by(&p("b", 1)),
            "a new epoch after purges"
        );
        assert!(p("", 0).followed_by(&p("b", 1)), "the first purge ever");
        assert!(!p("", 0).followed_by(&p("b", 2)));
        assert!(p("a", 4).covers(&p("a", 3)));
        assert!(p("a", 4).covers(&p("a", 4)));
        assert!(!p("a", 4).covers(&p("b", 1)));
        for point in [p("", 0), p("0123abcd", 77)] {
            assert_eq!(SyncPoint::decode(&point.encode()), Some(point));
        }
        assert_eq!(SyncPoint::decode("garbage"), None);
    }

    #[test]
    fn purges_round_trip_and_parse() {
        for purge in [
            Purge::Url("https://galion.app/a b?c=1".into()),
            Purge::Prefix("galion.app/api/".into()),
            Purge::Zone("api".into()),
            Purge::All,
        ] {
            let text = purge.encode();
            let (what, arg) = text.split_once(' ').unwrap();
            assert_eq!(Purge::decode(what, arg), Some(purge));
        }
        assert_eq!(
            Purge::from_query("url=https%3A%2F%2Fgalion.app%2Fx"),
            Ok(Purge::Url("https://galion.app/x".into()))
        );
        assert_eq!(Purge::from_query("all=1"), Ok(Purge::All));
        assert!(Purge::from_query("prefix=https://").is_err());
        assert!(Purge::from_query("nothing=1").is_err());
    }
}
