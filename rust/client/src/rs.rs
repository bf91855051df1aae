//! Erasure coding of spans: Reed-Solomon over GF(2^8) (the `reed-solomon-erasure` crate), or
//! mirroring when a span has a single data block.
//!
//! The code works byte by byte across blocks (parity byte `j` depends only on byte `j` of each
//! data block), so whole blocks, single cells or any byte range common to all blocks can be
//! encoded and rebuilt with the same call. `docs/PROTOCOL.md` (section 6) pins the matrix.

use eggs_protocol::policy::Parity;
use reed_solomon_erasure::galois_8::ReedSolomon;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RsError {
    #[error("invalid parity {data}+{parity}")]
    BadParity { data: u8, parity: u8 },
    #[error("expected {expected} blocks, got {got}")]
    WrongBlockCount { expected: usize, got: usize },
    #[error("blocks of different sizes")]
    UnequalBlocks,
    #[error("only {present} of the {needed} blocks needed to rebuild are present")]
    TooFewPresent { present: usize, needed: usize },
    #[error("erasure coding failed: {0}")]
    Coding(String),
}

/// Encoder/decoder for one parity scheme. Cheap to get: instances are cached per scheme, and
/// each caches the decode matrices of the loss patterns it has seen.
#[derive(Clone)]
pub struct ErasureCode {
    data: usize,
    parity: usize,
    /// `None` for mirroring (one data block) and for no parity at all.
    rs: Option<Arc<ReedSolomon>>,
}

impl std::fmt::Debug for ErasureCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ErasureCode({}+{})", self.data, self.parity)
    }
}

/// One codec per `(data, parity)`, shared by the whole process.
type Codecs = Mutex<HashMap<(usize, usize), Arc<ReedSolomon>>>;

fn cached_rs(data: usize, parity: usize) -> Result<Arc<ReedSolomon>, RsError> {
    static CACHE: OnceLock<Codecs> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // A panic while holding the lock cannot leave the map inconsistent.
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rs) = map.get(&(data, parity)) {
        return Ok(rs.clone());
    }
    let rs = Arc::new(ReedSolomon::new(data, parity).map_err(|e| RsError::Coding(e.to_string()))?);
    map.insert((data, parity), rs.clone());
    Ok(rs)
}

impl ErasureCode {
    pub fn new(parity: Parity) -> Result<ErasureCode, RsError> {
        if !parity.is_valid() {
            return Err(RsError::BadParity {
                data: parity.data,
                parity: parity.parity,
            });
        }
        let (data, par) = (parity.data as usize, parity.parity as usize);
        let rs = if data > 1 && par > 0 {
            Some(cached_rs(data, par)?)
        } else {
            None
        };
        Ok(ErasureCode {
            data,
            parity: par,
            rs,
        })
    }

    pub fn data_blocks(&self) -> usize {
        self.data
    }

    pub fn parity_blocks(&self) -> usize {
        self.parity
    }

    pub fn total_blocks(&self) -> usize {
        self.data + self.parity
    }

