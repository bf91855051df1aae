//! Directory policies. Each directory may set any of them; unset ones are inherited from the
//! nearest ancestor that sets them (the root always sets all of them).

use crate::EncodedLen;
use bincode::{Decode, Encode};

/// When snapshot edges (deleted or overwritten names) expire.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct SnapshotPolicy {
    /// Expire snapshot edges this long after they stopped being current; 0 = never by age.
    pub delete_after_ns: u64,
    /// Keep at most this many snapshot versions of a name; 0 = no limit.
    pub delete_after_versions: u16,
}

/// Parity scheme of a span: `data` blocks plus `parity` Reed-Solomon blocks. `data == 1`
/// means mirroring (`parity` extra copies).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct Parity {
    pub data: u8,
    pub parity: u8,
}

impl Parity {
    pub const MAX_DATA: u8 = 16;
    pub const MAX_PARITY: u8 = 16;
    pub fn is_valid(self) -> bool {
        (1..=Self::MAX_DATA).contains(&self.data) && self.parity <= Self::MAX_PARITY
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct SpanPolicyEntry {
    /// Spans up to this many bytes use `parity`.
    pub max_span_size: u32,
    pub parity: Parity,
}

/// Span size ladder: entries sorted by `max_span_size`; the last one also sets the largest span.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct SpanPolicy {
    pub entries: Vec<SpanPolicyEntry>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub enum StorageClass {
    Inline,
    Flash,
    Hdd,
}

#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockPolicyEntry {
    /// Blocks of at least this many bytes go to `storage_class`.
    pub min_size: u32,
    pub storage_class: StorageClass,
}

#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct BlockPolicy {
    pub entries: Vec<BlockPolicyEntry>,
}

#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct StripePolicy {
    pub target_stripe_size: u32,
}

/// The policies a directory sets itself (`None` = inherit).
#[derive(Clone, PartialEq, Eq, Debug, Default, Encode, Decode, EncodedLen)]
pub struct DirectoryInfo {
    pub snapshot: Option<SnapshotPolicy>,
    pub span: Option<SpanPolicy>,
    pub block: Option<BlockPolicy>,
    pub stripe: Option<StripePolicy>,
}

impl DirectoryInfo {
    /// The root's policies: keep snapshots 30 days, mirror small spans, RS(10,4) for large ones.
    pub fn root_default() -> DirectoryInfo {
        DirectoryInfo {
            snapshot: Some(SnapshotPolicy {
                delete_after_ns: 30 * 24 * 3600 * 1_000_000_000,
                delete_after_versions: 0,
            }),
            span: Some(SpanPolicy {
                entries: vec![
                    SpanPolicyEntry {
                        max_span_size: 64 << 10,
                        parity: Parity { data: 1, parity: 2 },
                    },
                    SpanPolicyEntry {
                        max_span_size: 10 << 20,
                        parity: Parity { data: 4, parity: 4 },
                    },
                    SpanPolicyEntry {
                        max_span_size: 100 << 20,
                        parity: Parity {
                            data: 10,
                            parity: 4,
                        },
                    },
                ],
            }),
            block: Some(BlockPolicy {
                entries: vec![
                    BlockPolicyEntry {
                        min_size: 0,
                        storage_class: StorageClass::Flash,
                    },
                    BlockPolicyEntry {
                        min_size: 2 << 20,
                        storage_class: StorageClass::Hdd,
                    },
                ],
            }),
            stripe: Some(StripePolicy {
                target_stripe_size: 1 << 20,
            }),
        }
    }

    /// Checks that every set policy is internally consistent.
    pub fn validate(&self) -> Result<(), &'static str> {
        if let Some(span) = &self.span {
            if span.entries.is_empty() {
                return Err("span policy has no entries");
            }
            if span.entries.iter().any(|e| !e.parity.is_valid()) {
                return Err("span policy has an invalid parity");
            }
            if span
                .entries
                .windows(2)
                .any(|w| w[0].max_span_size >= w[1].max_span_size)
            {
                return Err("span policy sizes must increase");
            }
        }
        if let Some(block) = &self.block {
            if block.entries.is_empty() {
                return Err("block policy has no entries");
            }
            if block
                .entries
                .windows(2)
                .any(|w| w[0].min_size >= w[1].min_size)
            {
                return Err("block policy sizes must increase");
            }
        }
        if let Some(stripe) = &self.stripe {
            if stripe.target_stripe_size == 0 || stripe.target_stripe_size % 4096 != 0 {
                return Err("stripe size must be a positive multiple of 4096");
            }
        }
        Ok(())
    }

    /// Fills every unset policy of `self` from `parent` (which is already resolved).
    pub fn inherit_from(&mut self, parent: &DirectoryInfo) {
        if self.snapshot.is_none() {
            self.snapshot = parent.snapshot.clone();
        }
        if self.span.is_none() {
            self.span = parent.span.clone();
        }
        if self.block.is_none() {
            self.block = parent.block.clone();
        }
        if self.stripe.is_none() {
            self.stripe = parent.stripe.clone();
        }
    }

    pub fn is_complete(&self) -> bool {
        self.snapshot.is_some()
            && self.span.is_some()
            && self.block.is_some()
            && self.stripe.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_default_is_valid_and_complete() {
        let d = DirectoryInfo::root_default();
        assert!(d.validate().is_ok());
        assert!(d.is_complete());
    }

    #[test]
    fn inheritance_fills_only_unset() {
        let mut child = DirectoryInfo {
            stripe: Some(StripePolicy {
                target_stripe_size: 8192,
            }),
            ..Default::default()
        };
        child.inherit_from(&DirectoryInfo::root_default());
        assert!(child.is_complete());
        assert_eq!(child.stripe.unwrap().target_stripe_size, 8192);
    }
}
