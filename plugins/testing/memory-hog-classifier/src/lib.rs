//! Test guest: a classifier that allocates 1 MiB blocks until memory runs out. The host's
//! per-call memory cap must stop it (a failed `memory.grow` aborts the guest, which traps).

use std::hint::black_box;

use molecule_guest::{Classifier, FileChange, Reload};

const BLOCK: usize = 1 << 20;

#[derive(Debug)]
pub struct MemoryHogClassifier;

impl Classifier for MemoryHogClassifier {
    fn classify(changes: &[FileChange]) -> Reload {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = vec![0u8; BLOCK];
            // Write into every page so the memory is really used, not just reserved.
            for page in block.chunks_mut(4096) {
                page[0] = changes.len() as u8;
            }
            hoard.push(black_box(block));
        }
    }
}

molecule_guest::export_classifier!(MemoryHogClassifier);
