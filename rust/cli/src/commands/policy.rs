//! `policy set`: changing the policies a directory sets itself.

use super::stat::{own_info, policy_get};
use crate::error::{CliError, Result};
use eggs_client::Client;
use eggs_protocol::policy::{BlockPolicy, DirectoryInfo, SnapshotPolicy, SpanPolicy, StripePolicy};
use eggs_protocol::InodeId;
use std::io::Write;

/// One of the four policies a directory can set or inherit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    Snapshot,
    Span,
    Block,
    Stripe,
}

/// What `policy set` changes; unset fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyChanges {
    pub snapshot_delete_after_ns: Option<u64>,
    pub snapshot_keep_versions: Option<u16>,
    pub stripe_size: Option<u32>,
    pub span: Option<SpanPolicy>,
    pub block: Option<BlockPolicy>,
    /// Stop setting these here, inheriting them from the parent instead.
    pub inherit: Vec<PolicyKind>,
}

pub async fn set(
    c: &Client,
    path: &str,
    changes: &PolicyChanges,
    out: &mut dyn Write,
) -> Result<()> {
    let id = c.resolve(path).await?;
    if id == InodeId::ROOT && !changes.inherit.is_empty() {
        return Err(CliError::Invalid(
            "the root directory has no parent to inherit from".into(),
        ));
    }
    let own = own_info(c, path, id).await?;
    let effective = c.effective_directory_info(id).await?;
    let new = apply(&own, &effective, changes).map_err(CliError::Invalid)?;
    c.set_directory_info(id, new).await?;
    policy_get(c, path, out).await
}

/// The directory's own policies after `ch`. A snapshot field changed alone keeps the other
/// field's current (possibly inherited) value.
pub(crate) fn apply(
    own: &DirectoryInfo,
    effective: &DirectoryInfo,
    ch: &PolicyChanges,
) -> std::result::Result<DirectoryInfo, String> {
    let mut new = own.clone();
    let touches = |k: PolicyKind| match k {
        PolicyKind::Snapshot => {
            ch.snapshot_delete_after_ns.is_some() || ch.snapshot_keep_versions.is_some()
        }
        PolicyKind::Span => ch.span.is_some(),
        PolicyKind::Block => ch.block.is_some(),
        PolicyKind::Stripe => ch.stripe_size.is_some(),
    };
    for &k in &ch.inherit {
        if touches(k) {
            return Err(format!("cannot both set and inherit the {k:?} policy").to_lowercase());
        }
        match k {
            PolicyKind::Snapshot => new.snapshot = None,
            PolicyKind::Span => new.span = None,
            PolicyKind::Block => new.block = None,
            PolicyKind::Stripe => new.stripe = None,
        }
    }
    if touches(PolicyKind::Snapshot) {
        let current = own.snapshot.clone().or_else(|| effective.snapshot.clone());
        let mut s = current.unwrap_or(SnapshotPolicy {
            delete_after_ns: 0,
            delete_after_versions: 0,
        });
        s.delete_after_ns = ch.snapshot_delete_after_ns.unwrap_or(s.delete_after_ns);
        s.delete_after_versions = ch.snapshot_keep_versions.unwrap_or(s.delete_after_versions);
        new.snapshot = Some(s);
    }
    if let Some(span) = &ch.span {
        new.span = Some(span.clone());
    }
    if let Some(block) = &ch.block {
        new.block = Some(block.clone());
    }
    if let Some(size) = ch.stripe_size {
        new.stripe = Some(StripePolicy {
            target_stripe_size: size,
        });
    }
    new.validate().map_err(str::to_string)?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_span_policy;

    #[test]
    fn snapshot_fields_change_separately() {
        let root = DirectoryInfo::root_default();
        let ch = PolicyChanges {
            snapshot_keep_versions: Some(3),
            ..Default::default()
        };
        let new = apply(&DirectoryInfo::default(), &root, &ch).unwrap();
        let s = new.snapshot.unwrap();
        assert_eq!(s.delete_after_versions, 3);
        assert_eq!(
            s.delete_after_ns,
            root.snapshot.as_ref().unwrap().delete_after_ns
        );
        assert!(new.span.is_none() && new.block.is_none() && new.stripe.is_none());
    }

    #[test]
    fn set_and_inherit() {
        let root = DirectoryInfo::root_default();
        let ch = PolicyChanges {
            span: Some(parse_span_policy("1M:2+1").unwrap()),
            stripe_size: Some(8192),
            ..Default::default()
        };
        let new = apply(&DirectoryInfo::default(), &root, &ch).unwrap();
        assert_eq!(new.stripe.as_ref().unwrap().target_stripe_size, 8192);
        assert_eq!(new.span.as_ref().unwrap().entries.len(), 1);
        let ch = PolicyChanges {
            inherit: vec![PolicyKind::Span],
            ..Default::default()
        };
        let back = apply(&new, &root, &ch).unwrap();
        assert!(back.span.is_none());
        assert!(back.stripe.is_some());
    }

    #[test]
    fn invalid_changes() {
        let root = DirectoryInfo::root_default();
        let both = PolicyChanges {
            stripe_size: Some(8192),
            inherit: vec![PolicyKind::Stripe],
            ..Default::default()
        };
        assert!(apply(&DirectoryInfo::default(), &root, &both).is_err());
        let odd = PolicyChanges {
            stripe_size: Some(1000),
            ..Default::default()
        };
        assert!(apply(&DirectoryInfo::default(), &root, &odd).is_err());
    }
}
