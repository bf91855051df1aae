//! The I/O-free core: what shuckle knows and how each request changes it.
//!
//! [`Registry::handle`] answers a request and lists the records the request changes, without
//! changing anything; the caller makes those records durable and only then calls
//! [`Registry::apply`]. Keeping the two steps apart means a failed disk write never leaves
//! memory claiming something the disk does not have. The current time is an argument, so
//! tests control it.

use bincode::{Decode, Encode};
use eggs_protocol::ids::compact_shard_ranges;
use eggs_protocol::policy::StorageClass;
use eggs_protocol::shuckle::{
    flags, BlockServiceInfo, BlockServiceRegistration, BlockServiceWithKey, BlockServicesResp,
    CdcResp, ForgetBlockServiceReq, ForgetBlockServiceResp, RegisterBlockServicesReq,
    RegisterBlockServicesResp, RegisterCdcReq, RegisterCdcResp, RegisterShardsReq,
    RegisterShardsResp, SetBlockServiceFlagsReq, SetBlockServiceFlagsResp, ShardBlockServicesResp,
    ShardInfo, ShardsResp, ShuckleReq, ShuckleResp,
};
use eggs_protocol::{Addr, BlockServiceId, EggsError, EggsTime, ShardId, NUM_SHARDS};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Where a shard or the CDC was last heard from. The zero value means "never registered".
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Encode, Decode)]
pub struct Endpoint {
    pub addr: Addr,
    pub last_seen: EggsTime,
}

/// A block service's secret key. `Debug` hides it so that it can never end up in a log.
#[derive(Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct SecretKey(pub [u8; 16]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Everything shuckle keeps about a block service.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct BlockServiceRecord {
    pub id: BlockServiceId,
    pub addr: Addr,
    pub storage_class: StorageClass,
    pub failure_domain: [u8; 16],
    pub secret_key: SecretKey,
    /// Flags set by operators. Never contains [`flags::STALE`], which is computed on each
    /// query from `last_seen` so that it clears by itself when the service comes back.
    pub flags: u8,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub blocks: u64,
    pub path: String,
    pub last_seen: EggsTime,
}

impl BlockServiceRecord {
    fn info(&self, stale: bool) -> BlockServiceInfo {
        BlockServiceInfo {
            id: self.id,
            addr: self.addr,
            storage_class: self.storage_class,
            failure_domain: self.failure_domain,
            flags: if stale {
                self.flags | flags::STALE
            } else {
                self.flags
            },
            capacity_bytes: self.capacity_bytes,
            available_bytes: self.available_bytes,
            blocks: self.blocks,
            path: self.path.clone(),
            last_seen: self.last_seen,
        }
    }
}

/// One record a request sets: the unit of persistence (one database key each).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Change {
    Shard(ShardId, Endpoint),
    Cdc(Endpoint),
    BlockService(BlockServiceRecord),
    /// The block service is gone for good (`ForgetBlockService`).
    ForgetBlockService(BlockServiceId),
}

/// The answer to a request and the records to make durable before sending it.
#[derive(Clone, PartialEq, Debug)]
pub struct Outcome {
    pub result: Result<ShuckleResp, EggsError>,
    /// Empty for queries and failed requests.
    pub changes: Vec<Change>,
}

impl Outcome {
    fn answer(resp: ShuckleResp) -> Outcome {
        Outcome {
            result: Ok(resp),
            changes: Vec::new(),
        }
    }
    fn error(err: EggsError) -> Outcome {
        Outcome {
            result: Err(err),
            changes: Vec::new(),
        }
    }
}

/// The state of the cluster as shuckle knows it.
#[derive(Clone, Debug)]
pub struct Registry {
    stale_after_ns: u64,
    /// Always exactly `NUM_SHARDS` long, indexed by shard id.
    shards: Vec<Endpoint>,
    cdc: Endpoint,
    /// Ordered so that listings are stable.
    block_services: BTreeMap<BlockServiceId, BlockServiceRecord>,
}