    /// Computes the parity of `data` (D slices of one length) into `parity` (P slices of the
    /// same length), overwriting them.
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), RsError> {
        check_count(self.data, data.len())?;
        check_count(self.parity, parity.len())?;
        let len = data[0].len();
        if data.iter().any(|d| d.len() != len) || parity.iter().any(|p| p.len() != len) {
            return Err(RsError::UnequalBlocks);
        }
        match &self.rs {
            Some(rs) => rs
                .encode_sep(data, parity)
                .map_err(|e| RsError::Coding(e.to_string())),
            None => {
                // Mirroring (or nothing to do when there is no parity).
                for p in parity.iter_mut() {
                    p.copy_from_slice(data[0]);
                }
                Ok(())
            }
        }
    }

    /// Rebuilds the blocks marked absent (`false`) from the present ones, in place: every
    /// slice must have the same length, absent ones' contents are overwritten. With
    /// `data_only`, absent parity blocks are left alone (readers need only the data).
    pub fn reconstruct(
        &self,
        blocks: &mut [(&mut [u8], bool)],
        data_only: bool,
    ) -> Result<(), RsError> {
        check_count(self.total_blocks(), blocks.len())?;
        // Absent parity blocks are not touched when only data is wanted, so their buffers
        // may be left unallocated.
        let involved = |i: usize, present: bool| present || i < self.data || !data_only;
        let mut lens = blocks
            .iter()
            .enumerate()
            .filter(|(i, (_, p))| involved(*i, *p))
            .map(|(_, (b, _))| b.len());
        let len = lens.next().unwrap_or(0);
        if lens.any(|l| l != len) {
            return Err(RsError::UnequalBlocks);
        }
        let present = blocks.iter().filter(|(_, p)| *p).count();
        if present == blocks.len() {
            return Ok(());
        }
        if present < self.data {
            return Err(RsError::TooFewPresent {
                present,
                needed: self.data,
            });
        }
        if len == 0 {
            return Ok(());
        }
        match &self.rs {
            Some(rs) => {
                let r = if data_only {
                    rs.reconstruct_data(blocks)
                } else {
                    rs.reconstruct(blocks)
                };
                r.map_err(|e| RsError::Coding(e.to_string()))?;
                let rebuilt = if data_only { self.data } else { blocks.len() };
                blocks[..rebuilt].iter_mut().for_each(|b| b.1 = true);
                Ok(())
            }
            None => mirror_reconstruct(blocks, data_only),
        }
    }
}

/// With one data block every block is a copy: copy any present one into the absent ones.
fn mirror_reconstruct(blocks: &mut [(&mut [u8], bool)], data_only: bool) -> Result<(), RsError> {
    let source = blocks
        .iter()
        .position(|(_, p)| *p)
        .ok_or(RsError::TooFewPresent {
            present: 0,
            needed: 1,
        })?;
    let (before, rest) = blocks.split_at_mut(source);
    let (src, after) = rest.split_first_mut().ok_or(RsError::UnequalBlocks)?;
    let targets = before.iter_mut().chain(after.iter_mut());
    for (i, (b, present)) in targets.enumerate() {
        // Index 0 is the data block; with data_only only it matters.
        let is_data = i == 0 && source != 0;
        if !*present && (!data_only || is_data) {
            b.copy_from_slice(src.0);
            *present = true;
        }
    }
    Ok(())
}

