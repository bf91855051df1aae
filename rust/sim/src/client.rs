//! A client as a state machine: one operation at a time, each a sequence of requests, as
//! `eggs-client`'s `Client` performs them (lookups first, then the change; a file's data in
//! inline spans or in one block span written through the block services). Retries and
//! time-outs are `eggs-client`'s retry core, driven by the simulator; an operation only moves
//! on when a reply arrives, or ends with an unknown outcome when the client gives up on a
//! request.

use crate::model::{Event, Expect, Key, Outcome, Unknown};
use eggs_client::span::{EncodedSpan, SpanLayout};
use eggs_protocol::cdc::{self, CdcReq, CdcResp};
use eggs_protocol::codec::RequestBody;
use eggs_protocol::policy::DirectoryInfo;
use eggs_protocol::shard::{self, BlockWriteTarget, DirCursor, ShardReq, ShardResp};
use eggs_protocol::{EggsError, EggsTime, InodeId, InodeType, Name, ShardId, MAX_INLINE_SPAN};

/// Where a request goes.
#[derive(Clone, Debug)]
pub enum Req {
    Shard(ShardId, ShardReq),
    Cdc(CdcReq),
    /// Blocks to write to block services, each with its shard-signed certificate.
    WriteBlocks(Vec<(BlockWriteTarget, Vec<u8>)>),
    /// Blocks to erase, each with its erase certificate.
    EraseBlocks(Vec<BlockWriteTarget>),
}

/// What came back for a request.
#[derive(Clone, Debug)]
pub enum Reply {
    Shard(Result<ShardResp, EggsError>),
    Cdc(Result<CdcResp, EggsError>),
    /// The block services' proofs, one per block, or why a block could not be written.
    Blocks(Result<Vec<[u8; 8]>, EggsError>),
    /// The client stopped retrying: the request may or may not have been applied.
    GaveUp,
}

pub enum Next {
    Send(Req),
    Done(Outcome),
}

#[derive(Clone, Debug)]
pub enum CreateStage {
    Construct,
    /// `AddSpanInitiate` sent for the whole file as one block span.
    Initiate {
        id: InodeId,
        cookie: u64,
    },
    /// The span's blocks are being written.
    WriteBlocks {
        id: InodeId,
        cookie: u64,
    },
    /// `AddSpanCertify` sent with the proofs.
    Certify {
        id: InodeId,
        cookie: u64,
    },
    /// A block could not be written: `RemoveSpan` sent, then the blocks it returns are
    /// erased and the data goes in inline spans instead.
    Undo {
        id: InodeId,
        cookie: u64,
    },
    Erase {
        id: InodeId,
        cookie: u64,
    },
    Span {
        id: InodeId,
        cookie: u64,
        offset: usize,
    },
    Link {
        id: InodeId,
        cookie: u64,
    },
}

/// An operation and how far it got.
#[derive(Clone, Debug)]
pub enum Op {
    Lookup {
        dir: InodeId,
        name: Name,
    },
    ReadDir {
        dir: InodeId,
        start: Option<DirCursor>,
        seen: Vec<(u64, Name)>,
    },
    Create {
        dir: InodeId,
        name: Name,
        data: Vec<u8>,
        /// Written as one block span (through the block services) rather than inline.
        blocks: bool,
        stage: CreateStage,
    },
    Unlink {
        dir: InodeId,
        name: Name,
        edge: Option<(InodeId, EggsTime)>,
    },
    Rename {
        from: Key,
        to: Key,
        edge: Option<(InodeId, EggsTime)>,
    },
    Mkdir {
        owner: InodeId,
        name: Name,
    },
    Rmdir {
        owner: InodeId,
        name: Name,
        edge: Option<(InodeId, EggsTime)>,
    },
}

fn shard_req<B: RequestBody<Req = ShardReq>>(dir: InodeId, body: B) -> Next {
    Next::Send(Req::Shard(dir.shard(), body.into_req()))
}