impl Registry {
    /// An empty registry; block services silent for longer than `stale_after` are STALE.
    pub fn new(stale_after: Duration) -> Registry {
        Registry {
            stale_after_ns: u64::try_from(stale_after.as_nanos()).unwrap_or(u64::MAX),
            shards: vec![Endpoint::default(); NUM_SHARDS],
            cdc: Endpoint::default(),
            block_services: BTreeMap::new(),
        }
    }

    /// Rebuilds a registry from persisted records. Nothing changed, so nothing is logged.
    pub fn restore(stale_after: Duration, records: impl IntoIterator<Item = Change>) -> Registry {
        let mut registry = Registry::new(stale_after);
        for mut record in records {
            // STALE is computed, never stored; a stored bit (no current code writes one) is
            // dropped here, so that the checks on later changes hold for what was loaded.
            if let Change::BlockService(r) = &mut record {
                r.flags &= !flags::STALE;
            }
            registry.set(record);
        }
        registry
    }

    /// How many shards have ever registered, whether the CDC has, and how many block services.
    pub(crate) fn counts(&self) -> (usize, bool, usize) {
        let shards = self.shards.iter().filter(|s| **s != Endpoint::default());
        (
            shards.count(),
            self.cdc != Endpoint::default(),
            self.block_services.len(),
        )
    }

    /// Answers `req` as of `now` and lists the records it changes; changes nothing itself.
    pub fn handle(&self, req: ShuckleReq, now: EggsTime) -> Outcome {
        let query = matches!(
            req,
            ShuckleReq::Shards(_)
                | ShuckleReq::Cdc(_)
                | ShuckleReq::BlockServices(_)
                | ShuckleReq::ShardBlockServices(_)
        );
        let out = self.dispatch(req, now);
        // The caller persists `changes` before answering: a failure or a query that listed
        // some would make a write nobody asked for (or one the client is told failed).
        assert!(
            out.changes.is_empty() || (out.result.is_ok() && !query),
            "changes from a query or a failed request"
        );
        out
    }

    fn dispatch(&self, req: ShuckleReq, now: EggsTime) -> Outcome {
        match req {
            ShuckleReq::RegisterShards(r) => self.register_shards(r, now),
            ShuckleReq::RegisterCdc(r) => self.register_cdc(r, now),
            ShuckleReq::RegisterBlockServices(r) => self.register_block_services(r, now),
            ShuckleReq::Shards(_) => self.shards(),
            ShuckleReq::Cdc(_) => self.cdc(),
            ShuckleReq::BlockServices(_) => self.block_services(now),
            ShuckleReq::SetBlockServiceFlags(r) => self.set_flags(r),
            ShuckleReq::ShardBlockServices(_) => self.shard_block_services(now),
            ShuckleReq::ForgetBlockService(r) => self.forget(r, now),
        }
    }

    /// Applies changes [`Registry::handle`] listed, once they are durable, logging what moved.
    pub fn apply(&mut self, changes: Vec<Change>) {
        for change in &changes {
            if let Change::BlockService(r) = change {
                assert_eq!(r.flags & flags::STALE, 0, "STALE stored for {:?}", r.id);
            }
        }
        self.log_changes(&changes);
        for change in changes {
            self.set(change);
        }
    }

    fn set(&mut self, change: Change) {
        assert_eq!(self.shards.len(), NUM_SHARDS, "shards indexed by every u8");
        match change {
            // Every u8 is a valid index: `shards` has NUM_SHARDS (256) entries.
            Change::Shard(id, endpoint) => self.shards[usize::from(id.0)] = endpoint,
            Change::Cdc(endpoint) => self.cdc = endpoint,
            Change::BlockService(record) => {
                self.block_services.insert(record.id, record);
            }
            Change::ForgetBlockService(id) => {
                self.block_services.remove(&id);
            }
        }
    }

