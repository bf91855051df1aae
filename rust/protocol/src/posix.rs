//! POSIX attributes of inodes (mode, owner, group) and the Linux rules for setting and
//! changing them: the one home of those rules, which the shard applies to `SetAttr`, and
//! which clients follow when they create inodes.
//!
//! Servers trust the caller a request names, as NFS servers trust AUTH_SYS credentials: a
//! client that lies about its uid gets that uid's rights. Access checks for reading,
//! writing and searching are the mounting kernel's (FUSE `default_permissions`); only
//! attribute changes are checked here too, because the command-line tool has no kernel in
//! front of it.

use crate::{EggsError, EggsTime, EncodedLen, InodeType};
use bincode::{Decode, Encode};

/// File type bits of a mode, and the types.
pub const S_IFMT: u32 = 0o170_000;
pub const S_IFSOCK: u32 = 0o140_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFBLK: u32 = 0o060_000;
pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFCHR: u32 = 0o020_000;
pub const S_IFIFO: u32 = 0o010_000;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_ISVTX: u32 = 0o1000;
pub const S_IXGRP: u32 = 0o010;
/// Permission bits with setuid, setgid and sticky: what `chmod` sets.
pub const PERM_BITS: u32 = 0o7777;

/// The most supplementary groups a caller names (Linux's `NGROUPS_MAX` is larger, but more
/// would not fit a datagram with the rest of a request).
pub const MAX_CALLER_GROUPS: usize = 64;

/// An inode's mode (file type and permission bits, as in `st_mode`), owner and group.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct InodeAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl InodeAttrs {
    pub const ROOT_DIR: InodeAttrs = InodeAttrs::root(S_IFDIR | 0o755);
    pub const ROOT_FILE: InodeAttrs = InodeAttrs::root(S_IFREG | 0o644);
    pub const ROOT_SYMLINK: InodeAttrs = InodeAttrs::root(S_IFLNK | 0o777);

    pub const fn root(mode: u32) -> InodeAttrs {
        InodeAttrs {
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// What an inode made before attributes were stored reads as.
    pub fn legacy(typ: InodeType) -> InodeAttrs {
        match typ {
            InodeType::Directory => InodeAttrs::ROOT_DIR,
            InodeType::File => InodeAttrs::ROOT_FILE,
            InodeType::Symlink => InodeAttrs::ROOT_SYMLINK,
        }
    }

    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    /// Whether the mode is valid for an inode of type `typ`: directories and symlinks are
    /// what their ids say, and a file inode holds a regular file or a special file (FIFO,
    /// socket, character or block device), which has no contents. No bits beyond the type
    /// and [`PERM_BITS`].
    pub fn fits(&self, typ: InodeType) -> bool {
        if self.mode & !(S_IFMT | PERM_BITS) != 0 {
            return false;
        }
        match typ {
            InodeType::Directory => self.file_type() == S_IFDIR,
            InodeType::Symlink => self.file_type() == S_IFLNK,
            InodeType::File => matches!(
                self.file_type(),
                S_IFREG | S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK
            ),
        }
    }

    /// Whether the type carries a device number.
    pub fn is_device(&self) -> bool {
        matches!(self.file_type(), S_IFCHR | S_IFBLK)
    }
}

/// Who asks for an attribute change: the uid, gid and supplementary groups of the calling
/// process on the client, trusted as given (see the module's comment).
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// At most [`MAX_CALLER_GROUPS`]; more are refused as malformed.
    pub groups: Vec<u32>,
}

