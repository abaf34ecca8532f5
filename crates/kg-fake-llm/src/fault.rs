//! Deterministic fault decisions.
//!
//! Whether a request fails, and how, is a pure function of the seed, the
//! request's text and how many times that same text was asked before. Two
//! runs with the same seed and inputs see the same faults whatever order the
//! requests arrive in, and a retry of a failed request draws again, so a
//! client that retries eventually gets through (unless a rate is 1.0).

/// 64-bit FNV-1a over `bytes`, mixed with `seed`.
pub(crate) fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ splitmix(seed);
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix(h)
}

/// The splitmix64 finaliser: spreads every input bit over the output.
pub(crate) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform draw in [0, 1) from a hash.
pub(crate) fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 500 with an OpenAI-style error body.
    ServerError,
    /// HTTP 429 with `Retry-After`.
    RateLimited,
    /// The answer comes only after [`crate::FakeConfig::hang`].
    Timeout,
    /// Headers, part of the body, then the connection is cut.
    DroppedConnection,
    /// 200, but the content is prose, not JSON.
    NonJson,
    /// 200, JSON, but not of the requested schema.
    OffSchema,
    /// 200, the JSON cut in the middle (`finish_reason: "length"`).
    Truncated,
    /// 200, a model stuck in a loop: the answer's entities repeated as one
    /// endless JSON array until the request's `max_completion_tokens` /
    /// `max_tokens` (else [`crate::DEFAULT_ENDLESS_CAP`]) is reached, then
    /// cut mid-element with `finish_reason: "length"`.
    EndlessJson,
}

impl Fault {
    /// Whether this fault only makes sense for chat completions.
    pub fn chat_only(self) -> bool {
        matches!(
            self,
            Fault::NonJson | Fault::OffSchema | Fault::Truncated | Fault::EndlessJson
        )
    }
}

/// Probability of each fault per request (each in 0..=1; their sum should
/// stay at or below 1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// HTTP 500.
    pub server_error: f64,
    /// HTTP 429 with `Retry-After`.
    pub rate_limited: f64,
    /// A hang longer than the client's timeout.
    pub timeout: f64,
    /// A connection cut mid-answer.
    pub dropped_connection: f64,
    /// Prose instead of JSON (chat only).
    pub non_json: f64,
    /// JSON off the requested schema (chat only).
    pub off_schema: f64,
    /// Truncated JSON (chat only).
    pub truncated: f64,
    /// An endless JSON answer cut at the token cap (chat only).
    pub endless_json: f64,
}

impl FaultRates {
    /// Picks the fault (if any) for a draw `u` in [0, 1).
    pub(crate) fn pick(&self, u: f64, chat: bool) -> Option<Fault> {
        let table = [
            (self.server_error, Fault::ServerError),
            (self.rate_limited, Fault::RateLimited),
            (self.timeout, Fault::Timeout),
            (self.dropped_connection, Fault::DroppedConnection),
            (self.non_json, Fault::NonJson),
            (self.off_schema, Fault::OffSchema),
            (self.truncated, Fault::Truncated),
            (self.endless_json, Fault::EndlessJson),
        ];
        let mut edge = 0.0;
        for (rate, fault) in table {
            if fault.chat_only() && !chat {
                continue;
            }
            edge += rate.clamp(0.0, 1.0);
            if u < edge {
                return Some(fault);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_stable_and_seeded() {
        assert_eq!(hash(1, b"abc"), hash(1, b"abc"));
        assert_ne!(hash(1, b"abc"), hash(2, b"abc"));
        assert_ne!(hash(1, b"abc"), hash(1, b"abd"));
    }

    #[test]
    fn rates_pick_in_proportion() {
        let rates = FaultRates {
            server_error: 0.1,
            rate_limited: 0.2,
            non_json: 0.1,
            ..FaultRates::default()
        };
        let mut counts = std::collections::HashMap::new();
        for i in 0..10_000u64 {
            let f = rates.pick(unit(splitmix(i)), true);
            *counts.entry(f).or_insert(0) += 1;
        }
        let near = |f: Option<Fault>, want: f64| {
            let got = f64::from(*counts.get(&f).unwrap_or(&0)) / 10_000.0;
            (got - want).abs() < 0.02
        };
        assert!(near(Some(Fault::ServerError), 0.1));
        assert!(near(Some(Fault::RateLimited), 0.2));
        assert!(near(Some(Fault::NonJson), 0.1));
        assert!(near(None, 0.6));
        // Chat-only faults never hit embeddings.
        assert!((0..1000u64).all(|i| rates.pick(unit(splitmix(i)), false) != Some(Fault::NonJson)));
    }
}