fn lookup(dir: InodeId, name: &Name) -> Next {
    shard_req(
        dir,
        shard::LookupReq {
            dir_id: dir,
            name: name.clone(),
        },
    )
}

fn done(kind: &'static str) -> Next {
    Next::Done(Outcome::new(kind))
}

fn failed(kind: &'static str, e: EggsError) -> Next {
    Next::Done(Outcome {
        error: Some(e),
        ..Outcome::new(kind)
    })
}

fn unknown(kind: &'static str, u: Unknown) -> Next {
    Next::Done(Outcome {
        unknown: Some(u),
        ..Outcome::new(kind)
    })
}

fn applied(kind: &'static str, events: Vec<Event>) -> Next {
    Next::Done(Outcome {
        events,
        ..Outcome::new(kind)
    })
}

fn set(key: Key, sort: (u64, u8), state: Option<(InodeId, EggsTime)>, expect: Expect) -> Event {
    Event {
        key,
        sort,
        state,
        expect,
    }
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Lookup { .. } => "lookup",
            Op::ReadDir { .. } => "readdir",
            Op::Create { .. } => "create",
            Op::Unlink { .. } => "unlink",
            Op::Rename { from, to, .. } if from.0 == to.0 => "rename-same-dir",
            Op::Rename { .. } => "rename",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
        }
    }

    /// A one-line description for traces (without the file's data).
    pub fn describe(&self) -> String {
        match self {
            Op::Create {
                dir, name, data, ..
            } => format!("create {dir:?}/{name} ({} bytes)", data.len()),
            other => format!("{other:?}"),
        }
    }

    /// The first request.
    pub fn start(&mut self) -> Next {
        match self {
            Op::Lookup { dir, name } => lookup(*dir, name),
            Op::ReadDir { dir, .. } => shard_req(
                *dir,
                shard::ReadDirReq {
                    dir_id: *dir,
                    start: None,
                    mtu: eggs_protocol::DEFAULT_UDP_MTU,
                },
            ),
            Op::Create { dir, .. } => shard_req(
                *dir,
                shard::ConstructFileReq {
                    typ: InodeType::File,
                    attrs: eggs_protocol::InodeAttrs::ROOT_FILE,
                    rdev: 0,
                },
            ),
            Op::Unlink { dir, name, .. } => lookup(*dir, name),
            Op::Rename { from, .. } => lookup(from.0, &from.1),
            Op::Mkdir { owner, name } => Next::Send(Req::Cdc(
                cdc::MakeDirectoryReq {
                    owner_id: *owner,
                    name: name.clone(),
                    info: Default::default(),
                    attrs: eggs_protocol::InodeAttrs::ROOT_DIR,
                }
                .into_req(),
            )),
            Op::Rmdir { owner, name, .. } => lookup(*owner, name),
        }
    }

    /// The reply to the last request: the next request, or the operation's outcome.
    pub fn on_reply(&mut self, reply: Reply) -> Next {
        let kind = self.kind();
        match self {
            Op::Lookup { .. } => done(kind),
            Op::ReadDir { dir, start, seen } => readdir_page(kind, *dir, start, seen, reply),
            Op::Create {
                dir,
                name,
                data,
                blocks,
                stage,
            } => create(kind, *dir, name, data, *blocks, stage, reply),
            Op::Unlink { dir, name, edge } => unlink(kind, *dir, name, edge, reply),
            Op::Rename { from, to, edge } => rename(kind, from, to, edge, reply),
            Op::Mkdir { owner, name } => match reply {
                Reply::Cdc(Ok(CdcResp::MakeDirectory(r))) => applied(
                    kind,
                    vec![set(
                        (*owner, name.clone()),
                        (r.creation_time.0, 0),
                        Some((r.id, r.creation_time)),
                        Expect::Entry(r.id, r.creation_time),
                    )],
                ),
                Reply::GaveUp => unknown(
                    kind,
                    Unknown {
                        keys: vec![(*owner, name.clone())],
                        ..Default::default()
                    },
                ),
                other => unexpected_or_failed(kind, other),
            },
            Op::Rmdir { owner, name, edge } => rmdir(kind, *owner, name, edge, reply),
        }
    }
}