    fn register_shards(&self, r: RegisterShardsReq, now: EggsTime) -> Outcome {
        let endpoint = Endpoint {
            addr: r.addr,
            last_seen: now,
        };
        Outcome {
            result: Ok(ShuckleResp::RegisterShards(RegisterShardsResp {})),
            changes: r
                .shards
                .into_iter()
                .map(|id| Change::Shard(id, endpoint))
                .collect(),
        }
    }

    fn register_cdc(&self, r: RegisterCdcReq, now: EggsTime) -> Outcome {
        Outcome {
            result: Ok(ShuckleResp::RegisterCdc(RegisterCdcResp {})),
            changes: vec![Change::Cdc(Endpoint {
                addr: r.addr,
                last_seen: now,
            })],
        }
    }

    fn register_block_services(&self, r: RegisterBlockServicesReq, now: EggsTime) -> Outcome {
        let changes = r
            .services
            .into_iter()
            .map(|s| Change::BlockService(self.upsert(s, now)))
            .collect();
        Outcome {
            result: Ok(ShuckleResp::RegisterBlockServices(
                RegisterBlockServicesResp {},
            )),
            changes,
        }
    }

    /// The record a registration produces: everything from the service itself, except the
    /// flags, which belong to operators and survive re-registration.
    fn upsert(&self, s: BlockServiceRegistration, now: EggsTime) -> BlockServiceRecord {
        let flags = self.block_services.get(&s.id).map_or(0, |old| old.flags);
        assert_eq!(flags & flags::STALE, 0, "STALE stored for {:?}", s.id);
        BlockServiceRecord {
            id: s.id,
            addr: s.addr,
            storage_class: s.storage_class,
            failure_domain: s.failure_domain,
            secret_key: SecretKey(s.secret_key),
            flags,
            capacity_bytes: s.capacity_bytes,
            available_bytes: s.available_bytes,
            blocks: s.blocks,
            path: s.path,
            last_seen: now,
        }
    }

    fn shards(&self) -> Outcome {
        let shards = self
            .shards
            .iter()
            .map(|e| ShardInfo {
                addr: e.addr,
                last_seen: e.last_seen,
            })
            .collect::<Vec<_>>();
        // Clients index the reply by shard id.
        assert_eq!(shards.len(), NUM_SHARDS, "a slot per shard");
        Outcome::answer(ShuckleResp::Shards(ShardsResp { shards }))
    }

    fn cdc(&self) -> Outcome {
        Outcome::answer(ShuckleResp::Cdc(CdcResp {
            addr: self.cdc.addr,
            last_seen: self.cdc.last_seen,
        }))
    }

    fn block_services(&self, now: EggsTime) -> Outcome {
        let services = self
            .block_services
            .values()
            .map(|r| r.info(self.is_stale(r.last_seen, now)))
            .collect();
        Outcome::answer(ShuckleResp::BlockServices(BlockServicesResp { services }))
    }

    /// The same list with secret keys, which shards need to sign certificates.
    fn shard_block_services(&self, now: EggsTime) -> Outcome {
        let services = self
            .block_services
            .values()
            .map(|r| BlockServiceWithKey {
                info: r.info(self.is_stale(r.last_seen, now)),
                secret_key: r.secret_key.0,
            })
            .collect();
        Outcome::answer(ShuckleResp::ShardBlockServices(ShardBlockServicesResp {
            services,
        }))
    }

    /// Stale when silent for strictly longer than the configured time. A `last_seen` in the
    /// future (the clock stepped back) counts as fresh rather than as very old.
    fn is_stale(&self, last_seen: EggsTime, now: EggsTime) -> bool {
        now.0.saturating_sub(last_seen.0) > self.stale_after_ns
    }