impl Caller {
    pub fn new(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller {
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the caller may read (4), write (2) or execute/search (1) an inode, by the
    /// owner, group and other bits as Linux's `generic_permission` decides (root may do
    /// anything, but execute only where someone may).
    pub fn may(&self, attrs: &InodeAttrs, want: u32) -> bool {
        assert!(want != 0 && want <= 7, "access mask {want:o}");
        if self.is_root() {
            return want & 1 == 0 || attrs.is_dir() || attrs.mode & 0o111 != 0;
        }
        let bits = if self.uid == attrs.uid {
            attrs.mode >> 6
        } else if self.in_group(attrs.gid) {
            attrs.mode >> 3
        } else {
            attrs.mode
        };
        bits & want == want
    }

    fn owns(&self, attrs: &InodeAttrs) -> bool {
        self.is_root() || self.uid == attrs.uid
    }
}

/// The attributes of a new inode made by `caller` in a directory with `parent`'s
/// attributes: `mode` is its type and permission bits with the process's umask applied.
/// The owner is the caller; the group is the caller's, or the directory's when it has
/// setgid, and then a new directory inherits setgid too. A new non-directory keeps setgid
/// only when its group is one of the caller's (or the caller is root), as Linux does.
pub fn new_inode_attrs(parent: &InodeAttrs, caller: &Caller, mode: u32) -> InodeAttrs {
    let inherit = parent.mode & S_ISGID != 0;
    let gid = if inherit { parent.gid } else { caller.gid };
    let mut mode = mode & (S_IFMT | PERM_BITS);
    if mode & S_IFMT == S_IFDIR {
        if inherit {
            mode |= S_ISGID;
        }
    } else if mode & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP
        && !caller.in_group(gid)
        && !caller.is_root()
    {
        mode &= !S_ISGID;
    }
    InodeAttrs {
        mode,
        uid: caller.uid,
        gid,
    }
}

/// A time to set: the shard's now, or a given time.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode, EncodedLen)]
pub enum SetTime {
    Now,
    At(EggsTime),
}

impl SetTime {
    /// The time this asks for, when the shard's time is `now`.
    pub fn at(self, now: EggsTime) -> EggsTime {
        match self {
            SetTime::Now => now,
            SetTime::At(t) => t,
        }
    }
}

/// What a `SetAttr` changes; `None` leaves that attribute as it is.
#[derive(Clone, PartialEq, Eq, Debug, Default, Encode, Decode, EncodedLen)]
pub struct AttrChange {
    /// Permission bits ([`PERM_BITS`]); the file type cannot change.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl AttrChange {
    pub fn is_empty(&self) -> bool {
        *self == AttrChange::default()
    }
}

/// Applies `change` by `caller` to an inode with attributes `attrs`, by Linux's rules
/// (`setattr_prepare`, `chown_common`, `notify_change`), returning the new attributes:
/// - only root changes the owner (an owner may "change" it to itself);
/// - the owner (or root) changes the group, the owner only to one of its groups;
/// - the owner (or root) changes the mode; setgid is dropped from the new mode when the
///   inode's group is not one of the caller's (and the caller is not root);
/// - changing owner or group of a non-directory clears setuid, and setgid when group
///   execute is set or the caller is neither root nor in the file's group (a setgid bit
///   without group execute marks mandatory locking);
/// - the owner (or root) sets times to given values; setting them to now needs ownership
///   or write permission.
///
/// A symlink's mode cannot change (`NotPermitted`, Linux refuses `chmod` of one too).
pub fn apply_change(
    attrs: &InodeAttrs,
    caller: &Caller,
    change: &AttrChange,
) -> Result<InodeAttrs, EggsError> {
    if caller.groups.len() > MAX_CALLER_GROUPS {
        return Err(EggsError::MalformedRequest);
    }
    let mut new = *attrs;
    if let Some(uid) = change.uid {
        if uid != attrs.uid && !caller.is_root() {
            return Err(EggsError::NotPermitted);
        }
        if uid == attrs.uid && !caller.owns(attrs) {
            return Err(EggsError::NotPermitted);
        }
        new.uid = uid;
    }
    if let Some(gid) = change.gid {
        let allowed = caller.is_root()
            || (caller.uid == attrs.uid && (gid == attrs.gid || caller.in_group(gid)));
        if !allowed {
            return Err(EggsError::NotPermitted);
        }
        new.gid = gid;
    }
    let chowned = change.uid.is_some() || change.gid.is_some();
    if chowned && !attrs.is_dir() {
        new.mode &= !S_ISUID;
        // Linux's `setattr_should_drop_sgid`: setgid with group execute always goes; without
        // it (mandatory locking) it goes unless the caller is in the file's group or root.
        let keep = new.mode & S_IXGRP == 0 && (caller.is_root() || caller.in_group(attrs.gid));
        if !keep {
            new.mode &= !S_ISGID;
        }
    }
    if let Some(mode) = change.mode {
        if mode & !PERM_BITS != 0 {
            return Err(EggsError::BadAttributes);
        }
        if !caller.owns(attrs) || attrs.file_type() == crate::posix::S_IFLNK {
            return Err(EggsError::NotPermitted);
        }
        let mut mode = mode;
        if !caller.is_root() && !caller.in_group(new.gid) {
            mode &= !S_ISGID;
        }
        new.mode = attrs.file_type() | mode;
    }
    for t in [change.atime, change.mtime].into_iter().flatten() {
        let ok = match t {
            SetTime::At(_) => caller.owns(attrs),
            SetTime::Now => caller.owns(attrs) || caller.may(attrs, 2),
        };
        if !ok {
            return Err(match t {
                SetTime::At(_) => EggsError::NotPermitted,
                SetTime::Now => EggsError::AccessDenied,
            });
        }
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::new(uid, gid, groups)
    }

    fn file(mode: u32, uid: u32, gid: u32) -> InodeAttrs {
        InodeAttrs {
            mode: S_IFREG | mode,
            uid,
            gid,
        }
    }

    #[test]
    fn access_follows_owner_then_group_then_other() {
        let f = file(0o640, 1000, 100);
        assert!(user(1000, 5, &[]).may(&f, 6));
        assert!(!user(1000, 5, &[]).may(&f, 1));
        assert!(user(1001, 7, &[100]).may(&f, 4));
        assert!(!user(1001, 7, &[100]).may(&f, 2));
        assert!(!user(1002, 7, &[]).may(&f, 4));
        // The owner's bits count even when the group's would allow more.
        let g = file(0o070, 1000, 100);
        assert!(!user(1000, 100, &[]).may(&g, 4));
        assert!(user(0, 0, &[]).may(&g, 6));
        // Root executes only what someone may execute.
        assert!(!user(0, 0, &[]).may(&file(0o644, 1, 1), 1));
        assert!(user(0, 0, &[]).may(&file(0o744, 1, 1), 1));
    }

    #[test]
    fn new_inodes_take_the_callers_ids_or_a_setgid_directorys_group() {
        let plain = InodeAttrs {
            mode: S_IFDIR | 0o777,
            uid: 0,
            gid: 0,
        };
        let sgid = InodeAttrs {
            mode: S_IFDIR | S_ISGID | 0o775,
            uid: 0,
            gid: 50,
        };
        let u = user(1000, 100, &[]);
        let f = new_inode_attrs(&plain, &u, S_IFREG | 0o644);
        assert_eq!((f.mode, f.uid, f.gid), (S_IFREG | 0o644, 1000, 100));
        let f = new_inode_attrs(&sgid, &u, S_IFREG | 0o644);
        assert_eq!((f.mode, f.gid), (S_IFREG | 0o644, 50));
        let d = new_inode_attrs(&sgid, &u, S_IFDIR | 0o755);
        assert_eq!((d.mode, d.gid), (S_IFDIR | S_ISGID | 0o755, 50));
        // A setgid-executable file in a group the caller is not in loses setgid.
        let f = new_inode_attrs(&sgid, &u, S_IFREG | S_ISGID | 0o755);
        assert_eq!(f.mode, S_IFREG | 0o755);
        let member = user(1000, 100, &[50]);
        let f = new_inode_attrs(&sgid, &member, S_IFREG | S_ISGID | 0o755);
        assert_eq!(f.mode, S_IFREG | S_ISGID | 0o755);
    }

    #[test]
    fn only_root_gives_files_away_and_owners_pick_their_groups() {
        let f = file(0o644, 1000, 100);
        let owner = user(1000, 100, &[200]);
        let chown = |uid, gid| AttrChange {
            uid,
            gid,
            ..Default::default()
        };
        assert_eq!(
            apply_change(&f, &owner, &chown(Some(1001), None)),
            Err(EggsError::NotPermitted)
        );
        assert_eq!(
            apply_change(&f, &owner, &chown(Some(1000), None)).unwrap(),
            f
        );
        assert_eq!(
            apply_change(&f, &owner, &chown(None, Some(200)))
                .unwrap()
                .gid,
            200
        );
        assert_eq!(
            apply_change(&f, &owner, &chown(None, Some(300))),
            Err(EggsError::NotPermitted)
        );
        let other = user(1001, 200, &[]);
        assert_eq!(
            apply_change(&f, &other, &chown(None, Some(200))),
            Err(EggsError::NotPermitted)
        );
        let r = apply_change(&f, &Caller::root(), &chown(Some(7), Some(8))).unwrap();
        assert_eq!((r.uid, r.gid), (7, 8));
    }

    #[test]
    fn chown_clears_setuid_and_executable_setgid_of_files_only() {
        let root = Caller::root();
        let to = AttrChange {
            uid: Some(5),
            ..Default::default()
        };
        let f = file(S_ISUID | S_ISGID | 0o755, 1, 1);
        assert_eq!(apply_change(&f, &root, &to).unwrap().mode, S_IFREG | 0o755);
        // Setgid without group execute (mandatory locking) stays for root and members of
        // the file's group, and goes for others.
        let f = file(S_ISGID | 0o644, 1, 1);
        assert_eq!(
            apply_change(&f, &root, &to).unwrap().mode,
            S_IFREG | S_ISGID | 0o644
        );
        let regroup = AttrChange {
            gid: Some(7),
            ..Default::default()
        };
        let member = user(1, 1, &[7]);
        assert_eq!(apply_change(&f, &member, &regroup).unwrap().mode, f.mode);
        let outsider = user(1, 5, &[7]);
        assert_eq!(
            apply_change(&f, &outsider, &regroup).unwrap().mode,
            S_IFREG | 0o644
        );
        let d = InodeAttrs {
            mode: S_IFDIR | S_ISGID | 0o775,
            uid: 1,
            gid: 1,
        };
        assert_eq!(apply_change(&d, &root, &to).unwrap().mode, d.mode);
    }

    #[test]
    fn chmod_is_the_owners_and_drops_setgid_outside_the_callers_groups() {
        let f = file(0o644, 1000, 100);
        let mode = |m| AttrChange {
            mode: Some(m),
            ..Default::default()
        };
        let owner = user(1000, 1000, &[]);
        let r = apply_change(&f, &owner, &mode(S_ISGID | 0o755)).unwrap();
        assert_eq!(r.mode, S_IFREG | 0o755);
        let member = user(1000, 1000, &[100]);
        let r = apply_change(&f, &member, &mode(S_ISGID | 0o755)).unwrap();
        assert_eq!(r.mode, S_IFREG | S_ISGID | 0o755);
        assert_eq!(
            apply_change(&f, &user(1001, 100, &[]), &mode(0o777)),
            Err(EggsError::NotPermitted)
        );
        assert_eq!(
            apply_change(&f, &owner, &mode(S_IFDIR | 0o777)),
            Err(EggsError::BadAttributes)
        );
        // Directories too (Linux's `setattr_prepare` does not look at the type).
        let d = InodeAttrs {
            mode: S_IFDIR | 0o755,
            uid: 1000,
            gid: 2000,
        };
        let r = apply_change(&d, &owner, &mode(S_ISGID | 0o755)).unwrap();
        assert_eq!(r.mode, S_IFDIR | 0o755);
        let l = InodeAttrs::ROOT_SYMLINK;
        assert_eq!(
            apply_change(&l, &Caller::root(), &mode(0o700)),
            Err(EggsError::NotPermitted)
        );
    }

    #[test]
    fn given_times_are_the_owners_and_now_needs_write_permission() {
        let f = file(0o664, 1000, 100);
        let times = |t| AttrChange {
            mtime: Some(t),
            ..Default::default()
        };
        let writer = user(1001, 100, &[]);
        let stranger = user(1002, 7, &[]);
        assert!(apply_change(&f, &writer, &times(SetTime::Now)).is_ok());
        assert_eq!(
            apply_change(&f, &writer, &times(SetTime::At(EggsTime(5)))),
            Err(EggsError::NotPermitted)
        );
        assert_eq!(
            apply_change(&f, &stranger, &times(SetTime::Now)),
            Err(EggsError::AccessDenied)
        );
        assert!(apply_change(&f, &user(1000, 1, &[]), &times(SetTime::At(EggsTime(5)))).is_ok());
    }

    #[test]
    fn modes_fit_their_inode_types() {
        assert!(InodeAttrs::ROOT_DIR.fits(InodeType::Directory));
        assert!(!InodeAttrs::ROOT_DIR.fits(InodeType::File));
        for t in [S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK] {
            assert!(InodeAttrs::root(t | 0o600).fits(InodeType::File));
        }
        assert!(InodeAttrs::ROOT_SYMLINK.fits(InodeType::Symlink));
        assert!(!InodeAttrs::root(S_IFREG | 0o10_0000_0000).fits(InodeType::File));
        assert!(!InodeAttrs::root(0o644).fits(InodeType::File));
    }
}