fn unexpected_or_failed(kind: &'static str, reply: Reply) -> Next {
    match reply {
        Reply::Shard(Err(e)) | Reply::Cdc(Err(e)) => failed(kind, e),
        // A reply of the wrong kind: the client library reports it as a bad response.
        _ => failed(kind, EggsError::InternalError),
    }
}

fn readdir_page(
    kind: &'static str,
    dir: InodeId,
    start: &mut Option<DirCursor>,
    seen: &mut Vec<(u64, Name)>,
    reply: Reply,
) -> Next {
    let Reply::Shard(Ok(ShardResp::ReadDir(r))) = reply else {
        return match reply {
            Reply::GaveUp => done(kind),
            other => unexpected_or_failed(kind, other),
        };
    };
    for e in r.entries {
        let k = (e.name_hash, e.name);
        // Listing order is (hash, name), strictly increasing across pages too.
        if seen.last().is_some_and(|last| *last >= k) {
            return Next::Done(Outcome {
                violation: Some(format!(
                    "readdir of {dir:?}: {:?} after {:?}",
                    k,
                    seen.last()
                )),
                ..Outcome::new(kind)
            });
        }
        seen.push(k);
    }
    match r.next {
        Some(c) => {
            *start = Some(c.clone());
            shard_req(
                dir,
                shard::ReadDirReq {
                    dir_id: dir,
                    start: Some(c),
                    mtu: eggs_protocol::DEFAULT_UDP_MTU,
                },
            )
        }
        None => done(kind),
    }
}

fn create(
    kind: &'static str,
    dir: InodeId,
    name: &Name,
    data: &[u8],
    blocks: bool,
    stage: &mut CreateStage,
    reply: Reply,
) -> Next {
    let linking = matches!(stage, CreateStage::Link { .. });
    let resp = match reply {
        Reply::Shard(Ok(r)) => r,
        Reply::Blocks(r) => return blocks_done(dir, name, data, stage, r),
        // Giving up before the link leaves at most a transient file: no visible change.
        Reply::GaveUp if linking => {
            let CreateStage::Link { id, .. } = *stage else {
                return done(kind);
            };
            return Next::Done(Outcome {
                unknown: Some(Unknown {
                    keys: vec![(dir, name.clone())],
                    ..Default::default()
                }),
                file: Some(file_content(id, data)),
                ..Outcome::new(kind)
            });
        }
        Reply::GaveUp => return done(kind),
        // No block services to place the span on (yet): the data goes inline instead.
        Reply::Shard(Err(EggsError::NotEnoughBlockServices)) => {
            let CreateStage::Initiate { id, cookie } = *stage else {
                return failed(kind, EggsError::NotEnoughBlockServices);
            };
            return inline_from_start(dir, name, data, stage, id, cookie);
        }
        other => return unexpected_or_failed(kind, other),
    };
    match (stage.clone(), resp) {
        (CreateStage::Construct, ShardResp::ConstructFile(f)) if blocks && !data.is_empty() => {
            *stage = CreateStage::Initiate {
                id: f.id,
                cookie: f.cookie,
            };
            match encode_span(data) {
                Ok(span) => initiate(dir, f.id, f.cookie, &span),
                Err(why) => Next::Done(Outcome {
                    violation: Some(format!("no block layout for {} bytes: {why}", data.len())),
                    ..Outcome::new(kind)
                }),
            }
        }
        (CreateStage::Construct, ShardResp::ConstructFile(f)) => {
            inline_from_start(dir, name, data, stage, f.id, f.cookie)
        }
        (CreateStage::Initiate { id, cookie }, ShardResp::AddSpanInitiate(r)) => {
            let Ok(span) = encode_span(data) else {
                return failed(kind, EggsError::InternalError);
            };
            if r.blocks.len() != span.layout.total_blocks() {
                return failed(kind, EggsError::InternalError);
            }
            *stage = CreateStage::WriteBlocks { id, cookie };
            let writes = r
                .blocks
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, span.block_pieces(i).concat()))
                .collect();
            Next::Send(Req::WriteBlocks(writes))
        }
        (CreateStage::Certify { id, cookie }, ShardResp::AddSpanCertify(_)) => {
            link(dir, name, stage, id, cookie)
        }
        (CreateStage::Undo { id, cookie }, ShardResp::RemoveSpan(r)) => {
            *stage = CreateStage::Erase { id, cookie };
            Next::Send(Req::EraseBlocks(r.blocks))
        }
        (CreateStage::Span { id, cookie, offset }, ShardResp::AddInlineSpan(_)) => {
            let end = (offset + MAX_INLINE_SPAN).min(data.len());
            *stage = CreateStage::Span {
                id,
                cookie,
                offset: end,
            };
            next_span(dir, name, data, stage)
        }
        (CreateStage::Link { id, .. }, ShardResp::LinkFile(r)) => Next::Done(Outcome {
            events: vec![set(
                (dir, name.clone()),
                (r.creation_time.0, 0),
                Some((id, r.creation_time)),
                Expect::Entry(id, r.creation_time),
            )],
            file: Some(file_content(id, data)),
            ..Outcome::new(kind)
        }),
        _ => failed(kind, EggsError::InternalError),
    }
}

