//! Names of files being written that are not linked yet. From `create` until the release
//! starts the link, this mount answers for such a name itself, so that a file is there the
//! moment it is created and never missing after `close()` however late the kernel's
//! release comes: lookups and getattr answer from the writer, attribute changes go to the
//! transient file (with its cookie; the link keeps them), and a rename or unlink changes
//! where (or whether) the release links it. Once the link has begun, callers wait for it
//! and then ask the shard.

use super::lock;
use super::state::Inner;
use super::write::Writing;
use crate::error::errno;
use eggs_client::ClientError;
use eggs_protocol::{AttrChange, Caller, EggsError, InodeId, Name};
use fuser::ReplyAttr;
use std::sync::Arc;
use std::time::SystemTime;

impl Inner {
    /// Whether a file is being written in `dir` under a name it has not been linked as yet.
    pub(super) fn has_pending_in(&self, dir: InodeId) -> bool {
        lock(&self.pending).keys().any(|(d, _)| *d == dir)
    }

    /// setattr of a file being written: mode, owner, group and times on the transient file
    /// (or, if its link began meanwhile, on the linked file), then a truncation if asked.
    pub(super) async fn setattr_writing(
        &self,
        w: Arc<Writing>,
        caller: Caller,
        change: AttrChange,
        size: Option<u64>,
        reply: ReplyAttr,
    ) {
        if !change.is_empty() {
            let client = &self.client;
            let r = match client
                .set_attr(w.file_id, Some(w.cookie), &caller, change.clone())
                .await
            {
                Err(e) if e.eggs() == Some(EggsError::FileNotTransient) => {
                    self.wait_done(&w).await;
                    client.set_attr(w.file_id, None, &caller, change).await
                }
                r => r,
            };
            match r {
                Ok(r) => {
                    *lock(&w.attrs) = r.attrs;
                    let t = |t: eggs_protocol::EggsTime| super::system_time(t);
                    *lock(&w.times) = Some((t(r.atime), t(r.mtime)));
                }
                Err(e) => return reply.error(errno(&e)),
            }
        }
        if let Some(size) = size {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let msg = super::write::WriteMsg::TruncateThen { size, done: tx };
            if w.tx.send(msg).await.is_err() {
                return reply.error(libc::EIO);
            }
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return reply.error(e),
                Err(_) => return reply.error(libc::EIO),
            }
        }
        // Not cached: the link changes size and times.
        reply.attr(
            &std::time::Duration::ZERO,
            &self.writing_attr(&w, SystemTime::now()),
        );
    }

    /// Unlinks `name` in `dir` if it is a file being written whose link has not begun: the
    /// release will then drop it. Returns whether that was all there was to do; false when
    /// the shard must unlink the name (after any link in progress finished).
    pub(super) async fn unlink_pending(&self, dir: InodeId, name: &Name) -> bool {
        let key = (dir, name.clone());
        let Some(w) = lock(&self.pending).get(&key).cloned() else {
            return false;
        };
        let dropped = {
            let mut t = lock(&w.target);
            if t.linking {
                false
            } else {
                t.unlinked = true;
                true
            }
        };
        if !dropped {
            self.wait_done(&w).await;
            return false;
        }
        self.unpend(&key, &w);
        // An `O_TRUNC` replacement: the old file still holds the name on the shard.
        w.replaced.is_none()
    }

    /// Renames `name` in `from` if it is a file being written whose link has not begun, to a
    /// directory of the same shard (where it can still be linked): it will be linked under
    /// the new name. Returns whether that was all there was to do; otherwise (no such file,
    /// another shard, an `O_TRUNC` replacement whose old file holds the name, or a link in
    /// progress) waits for the link and leaves the rename to the shard.
    pub(super) async fn rename_pending(
        &self,
        from: InodeId,
        name: &Name,
        to: InodeId,
        newname: &Name,
        noreplace: bool,
    ) -> Result<bool, ClientError> {
        let key = (from, name.clone());
        let Some(w) = lock(&self.pending).get(&key).cloned() else {
            return Ok(false);
        };
        if to.shard() != from.shard() || w.replaced.is_some() {
            self.wait_done(&w).await;
            return Ok(false);
        }
        if noreplace {
            self.ensure_absent(to, newname).await?;
        } else {
            // A directory is never replaced by a file (the link would fail, later).
            match self.client.lookup(to, newname).await {
                Ok(e) if e.target_id.is_dir() => {
                    return Err(ClientError::Eggs {
                        what: format!("{newname} in {to}"),
                        err: EggsError::IsADirectory,
                    })
                }
                Ok(_) => {}
                Err(e) if e.eggs() == Some(EggsError::NameNotFound) => {}
                Err(e) => return Err(e),
            }
            // What the name held goes, as the rename's target: a file being written there
            // loses it, and a linked file is replaced when this one is linked.
            self.unlink_pending(to, newname).await;
        }
        let moved = {
            let mut t = lock(&w.target);
            if t.linking {
                false
            } else {
                t.parent = to;
                t.name = newname.clone();
                true
            }
        };
        if !moved {
            self.wait_done(&w).await;
            return Ok(false);
        }
        self.unpend(&key, &w);
        lock(&self.pending).insert((to, newname.clone()), w.clone());
        self.remember_name(w.ino, to, newname);
        Ok(true)
    }
}
