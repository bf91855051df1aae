//! Registration with shuckle: at start and every interval, tell shuckle where each service
//! is and how full it is (the heartbeat), then read back the flags operators set on them.

use crate::service::{Service, Services};
use eggs_client::ShuckleClient;
use eggs_protocol::shuckle::{
    BlockServiceRegistration, BlockServicesReq, RegisterBlockServicesReq,
};
use eggs_protocol::Addr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Registration {
    pub services: Arc<Services>,
    pub addr: Addr,
    pub failure_domain: [u8; 16],
    pub shuckle: ShuckleClient,
    pub interval: Duration,
}

/// Runs until aborted. Shuckle being away is logged once per outage, not every interval;
/// meanwhile the services keep serving with the flags they last heard.
pub(crate) async fn run(reg: Registration) {
    let mut ticker = tokio::time::interval(reg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut registered = false;
    loop {
        ticker.tick().await;
        match once(&reg).await {
            Ok(()) => {
                if failing || !registered {
                    tracing::info!(
                        "registered {} block services with shuckle at {}",
                        reg.services.ids().len(),
                        reg.shuckle.addr()
                    );
                }
                failing = false;
                registered = true;
            }
            Err(e) if failing => tracing::debug!("cannot register with shuckle: {e}"),
            Err(e) => {
                tracing::warn!("cannot register with shuckle (will keep trying): {e}");
                failing = true;
            }
        }
    }
}

async fn once(reg: &Registration) -> Result<(), eggs_client::ClientError> {
    let services = describe_all(reg).await;
    reg.shuckle
        .request(RegisterBlockServicesReq { services })
        .await?;
    let known = reg.shuckle.request(BlockServicesReq {}).await?;
    for info in known.services {
        if let Some(service) = reg.services.get(info.id) {
            service.set_flags(info.flags);
        }
    }
    Ok(())
}

/// statvfs can block on a sick disk: done on the blocking pool.
async fn describe_all(reg: &Registration) -> Vec<BlockServiceRegistration> {
    let services: Vec<Arc<Service>> = reg.services.iter().cloned().collect();
    let (addr, failure_domain) = (reg.addr, reg.failure_domain);
    let described = tokio::task::spawn_blocking(move || {
        services
            .iter()
            .map(|s| describe(s, addr, failure_domain))
            .collect()
    })
    .await;
    described.unwrap_or_else(|e| {
        tracing::error!("describing block services failed: {e}");
        Vec::new()
    })
}

/// A disk whose size cannot be read reports none, so that shards stop placing blocks on it.
fn describe(s: &Service, addr: Addr, failure_domain: [u8; 16]) -> BlockServiceRegistration {
    let space = s.store.space().unwrap_or_else(|e| {
        tracing::error!("{}: cannot read free space: {e}", s.path().display());
        crate::sys::Space {
            capacity_bytes: 0,
            available_bytes: 0,
        }
    });
    BlockServiceRegistration {
        id: s.id(),
        addr,
        storage_class: s.identity.storage_class,
        failure_domain,
        secret_key: *s.key(),
        capacity_bytes: space.capacity_bytes,
        available_bytes: space.available_bytes,
        blocks: s.store.block_count(),
        path: s.path().display().to_string(),
    }
}