/// The file's data as one block span, laid out as the client library lays it out under the
/// root directory's default policies.
fn encode_span(data: &[u8]) -> Result<EncodedSpan, String> {
    let size = u32::try_from(data.len()).map_err(|e| e.to_string())?;
    let layout =
        SpanLayout::for_span(&DirectoryInfo::root_default(), size).map_err(|e| e.to_string())?;
    EncodedSpan::encode(layout, data.to_vec(), Vec::new()).map_err(|e| e.to_string())
}

fn initiate(dir: InodeId, id: InodeId, cookie: u64, span: &EncodedSpan) -> Next {
    shard_req(
        dir,
        shard::AddSpanInitiateReq {
            file_id: id,
            cookie,
            byte_offset: 0,
            size: span.size,
            crc: span.crc,
            storage_class: span.layout.storage_class,
            parity: span.layout.parity,
            stripes: span.layout.stripes,
            cell_size: span.layout.cell_size,
            block_crcs: span.block_crcs.clone(),
            blacklist: Vec::new(),
        },
    )
}

/// The block services answered a write (certify, or undo the span) or an erase (go on
/// inline, whether or not every block could be erased: GC erases what is left).
fn blocks_done(
    dir: InodeId,
    name: &Name,
    data: &[u8],
    stage: &mut CreateStage,
    r: Result<Vec<[u8; 8]>, EggsError>,
) -> Next {
    match (stage.clone(), r) {
        (CreateStage::WriteBlocks { id, cookie }, Ok(proofs)) => {
            *stage = CreateStage::Certify { id, cookie };
            shard_req(
                dir,
                shard::AddSpanCertifyReq {
                    file_id: id,
                    cookie,
                    byte_offset: 0,
                    proofs,
                },
            )
        }
        (CreateStage::WriteBlocks { id, cookie }, Err(_)) => {
            *stage = CreateStage::Undo { id, cookie };
            shard_req(
                dir,
                shard::RemoveSpanReq {
                    file_id: id,
                    cookie,
                    byte_offset: 0,
                },
            )
        }
        (CreateStage::Erase { id, cookie }, _) => {
            inline_from_start(dir, name, data, stage, id, cookie)
        }
        _ => failed("create", EggsError::InternalError),
    }
}