fn check_count(expected: usize, got: usize) -> Result<(), RsError> {
    if expected == got {
        Ok(())
    } else {
        Err(RsError::WrongBlockCount { expected, got })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(d: u8, p: u8) -> ErasureCode {
        ErasureCode::new(Parity { data: d, parity: p }).unwrap()
    }

    fn random_blocks(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| (0..len).map(|_| rng.gen()).collect())
            .collect()
    }

    /// Data blocks plus their parity.
    fn encoded(c: &ErasureCode, len: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut blocks = random_blocks(c.data_blocks(), len, seed);
        let mut parity = vec![vec![0u8; len]; c.parity_blocks()];
        {
            let data: Vec<&[u8]> = blocks.iter().map(|b| &b[..]).collect();
            let mut par: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
            c.encode(&data, &mut par).unwrap();
        }
        blocks.extend(parity);
        blocks
    }

    /// Every subset of `k` indices out of `n`, as bit masks.
    fn subsets(n: usize, max_k: usize) -> impl Iterator<Item = u32> {
        (0u32..(1 << n)).filter(move |m| m.count_ones() as usize <= max_k)
    }

    fn check_all_losses(d: u8, p: u8, len: usize) {
        let c = code(d, p);
        let good = encoded(&c, len, d as u64 * 100 + p as u64);
        for lost in subsets(c.total_blocks(), p as usize) {
            for data_only in [false, true] {
                let mut bufs: Vec<Vec<u8>> = good
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        if lost & (1 << i) != 0 {
                            vec![0xa5; len]
                        } else {
                            b.clone()
                        }
                    })
                    .collect();
                let mut shards: Vec<(&mut [u8], bool)> = bufs
                    .iter_mut()
                    .enumerate()
                    .map(|(i, b)| (&mut b[..], lost & (1 << i) == 0))
                    .collect();
                c.reconstruct(&mut shards, data_only).unwrap();
                let limit = if data_only { d as usize } else { good.len() };
                assert_eq!(
                    &bufs[..limit],
                    &good[..limit],
                    "{d}+{p} lost {lost:b} data_only {data_only}"
                );
            }
        }
    }

    #[test]
    fn every_loss_of_up_to_p_blocks_is_rebuilt() {
        for (d, p) in [(2, 1), (2, 2), (3, 2), (4, 2), (4, 3), (5, 3), (10, 4)] {
            check_all_losses(d, p, 97);
        }
    }

    #[test]
    fn mirroring_copies() {
        for p in 0..=4u8 {
            let c = code(1, p);
            let good = encoded(&c, 50, p as u64);
            for b in &good {
                assert_eq!(b, &good[0], "parity of a single data block is a copy");
            }
            check_all_losses(1, p, 50);
        }
    }

    #[test]
    fn no_parity_needs_everything() {
        let c = code(3, 0);
        let mut bufs = encoded(&c, 10, 1);
        assert_eq!(bufs.len(), 3);
        let mut shards: Vec<(&mut [u8], bool)> =
            bufs.iter_mut().map(|b| (&mut b[..], true)).collect();
        c.reconstruct(&mut shards, false).unwrap();
        shards[1].1 = false;
        assert!(matches!(
            c.reconstruct(&mut shards, true),
            Err(RsError::TooFewPresent { .. })
        ));
    }

    #[test]
    fn too_many_losses_fail_without_touching_blocks() {
        let c = code(4, 2);
        let good = encoded(&c, 33, 7);
        let mut bufs = good.clone();
        let mut shards: Vec<(&mut [u8], bool)> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (&mut b[..], i >= 3))
            .collect();
        assert_eq!(
            c.reconstruct(&mut shards, false),
            Err(RsError::TooFewPresent {
                present: 3,
                needed: 4
            })
        );
        assert_eq!(bufs, good);
    }

    #[test]
    fn byte_ranges_code_like_whole_blocks() {
        // Encoding a sub-range of every block gives the same parity as the whole-block parity.
        let c = code(5, 3);
        let whole = encoded(&c, 4096 * 3, 9);
        let (from, to) = (4096, 8192 + 17);
        let data: Vec<&[u8]> = whole[..5].iter().map(|b| &b[from..to]).collect();
        let mut parity = vec![vec![0u8; to - from]; 3];
        let mut par: Vec<&mut [u8]> = parity.iter_mut().map(|p| &mut p[..]).collect();
        c.encode(&data, &mut par).unwrap();
        for (i, p) in parity.iter().enumerate() {
            assert_eq!(&p[..], &whole[5 + i][from..to]);
        }
    }

    #[test]
    fn invalid_shapes_are_errors() {
        assert!(ErasureCode::new(Parity { data: 0, parity: 1 }).is_err());
        assert!(ErasureCode::new(Parity {
            data: 17,
            parity: 1
        })
        .is_err());
        let c = code(2, 1);
        let a = [0u8; 4];
        let b = [0u8; 5];
        let mut p = [0u8; 4];
        assert_eq!(
            c.encode(&[&a, &b], &mut [&mut p]),
            Err(RsError::UnequalBlocks)
        );
        assert!(matches!(
            c.encode(&[&a], &mut [&mut p]),
            Err(RsError::WrongBlockCount { .. })
        ));
    }
}
