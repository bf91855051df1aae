//! `blockservice decommission`, `migrate` and `scrub --now`: moving blocks off a block
//! service and verifying every block, from the command line (eggsgc does the same in the
//! background).

use super::blockservice::{self, Flag};
use crate::error::{CliError, Result};
use eggs_client::{Client, ShuckleClient};
use eggs_gc::migrate::{count_files, migrate_block_service, MigrateStats};
use eggs_gc::scrub::{scrub_pass, ScrubOptions, ScrubStats};
use eggs_protocol::shuckle::{flags, BlockServicesReq, ForgetBlockServiceReq};
use eggs_protocol::BlockServiceId;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Progress lines at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Flags the service decommissioned and no-write: shards place nothing new on it, and
/// migration may empty it.
pub async fn decommission(
    shuckle: &ShuckleClient,
    id: BlockServiceId,
    out: &mut dyn Write,
) -> Result<()> {
    blockservice::flag(
        shuckle,
        id,
        &[Flag::Decommissioned, Flag::NoWrite],
        &[],
        out,
    )
    .await?;
    writeln!(
        out,
        "now move its blocks elsewhere: eggscli migrate {:016x}",
        id.0
    )?;
    Ok(())
}

/// Moves every block off service `id`, printing progress; fails if some could not be moved.
pub async fn migrate(c: &Arc<Client>, id: BlockServiceId, out: &mut dyn Write) -> Result<()> {
    let services = c.shuckle().request(BlockServicesReq {}).await?.services;
    let Some(service) = services.iter().find(|s| s.id == id) else {
        return Err(CliError::Invalid(format!(
            "no block service {:016x} (see `eggscli blockservice list`)",
            id.0
        )));
    };
    if service.flags & (flags::NO_WRITE | flags::DECOMMISSIONED) == 0 {
        writeln!(
            out,
            "warning: {:016x} still takes new blocks; `eggscli blockservice decommission` it first",
            id.0
        )?;
    }
    let mut last = Instant::now();
    let mut lines = Vec::new();
    let stats = migrate_block_service(c, id, &mut |s| {
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            lines.push(progress_line(s));
        }
    })
    .await?;
    for l in lines {
        writeln!(out, "{l}")?;
    }
    writeln!(out, "{}", progress_line(&stats))?;
    if stats.remaining_files > 0 {
        return Err(CliError::Invalid(format!(
            "{} files still have blocks on {:016x} (run again later)",
            stats.remaining_files, id.0
        )));
    }
    writeln!(
        out,
        "{:016x} holds no blocks any file refers to: its directory can be wiped",
        id.0
    )?;
    Ok(())
}

/// Removes an emptied, decommissioned and shut-down service from shuckle, after checking
/// that no shard lists a file with blocks on it.
pub async fn forget(c: &Client, id: BlockServiceId, out: &mut dyn Write) -> Result<()> {
    let files = count_files(c, id).await?;
    if files > 0 {
        return Err(CliError::Invalid(format!(
            "{files} files still have blocks on {:016x}: `eggscli migrate` it first",
            id.0
        )));
    }
    c.shuckle().request(ForgetBlockServiceReq { id }).await?;
    writeln!(out, "{:016x} forgotten", id.0)?;
    Ok(())
}

fn progress_line(s: &MigrateStats) -> String {
    format!(
        "pass {}: {} files, {} blocks moved ({} rebuilt from parity), {} already moved, {} failed, {} left behind",
        s.passes, s.files, s.blocks_moved, s.blocks_rebuilt, s.already_moved, s.failed, s.leftovers
    )
}

/// Runs one scrub pass now and prints what it found and repaired; fails if a bad block could
/// not be repaired.
pub async fn scrub_now(
    c: &Arc<Client>,
    rate_bytes_per_s: u64,
    repair: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let opts = ScrubOptions {
        rate_bytes_per_s,
        repair,
        ..ScrubOptions::default()
    };
    let start = Instant::now();
    let s = scrub_pass(c, &opts).await?;
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    writeln!(out, "{}", scrub_summary(&s, secs))?;
    if s.repair_failed > 0 || (!repair && s.missing + s.corrupt > 0) {
        return Err(CliError::Invalid(format!(
            "{} bad blocks not repaired",
            if repair {
                s.repair_failed
            } else {
                s.missing + s.corrupt
            }
        )));
    }
    Ok(())
}

pub fn scrub_summary(s: &ScrubStats, secs: f64) -> String {
    format!(
        "checked {} blocks ({:.1} MiB) of {} spans in {} files in {secs:.1}s ({:.1} MiB/s): \
         {} missing, {} corrupt, {} unreachable; {} repaired, {} already repaired, {} failed, {} left behind",
        s.blocks_checked,
        s.bytes_checked as f64 / (1 << 20) as f64,
        s.spans,
        s.files,
        s.bytes_checked as f64 / (1 << 20) as f64 / secs,
        s.missing,
        s.corrupt,
        s.unknown,
        s.repaired,
        s.already_repaired,
        s.repair_failed,
        s.leftovers
    )
}