/// Writes the data in inline spans from offset 0 (an empty file goes straight to its link).
fn inline_from_start(
    dir: InodeId,
    name: &Name,
    data: &[u8],
    stage: &mut CreateStage,
    id: InodeId,
    cookie: u64,
) -> Next {
    *stage = CreateStage::Span {
        id,
        cookie,
        offset: 0,
    };
    next_span(dir, name, data, stage)
}

fn link(dir: InodeId, name: &Name, stage: &mut CreateStage, id: InodeId, cookie: u64) -> Next {
    *stage = CreateStage::Link { id, cookie };
    shard_req(
        dir,
        shard::LinkFileReq {
            file_id: id,
            cookie,
            owner_id: dir,
            name: name.clone(),
        },
    )
}

/// What a created file must contain: its length and CRC32C.
fn file_content(id: InodeId, data: &[u8]) -> (InodeId, u64, u32) {
    (id, data.len() as u64, crc32c::crc32c(data))
}

/// Sends the next inline span, or the link once all data is in.
fn next_span(dir: InodeId, name: &Name, data: &[u8], stage: &mut CreateStage) -> Next {
    let CreateStage::Span { id, cookie, offset } = *stage else {
        return done("create");
    };
    if offset >= data.len() {
        return link(dir, name, stage, id, cookie);
    }
    let chunk = &data[offset..(offset + MAX_INLINE_SPAN).min(data.len())];
    shard_req(
        dir,
        shard::AddInlineSpanReq {
            file_id: id,
            cookie,
            byte_offset: offset as u64,
            data: chunk.to_vec(),
            crc: crc32c::crc32c(chunk),
        },
    )
}

/// Handles the reply to the lookup that starts unlink, rename and rmdir: the edge found.
fn looked_up(reply: Reply) -> Result<(InodeId, EggsTime), Option<EggsError>> {
    match reply {
        Reply::Shard(Ok(ShardResp::Lookup(r))) => Ok((r.target_id, r.creation_time)),
        Reply::Shard(Err(e)) => Err(Some(e)),
        Reply::GaveUp => Err(None),
        _ => Err(Some(EggsError::InternalError)),
    }
}

fn unlink(
    kind: &'static str,
    dir: InodeId,
    name: &Name,
    edge: &mut Option<(InodeId, EggsTime)>,
    reply: Reply,
) -> Next {
    let Some((target, ctime)) = *edge else {
        return match looked_up(reply) {
            Ok((t, _)) if t.is_dir() => failed(kind, EggsError::IsADirectory),
            Ok((t, c)) => {
                *edge = Some((t, c));
                shard_req(
                    dir,
                    shard::SoftUnlinkFileReq {
                        dir_id: dir,
                        target_id: t,
                        name: name.clone(),
                        creation_time: c,
                    },
                )
            }
            Err(Some(e)) => failed(kind, e),
            Err(None) => done(kind),
        };
    };
    let _ = (target, ctime);
    match reply {
        Reply::Shard(Ok(ShardResp::SoftUnlinkFile(r))) => applied(
            kind,
            vec![set(
                (dir, name.clone()),
                (r.delete_creation_time.0, 0),
                None,
                Expect::Entry(InodeId::NULL, r.delete_creation_time),
            )],
        ),
        Reply::GaveUp => unknown(
            kind,
            Unknown {
                keys: vec![(dir, name.clone())],
                ..Default::default()
            },
        ),
        other => unexpected_or_failed(kind, other),
    }
}

