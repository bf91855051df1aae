//! Simulated block services: registered with shuckle like real ones, they keep the blocks
//! clients write with a valid write certificate and answer with the proof the shard checks,
//! and erase blocks given a valid erase certificate. What they hold is what the model reads
//! back for files with block spans.

use crate::rng::Rng;
use eggs_common::crypto::{self, BlockServiceKey};
use eggs_protocol::conv::fit;
use eggs_protocol::policy::StorageClass;
use eggs_protocol::shard::BlockWriteTarget;
use eggs_protocol::shuckle::{BlockServiceRegistration, RegisterBlockServicesReq};
use eggs_protocol::{Addr, BlockId, BlockServiceId, EggsError};
use std::collections::BTreeMap;

/// Flash services, each in its own failure domain: enough for the root policy's mirrored
/// spans (1 + 2 blocks), with a choice left for placement.
const SERVICES: u64 = 5;
const CAPACITY_BYTES: u64 = 1 << 40;

struct Service {
    id: BlockServiceId,
    key: BlockServiceKey,
    failure_domain: [u8; 16],
}

/// The block services of a run and the blocks they hold.
pub struct BlockServices {
    services: Vec<Service>,
    blocks: BTreeMap<(BlockServiceId, BlockId), Vec<u8>>,
}

impl BlockServices {
    pub fn new(rng: &mut Rng) -> BlockServices {
        let services = (0..SERVICES)
            .map(|i| {
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
                key[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
                let mut failure_domain = [0u8; 16];
                failure_domain[0] = fit::<u8, u64>(i) + 1;
                Service {
                    id: BlockServiceId(0x5000 + i),
                    key,
                    failure_domain,
                }
            })
            .collect();
        BlockServices {
            services,
            blocks: BTreeMap::new(),
        }
    }

    /// What the services send shuckle at every heartbeat.
    pub fn registration(&self) -> RegisterBlockServicesReq {
        let used: u64 = self.blocks.values().map(|b| b.len() as u64).sum();
        RegisterBlockServicesReq {
            services: self
                .services
                .iter()
                .map(|s| BlockServiceRegistration {
                    id: s.id,
                    addr: Addr::default(),
                    storage_class: StorageClass::Flash,
                    failure_domain: s.failure_domain,
                    secret_key: s.key,
                    capacity_bytes: CAPACITY_BYTES,
                    available_bytes: CAPACITY_BYTES - used.min(CAPACITY_BYTES),
                    blocks: self.blocks.len() as u64,
                    path: format!("/sim/{}", s.id.0),
                })
                .collect(),
        }
    }

    fn key(&self, id: BlockServiceId) -> Result<&BlockServiceKey, EggsError> {
        self.services
            .iter()
            .find(|s| s.id == id)
            .map(|s| &s.key)
            .ok_or(EggsError::BlockServiceNotFound)
    }

    /// Writes `data` as the target's block if its certificate allows exactly that; returns
    /// the write proof.
    pub fn write(&mut self, t: &BlockWriteTarget, data: &[u8]) -> Result<[u8; 8], EggsError> {
        let key = *self.key(t.block_service_id)?;
        let size = u32::try_from(data.len()).map_err(|_| EggsError::BadCertificate)?;
        let expected = crypto::write_certificate(
            &key,
            t.block_service_id,
            t.block_id,
            crc32c::crc32c(data),
            size,
        );
        if !crypto::verify(&expected, &t.certificate) {
            return Err(EggsError::BadCertificate);
        }
        self.blocks
            .insert((t.block_service_id, t.block_id), data.to_vec());
        Ok(crypto::write_proof(&key, t.block_service_id, t.block_id))
    }

    /// Erases the target's block if its erase certificate is valid; returns the erase proof.
    pub fn erase(&mut self, t: &BlockWriteTarget) -> Result<[u8; 8], EggsError> {
        let key = *self.key(t.block_service_id)?;
        let expected = crypto::erase_certificate(&key, t.block_service_id, t.block_id);
        if !crypto::verify(&expected, &t.certificate) {
            return Err(EggsError::BadCertificate);
        }
        self.blocks.remove(&(t.block_service_id, t.block_id));
        Ok(crypto::erase_proof(&key, t.block_service_id, t.block_id))
    }

    pub fn read(&self, service: BlockServiceId, block: BlockId) -> Option<&[u8]> {
        self.blocks.get(&(service, block)).map(|b| b.as_slice())
    }
}