    fn set_flags(&self, r: SetBlockServiceFlagsReq) -> Outcome {
        let Some(old) = self.block_services.get(&r.id) else {
            return Outcome::error(EggsError::BlockServiceNotFound);
        };
        // STALE is computed, never stored: an operator cannot pin it on or off.
        let mask = r.mask & !flags::STALE;
        let new_flags = (old.flags & !mask) | (r.flags & mask);
        assert_eq!(new_flags & flags::STALE, 0, "STALE stored for {:?}", r.id);
        let resp = ShuckleResp::SetBlockServiceFlags(SetBlockServiceFlagsResp {});
        if new_flags == old.flags {
            // Nothing to write: spare the synced write.
            return Outcome::answer(resp);
        }
        Outcome {
            result: Ok(resp),
            changes: vec![Change::BlockService(BlockServiceRecord {
                flags: new_flags,
                ..old.clone()
            })],
        }
    }

    /// Only a decommissioned service that stopped registering may go: a live one would
    /// register again at once, and one not decommissioned may still hold blocks.
    fn forget(&self, r: ForgetBlockServiceReq, now: EggsTime) -> Outcome {
        let resp = ShuckleResp::ForgetBlockService(ForgetBlockServiceResp {});
        let Some(old) = self.block_services.get(&r.id) else {
            // Already forgotten: a retry succeeds.
            return Outcome::answer(resp);
        };
        if old.flags & flags::DECOMMISSIONED == 0 || !self.is_stale(old.last_seen, now) {
            return Outcome::error(EggsError::BlockServiceNotForgettable);
        }
        assert_eq!(old.id, r.id, "block service filed under another id");
        Outcome {
            result: Ok(resp),
            changes: vec![Change::ForgetBlockService(r.id)],
        }
    }

    /// New or moved addresses and flag changes at info; plain heartbeats at debug.
    fn log_changes(&self, changes: &[Change]) {
        // Keyed by SocketAddr, which unlike Addr is ordered: stable log output.
        let mut moved: BTreeMap<SocketAddr, Vec<u8>> = BTreeMap::new();
        let mut heartbeats: BTreeMap<SocketAddr, Vec<u8>> = BTreeMap::new();
        for change in changes {
            match change {
                Change::Shard(id, new) => {
                    let old = self.shards[usize::from(id.0)].addr;
                    let group = if old == new.addr {
                        &mut heartbeats
                    } else {
                        &mut moved
                    };
                    group
                        .entry(new.addr.to_socket_addr())
                        .or_default()
                        .push(id.0);
                }
                Change::Cdc(new) => self.log_cdc(new),
                Change::BlockService(new) => self.log_block_service(new),
                Change::ForgetBlockService(id) => {
                    tracing::info!("block service {} forgotten", id.0)
                }
            }
        }
        for (addr, ids) in moved {
            tracing::info!("shards {} registered at {addr}", compact_shard_ranges(&ids));
        }
        for (addr, ids) in heartbeats {
            tracing::debug!(
                "heartbeat from shards {} at {addr}",
                compact_shard_ranges(&ids)
            );
        }
    }

    fn log_cdc(&self, new: &Endpoint) {
        if self.cdc.addr == new.addr {
            tracing::debug!("heartbeat from the CDC at {}", new.addr);
        } else {
            tracing::info!("CDC registered at {} (was {})", new.addr, self.cdc.addr);
        }
    }

