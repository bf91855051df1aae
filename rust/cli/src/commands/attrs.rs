//! `chmod` and `chown`: changing an inode's mode, owner and group as this process (its uid,
//! gid and groups), which the shard allows by Linux's rules (`eggs_protocol::posix`): only
//! root gives inodes to other users, the owner changes the group to one of its own groups,
//! and the owner changes the mode. Paths are not followed past a final symlink.

use crate::accounts::Accounts;
use crate::error::{CliError, Result};
use crate::format::mode_string;
use crate::perms::{ModeSpec, OwnerSpec};
use eggs_client::{Client, ClientError};
use eggs_protocol::posix::{AttrChange, PERM_BITS, S_IFLNK, S_ISGID};
use eggs_protocol::shard::SetAttrResp;
use eggs_protocol::{Caller, EggsError, InodeAttrs, InodeId};
use std::io::Write;

/// Sets the permission bits of `path` to what `mode` makes of them. When the shard keeps
/// other bits than asked (it drops setgid where the caller is not in the inode's group, as
/// Linux does), says so.
pub async fn chmod(c: &Client, path: &str, mode: &ModeSpec, out: &mut dyn Write) -> Result<()> {
    let id = c.resolve(path).await?;
    let attrs = c.stat(id).await?.attrs();
    if attrs.file_type() == S_IFLNK {
        return Err(CliError::Invalid(format!(
            "{path} is a symlink: symlinks have no mode of their own to change"
        )));
    }
    let want = mode.apply(attrs.mode, attrs.is_dir(), c.umask());
    let change = AttrChange {
        mode: Some(want),
        ..Default::default()
    };
    let r = set_attr(c, id, path, &attrs, change).await?;
    let got = r.attrs.mode & PERM_BITS;
    if got != want {
        let why = if got == want & !S_ISGID {
            " (only root and members of its group may set setgid)"
        } else {
            ""
        };
        writeln!(
            out,
            "{path}: the mode is {got:04o} ({}), not {want:04o}{why}",
            mode_string(r.attrs.mode)
        )?;
    }
    Ok(())
}

/// Gives `path` the owner and/or group of `owner` (a symlink itself, as `chown -h` does).
pub async fn chown(c: &Client, path: &str, owner: &OwnerSpec) -> Result<()> {
    let id = c.resolve(path).await?;
    let attrs = c.stat(id).await?.attrs();
    let change = AttrChange {
        uid: owner.uid,
        gid: owner.gid,
        ..Default::default()
    };
    set_attr(c, id, path, &attrs, change).await?;
    Ok(())
}

/// `Client::set_attr` as this process; a refusal says why, as far as the attributes read
/// before tell.
async fn set_attr(
    c: &Client,
    id: InodeId,
    path: &str,
    attrs: &InodeAttrs,
    change: AttrChange,
) -> Result<SetAttrResp> {
    match c.set_attr(id, None, c.caller(), change.clone()).await {
        Ok(r) => Ok(r),
        Err(ClientError::Eggs { err, .. })
            if matches!(err, EggsError::NotPermitted | EggsError::AccessDenied) =>
        {
            let why = refusal(path, attrs, c.caller(), &change, &Accounts::load());
            Err(CliError::Refused { err, why })
        }
        Err(e) => Err(e.into()),
    }
}

/// Why `caller` may not make `change` to an inode with `attrs`, in the terms of Linux's
/// rules (the shard decides; this only explains).
pub(crate) fn refusal(
    path: &str,
    attrs: &InodeAttrs,
    caller: &Caller,
    change: &AttrChange,
    accounts: &Accounts,
) -> String {
    let user = |uid| match accounts.user_name(uid) {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    };
    let group = |gid| match accounts.group_name(gid) {
        Some(n) => format!("group {gid} ({n})"),
        None => format!("group {gid}"),
    };
    let owner = user(attrs.uid);
    let me = user(caller.uid);
    if change.uid.is_some_and(|u| u != attrs.uid) && !caller.is_root() {
        return format!("only root may give {path} to another user (you are {me})");
    }
    if !caller.is_root() && caller.uid != attrs.uid {
        return format!(
            "{path} belongs to {owner}, and only its owner or root may change it (you are {me})"
        );
    }
    if let Some(gid) = change
        .gid
        .filter(|g| !caller.in_group(*g) && *g != attrs.gid)
    {
        return format!(
            "{me} is not in {}, and the owner may only change the group to one of its own",
            group(gid)
        );
    }
    format!(
        "{path} belongs to {owner} and {}; you are {me}",
        group(attrs.gid)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::posix::S_IFREG;

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::new(uid, gid, groups)
    }

    #[test]
    fn refusals_say_why() {
        let accounts = Accounts::parse("alice:x:1000:100::/:\n", "users:x:100:\n");
        let f = InodeAttrs {
            mode: S_IFREG | 0o644,
            uid: 1000,
            gid: 100,
        };
        let chown = |uid, gid| AttrChange {
            uid,
            gid,
            ..Default::default()
        };
        let chmod = AttrChange {
            mode: Some(0o600),
            ..Default::default()
        };
        let why =
            |caller: &Caller, change: &AttrChange| refusal("/f", &f, caller, change, &accounts);
        let alice = user(1000, 100, &[]);
        let bob = user(1001, 1001, &[100]);
        assert_eq!(
            why(&alice, &chown(Some(1001), None)),
            "only root may give /f to another user (you are uid 1000 (alice))"
        );
        assert_eq!(
            why(&bob, &chmod),
            "/f belongs to uid 1000 (alice), and only its owner or root may change it \
             (you are uid 1001)"
        );
        assert_eq!(
            why(&bob, &chown(None, Some(100))),
            why(&bob, &chmod),
            "a member of the group is not its owner"
        );
        assert_eq!(
            why(&alice, &chown(None, Some(5678))),
            "uid 1000 (alice) is not in group 5678, and the owner may only change the group \
             to one of its own"
        );
        assert_eq!(
            why(&alice, &chown(Some(1000), Some(100))),
            "/f belongs to uid 1000 (alice) and group 100 (users); you are uid 1000 (alice)"
        );
    }
}