fn rename(
    kind: &'static str,
    from: &Key,
    to: &Key,
    edge: &mut Option<(InodeId, EggsTime)>,
    reply: Reply,
) -> Next {
    let Some((target, c0)) = *edge else {
        return match looked_up(reply) {
            Ok((t, c)) => {
                *edge = Some((t, c));
                rename_request(from, to, t, c)
            }
            Err(Some(e)) => failed(kind, e),
            Err(None) => done(kind),
        };
    };
    let same_dir = from.0 == to.0;
    let new_time = match reply {
        Reply::GaveUp => {
            return unknown(
                kind,
                Unknown {
                    keys: vec![from.clone(), to.clone()],
                    rename: Some((target, from.clone(), c0, to.clone())),
                    dir: target.is_dir().then_some(target),
                },
            )
        }
        Reply::Shard(Ok(ShardResp::SameDirectoryRename(r))) if same_dir => r.new_creation_time,
        Reply::Cdc(Ok(CdcResp::RenameFile(r))) if !same_dir => r.creation_time,
        Reply::Cdc(Ok(CdcResp::RenameDirectory(r))) if !same_dir => r.creation_time,
        other => return unexpected_or_failed(kind, other),
    };
    let gone = if same_dir {
        // Both edges are on one shard and change at the same time.
        set(
            from.clone(),
            (new_time.0, 0),
            None,
            Expect::Entry(InodeId::NULL, new_time),
        )
    } else {
        // The old edge was locked from before the new one existed until the CDC moved it,
        // so it went away right after its own creation in the order of that name's changes.
        set(from.clone(), (c0.0, 1), None, Expect::AnyDeletion)
    };
    applied(
        kind,
        vec![
            gone,
            set(
                to.clone(),
                (new_time.0, 0),
                Some((target, new_time)),
                Expect::Entry(target, new_time),
            ),
        ],
    )
}

fn rename_request(from: &Key, to: &Key, target: InodeId, c0: EggsTime) -> Next {
    if from.0 == to.0 {
        return shard_req(
            from.0,
            shard::SameDirectoryRenameReq {
                dir_id: from.0,
                target_id: target,
                old_name: from.1.clone(),
                old_creation_time: c0,
                new_name: to.1.clone(),
            },
        );
    }
    let body: CdcReq = if target.is_dir() {
        cdc::RenameDirectoryReq {
            target_id: target,
            old_owner_id: from.0,
            old_name: from.1.clone(),
            old_creation_time: c0,
            new_owner_id: to.0,
            new_name: to.1.clone(),
        }
        .into_req()
    } else {
        cdc::RenameFileReq {
            target_id: target,
            old_owner_id: from.0,
            old_name: from.1.clone(),
            old_creation_time: c0,
            new_owner_id: to.0,
            new_name: to.1.clone(),
        }
        .into_req()
    };
    Next::Send(Req::Cdc(body))
}

fn rmdir(
    kind: &'static str,
    owner: InodeId,
    name: &Name,
    edge: &mut Option<(InodeId, EggsTime)>,
    reply: Reply,
) -> Next {
    let Some((target, c0)) = *edge else {
        return match looked_up(reply) {
            Ok((t, _)) if !t.is_dir() => failed(kind, EggsError::NotADirectory),
            Ok((t, c)) => {
                *edge = Some((t, c));
                Next::Send(Req::Cdc(
                    cdc::RemoveDirectoryReq {
                        owner_id: owner,
                        target_id: t,
                        name: name.clone(),
                        creation_time: c,
                    }
                    .into_req(),
                ))
            }
            Err(Some(e)) => failed(kind, e),
            Err(None) => done(kind),
        };
    };
    match reply {
        Reply::Cdc(Ok(CdcResp::RemoveDirectory(_))) => Next::Done(Outcome {
            events: vec![set(
                (owner, name.clone()),
                (c0.0, 1),
                None,
                Expect::AnyDeletion,
            )],
            removed: Some(target),
            ..Outcome::new(kind)
        }),
        Reply::GaveUp => unknown(
            kind,
            Unknown {
                keys: vec![(owner, name.clone())],
                dir: Some(target),
                ..Default::default()
            },
        ),
        other => unexpected_or_failed(kind, other),
    }
}