    fn log_block_service(&self, new: &BlockServiceRecord) {
        let id = new.id.0;
        match self.block_services.get(&new.id) {
            None => tracing::info!("new block service {id} at {} ({})", new.addr, new.path),
            Some(old) if old.addr != new.addr => {
                tracing::info!("block service {id} moved from {} to {}", old.addr, new.addr)
            }
            Some(old) if old.flags != new.flags => tracing::info!(
                "block service {id} flags {:#04x} -> {:#04x}",
                old.flags,
                new.flags
            ),
            Some(_) => tracing::debug!("heartbeat from block service {id} at {}", new.addr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eggs_protocol::shuckle::{BlockServicesReq, CdcReq, ShardsReq};

    const SEC: u64 = 1_000_000_000;

    fn addr(port: u16) -> Addr {
        Addr {
            ip: [10, 0, 0, 1],
            port,
        }
    }

    fn registry() -> Registry {
        Registry::new(Duration::from_secs(60))
    }

    /// Handles and applies at once, as the server does after a successful write.
    fn run(reg: &mut Registry, req: ShuckleReq, now: u64) -> Result<ShuckleResp, EggsError> {
        let out = reg.handle(req, EggsTime(now));
        reg.apply(out.changes);
        out.result
    }

    fn shards(reg: &Registry) -> Vec<ShardInfo> {
        match reg
            .handle(ShuckleReq::Shards(ShardsReq {}), EggsTime(0))
            .result
        {
            Ok(ShuckleResp::Shards(r)) => r.shards,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn block_services(reg: &Registry, now: u64) -> Vec<BlockServiceInfo> {
        let req = ShuckleReq::BlockServices(BlockServicesReq {});
        match reg.handle(req, EggsTime(now)).result {
            Ok(ShuckleResp::BlockServices(r)) => r.services,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn register_shards(ids: &[u8], port: u16) -> ShuckleReq {
        ShuckleReq::RegisterShards(RegisterShardsReq {
            shards: ids.iter().map(|&i| ShardId(i)).collect(),
            addr: addr(port),
        })
    }

    fn registration(id: u64, port: u16) -> BlockServiceRegistration {
        BlockServiceRegistration {
            id: BlockServiceId(id),
            addr: addr(port),
            storage_class: StorageClass::Hdd,
            failure_domain: [eggs_protocol::conv::low_byte(id); 16],
            secret_key: [0xAB; 16],
            capacity_bytes: 1000,
            available_bytes: 600,
            blocks: 7,
            path: format!("/disk{id}"),
        }
    }

    fn register_bs(services: Vec<BlockServiceRegistration>) -> ShuckleReq {
        ShuckleReq::RegisterBlockServices(RegisterBlockServicesReq { services })
    }

    fn set_flags(id: u64, flags: u8, mask: u8) -> ShuckleReq {
        ShuckleReq::SetBlockServiceFlags(SetBlockServiceFlagsReq {
            id: BlockServiceId(id),
            flags,
            mask,
        })
    }

    #[test]
    fn unregistered_shards_are_zero() {
        let got = shards(&registry());
        assert_eq!(got.len(), NUM_SHARDS);
        assert!(got
            .iter()
            .all(|s| s.addr == Addr::default() && s.last_seen.0 == 0));
    }

    #[test]
    fn shard_registration_records_addr_and_time() {
        let mut reg = registry();
        run(&mut reg, register_shards(&[0, 5, 255], 7000), 10 * SEC).unwrap();
        let got = shards(&reg);
        assert_eq!(got.len(), NUM_SHARDS);
        for id in [0usize, 5, 255] {
            assert_eq!(got[id].addr, addr(7000));
            assert_eq!(got[id].last_seen, EggsTime(10 * SEC));
        }
        assert_eq!(got[1].addr, Addr::default());
        assert_eq!(reg.counts(), (3, false, 0));
    }

    #[test]
    fn heartbeat_updates_last_seen_and_address() {
        let mut reg = registry();
        run(&mut reg, register_shards(&[1, 2], 7000), SEC).unwrap();
        let out = reg.handle(register_shards(&[1, 2], 7000), EggsTime(2 * SEC));
        assert_eq!(out.changes.len(), 2, "a heartbeat is persisted too");
        reg.apply(out.changes);
        assert_eq!(shards(&reg)[1].last_seen, EggsTime(2 * SEC));
        run(&mut reg, register_shards(&[2], 7001), 3 * SEC).unwrap();
        let got = shards(&reg);
        assert_eq!(
            (got[1].addr, got[1].last_seen),
            (addr(7000), EggsTime(2 * SEC))
        );
        assert_eq!(
            (got[2].addr, got[2].last_seen),
            (addr(7001), EggsTime(3 * SEC))
        );
    }

    #[test]
    fn handle_changes_nothing_until_apply() {
        let reg = registry();
        let out = reg.handle(register_shards(&[9], 7000), EggsTime(SEC));
        assert_eq!(out.changes.len(), 1);
        assert_eq!(shards(&reg)[9].addr, Addr::default());
    }

    #[test]
    fn cdc_registration_and_heartbeat() {
        let mut reg = registry();
        let query = || ShuckleReq::Cdc(CdcReq {});
        let zero = CdcResp {
            addr: Addr::default(),
            last_seen: EggsTime(0),
        };
        assert_eq!(run(&mut reg, query(), SEC), Ok(ShuckleResp::Cdc(zero)));
        let register = || ShuckleReq::RegisterCdc(RegisterCdcReq { addr: addr(9000) });
        run(&mut reg, register(), 2 * SEC).unwrap();
        run(&mut reg, register(), 3 * SEC).unwrap();
        let want = CdcResp {
            addr: addr(9000),
            last_seen: EggsTime(3 * SEC),
        };
        assert_eq!(run(&mut reg, query(), 4 * SEC), Ok(ShuckleResp::Cdc(want)));
    }

    #[test]
    fn block_service_registration_keeps_flags() {
        let mut reg = registry();
        run(
            &mut reg,
            register_bs(vec![registration(2, 1), registration(1, 2)]),
            SEC,
        )
        .unwrap();
        run(
            &mut reg,
            set_flags(1, flags::NO_WRITE, flags::NO_WRITE),
            SEC,
        )
        .unwrap();
        let mut again = registration(1, 3);
        again.available_bytes = 5;
        run(&mut reg, register_bs(vec![again]), 2 * SEC).unwrap();
        let got = block_services(&reg, 2 * SEC);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, BlockServiceId(1), "listed in id order");
        assert_eq!(got[0].flags, flags::NO_WRITE);
        assert_eq!(got[0].addr, addr(3));
        assert_eq!(got[0].available_bytes, 5);
        assert_eq!(got[0].last_seen, EggsTime(2 * SEC));
        assert_eq!(got[1].flags, 0);
        assert_eq!(got[1].path, "/disk2");
    }

    #[test]
    fn only_decommissioned_stale_services_are_forgotten() {
        let mut reg = registry();
        run(
            &mut reg,
            register_bs(vec![registration(1, 1), registration(2, 2)]),
            100 * SEC,
        )
        .unwrap();
        let forget = |id| {
            ShuckleReq::ForgetBlockService(ForgetBlockServiceReq {
                id: BlockServiceId(id),
            })
        };
        let refused = Err(EggsError::BlockServiceNotForgettable);
        assert_eq!(
            run(&mut reg, forget(1), 200 * SEC),
            refused,
            "not decommissioned"
        );
        let d = flags::DECOMMISSIONED;
        run(&mut reg, set_flags(1, d, d), 100 * SEC).unwrap();
        assert_eq!(
            run(&mut reg, forget(1), 150 * SEC),
            refused,
            "still registering"
        );
        run(&mut reg, forget(1), 200 * SEC).unwrap();
        assert_eq!(block_services(&reg, 200 * SEC).len(), 1);
        assert_eq!(block_services(&reg, 200 * SEC)[0].id, BlockServiceId(2));
        // A retry, or an id never seen, succeeds without changes.
        let out = reg.handle(forget(1), EggsTime(201 * SEC));
        assert!(out.result.is_ok() && out.changes.is_empty());
    }

    #[test]
    fn stale_flag_is_computed_from_last_seen() {
        let mut reg = registry();
        run(&mut reg, register_bs(vec![registration(1, 1)]), 100 * SEC).unwrap();
        run(
            &mut reg,
            set_flags(1, flags::NO_READ, flags::NO_READ),
            100 * SEC,
        )
        .unwrap();
        let flags_at = |reg: &Registry, t: u64| block_services(reg, t)[0].flags;
        assert_eq!(
            flags_at(&reg, 160 * SEC),
            flags::NO_READ,
            "exactly 60 s is fresh"
        );
        assert_eq!(flags_at(&reg, 160 * SEC + 1), flags::NO_READ | flags::STALE);
        assert_eq!(flags_at(&reg, 50 * SEC), flags::NO_READ, "clock went back");
        run(&mut reg, register_bs(vec![registration(1, 1)]), 200 * SEC).unwrap();
        assert_eq!(
            flags_at(&reg, 201 * SEC),
            flags::NO_READ,
            "heartbeat clears it"
        );
    }

    #[test]
    fn set_flags_applies_the_mask() {
        let mut reg = registry();
        run(&mut reg, register_bs(vec![registration(1, 1)]), SEC).unwrap();
        let all = flags::NO_WRITE | flags::NO_READ | flags::DECOMMISSIONED;
        run(
            &mut reg,
            set_flags(1, all, flags::NO_WRITE | flags::NO_READ),
            SEC,
        )
        .unwrap();
        assert_eq!(
            block_services(&reg, SEC)[0].flags,
            flags::NO_WRITE | flags::NO_READ
        );
        run(
            &mut reg,
            set_flags(1, flags::READ_ONLY, flags::NO_READ | flags::READ_ONLY),
            SEC,
        )
        .unwrap();
        let want = flags::NO_WRITE | flags::READ_ONLY;
        assert_eq!(block_services(&reg, SEC)[0].flags, want);
        let unchanged = reg.handle(set_flags(1, 0xff, 0), EggsTime(SEC));
        assert!(unchanged.result.is_ok());
        assert!(unchanged.changes.is_empty(), "an empty mask writes nothing");
    }

    #[test]
    fn stale_bit_cannot_be_stored() {
        let mut reg = registry();
        run(&mut reg, register_bs(vec![registration(1, 1)]), SEC).unwrap();
        run(&mut reg, set_flags(1, 0xff, 0xff), SEC).unwrap();
        let got = block_services(&reg, SEC)[0].flags;
        assert_eq!(got, !flags::STALE, "every bit but STALE");
    }

    #[test]
    fn a_stored_stale_bit_is_dropped_on_restore() {
        let record = BlockServiceRecord {
            id: BlockServiceId(1),
            addr: addr(1),
            storage_class: StorageClass::Hdd,
            failure_domain: [1; 16],
            secret_key: SecretKey([0; 16]),
            flags: flags::STALE | flags::NO_WRITE,
            capacity_bytes: 1,
            available_bytes: 1,
            blocks: 0,
            path: "/d".into(),
            last_seen: EggsTime(SEC),
        };
        let changes = vec![Change::BlockService(record)];
        let mut reg = Registry::restore(Duration::from_secs(60), changes);
        // Heartbeats and flag changes of the restored service neither keep nor trip on it.
        run(&mut reg, register_bs(vec![registration(1, 1)]), 2 * SEC).unwrap();
        run(
            &mut reg,
            set_flags(1, flags::NO_READ, flags::NO_READ),
            2 * SEC,
        )
        .unwrap();
        let want = flags::NO_WRITE | flags::NO_READ;
        assert_eq!(block_services(&reg, 2 * SEC)[0].flags, want);
    }

    #[test]
    fn set_flags_on_unknown_id_fails() {
        let mut reg = registry();
        run(&mut reg, register_bs(vec![registration(1, 1)]), SEC).unwrap();
        let out = reg.handle(set_flags(2, 1, 1), EggsTime(SEC));
        assert_eq!(out.result, Err(EggsError::BlockServiceNotFound));
        assert!(out.changes.is_empty());
    }

    #[test]
    fn secret_keys_stay_out_of_debug_output() {
        let mut reg = registry();
        run(&mut reg, register_bs(vec![registration(1, 1)]), SEC).unwrap();
        assert!(
            !format!("{reg:?}").contains("171"),
            "0xAB printed as a key byte"
        );
    }
}
