//! Directory policies (snapshot, block, span and stripe policies): reading them with
//! inheritance resolved, and setting them.

use crate::client::Client;
use crate::error::{ClientError, Result};
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::shard;
use eggs_protocol::InodeId;

impl Client {
    /// The directory's policies with inheritance resolved, walking up to the root.
    pub async fn effective_directory_info(&self, dir_id: InodeId) -> Result<DirectoryInfo> {
        let mut info = DirectoryInfo::default();
        let mut cur = dir_id;
        // Bounded walk: a corrupt owner chain must not hang us.
        for _ in 0..4096 {
            let r = self
                .shard_request(cur.shard(), shard::StatDirectoryReq { id: cur })
                .await?;
            info.inherit_from(&r.info);
            if info.is_complete() || cur == InodeId::ROOT || r.owner_id.is_null() {
                return Ok(info);
            }
            cur = r.owner_id;
        }
        Err(ClientError::BadResponse {
            what: format!("policies of {dir_id}"),
            why: "directory chain too deep".into(),
        })
    }

    pub async fn set_directory_info(&self, id: InodeId, info: DirectoryInfo) -> Result<()> {
        self.shard_request(id.shard(), shard::SetDirectoryInfoReq { id, info })
            .await?;
        Ok(())
    }
}
