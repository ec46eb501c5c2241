//! Which unprivileged uid each workspace's agent runs under when the host runs as root. A
//! workspace keeps its uid for as long as it has files (its restarts included) and no two
//! workspaces hold the same one: a claim is a file `<uid>` in the pool's directory, created with
//! `O_EXCL` and naming the workspace, so a claim survives a host restart and two claimants can
//! never both win. Uids the machine already uses (an account in the user database, a running
//! process) are never handed out.

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use uuid::Uuid;

/// The lowest uid the pool accepts: below it live the system's own accounts.
pub(super) const LOWEST_UID: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub(super) enum UidError {
    #[error(
        "every uid of runtime.process_uid_base .. + process_uid_count ({first} + {count}) is taken; raise process_uid_count"
    )]
    Exhausted { first: u32, count: u32 },
    #[error("recording the agent's uid: {0}")]
    Io(#[from] io::Error),
}

/// The uids one host hands out, and which workspace holds each.
#[derive(Debug)]
pub(super) struct UidPool {
    dir: PathBuf,
    first: u32,
    count: u32,
    /// The claims on disk, read once at open and kept in step since; the lock also serialises
    /// claims, so concurrent provisions never pick the same uid.
    claims: Mutex<BTreeMap<Uuid, u32>>,
}

/// Whether `first .. first + count` is a range the pool may use: above the system accounts,
/// and short of `u32::MAX` (which means "no uid" to `chown`).
pub(super) fn check_range(first: u32, count: u32) -> Result<(), String> {
    if count == 0 {
        return Err("runtime.process_uid_count must be at least 1".into());
    }
    if first < LOWEST_UID {
        return Err(format!(
            "runtime.process_uid_base must be {LOWEST_UID} or more (lower uids are the system's own accounts)"
        ));
    }
    if first.checked_add(count).is_none_or(|end| end == u32::MAX) {
        return Err(
            "runtime.process_uid_base + process_uid_count must stay below 4294967295".into(),
        );
    }
    Ok(())
}

impl UidPool {
    /// Opens (creating it, mode 0700) the claims directory `dir` for `first .. first + count`.
    pub(super) fn open(dir: &Path, first: u32, count: u32) -> io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut claims = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(uid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let holder = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| text.trim().parse::<Uuid>().ok());
            match holder {
                Some(id) => {
                    claims.insert(id, uid);
                }
                // A claim cut short by a crash names nobody: the uid is free again.
                None => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(UidPool {
            dir: dir.to_path_buf(),
            first,
            count,
            claims: Mutex::new(claims),
        })
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, u32>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The uid `id` holds, if any.
    pub(super) fn uid_of(&self, id: Uuid) -> Option<u32> {
        self.claims().get(&id).copied()
    }

    /// Every held uid with its workspace.
    pub(super) fn held(&self) -> Vec<(Uuid, u32)> {
        self.claims().iter().map(|(id, uid)| (*id, *uid)).collect()
    }

    /// The uid of `id`, claiming the lowest free one first if it holds none. `in_use` says
    /// whether the machine already uses a uid outside the pool.
    pub(super) fn claim(&self, id: Uuid, in_use: impl Fn(u32) -> bool) -> Result<u32, UidError> {
        let mut claims = self.claims();
        if let Some(uid) = claims.get(&id) {
            return Ok(*uid);
        }
        let held: std::collections::BTreeSet<u32> = claims.values().copied().collect();
        for uid in self.first..self.first + self.count {
            if held.contains(&uid) || in_use(uid) {
                continue;
            }
            let path = self.dir.join(uid.to_string());
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
            let mut file = match created {
                Ok(file) => file,
                // Claimed by someone this pool did not know of: leave it to them.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err.into()),
            };
            if let Err(err) = file
                .write_all(id.to_string().as_bytes())
                .and_then(|()| file.sync_all())
            {
                let _ = std::fs::remove_file(&path);
                return Err(err.into());
            }
            claims.insert(id, uid);
            return Ok(uid);
        }
        Err(UidError::Exhausted {
            first: self.first,
            count: self.count,
        })
    }

    /// Gives `id`'s uid back (its files are gone).
    pub(super) fn release(&self, id: Uuid) -> io::Result<()> {
        let mut claims = self.claims();
        if let Some(uid) = claims.remove(&id) {
            match std::fs::remove_file(self.dir.join(uid.to_string())) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Uids the machine uses outside the pool: accounts in the user database and owners of running
/// processes (another host on this machine with an overlapping range, say).
pub(super) fn used_by_the_machine() -> impl Fn(u32) -> bool {
    let running: std::collections::BTreeSet<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| {
            e.metadata()
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        })
        .collect();
    move |uid| {
        running.contains(&uid)
            || nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;

    fn pool(dir: &Path, first: u32, count: u32) -> UidPool {
        UidPool::open(&dir.join("uids"), first, count).unwrap()
    }

    #[test]
    fn a_workspace_keeps_its_uid_across_claims_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::new_v4();
        let first = pool(dir.path(), 5000, 10).claim(id, |_| false).unwrap();
        assert_eq!(first, 5000);
        let reopened = pool(dir.path(), 5000, 10);
        assert_eq!(reopened.uid_of(id), Some(5000));
        assert_eq!(reopened.claim(id, |_| false).unwrap(), 5000);
        assert_eq!(reopened.claim(Uuid::new_v4(), |_| false).unwrap(), 5001);
    }

    #[test]
    fn concurrent_claims_never_share_a_uid() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(pool(dir.path(), 7000, 64));
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || pool.claim(Uuid::new_v4(), |_| false).unwrap())
            })
            .collect();
        let uids: BTreeSet<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(uids.len(), 32, "{uids:?}");
        assert!(uids.iter().all(|uid| (7000..7064).contains(uid)));
        // Two pools on one directory (two hosts, say) do not share either: the claim file
        // decides.
        let other = UidPool::open(&dir.path().join("uids"), 7000, 64).unwrap();
        let stale = super::UidPool {
            dir: dir.path().join("uids"),
            first: 7000,
            count: 64,
            claims: Mutex::new(BTreeMap::new()),
        };
        let fresh = stale.claim(Uuid::new_v4(), |_| false).unwrap();
        assert!(!uids.contains(&fresh), "{fresh} was already claimed");
        assert_eq!(other.held().len(), 32);
    }

    #[test]
    fn uids_the_machine_uses_are_skipped_and_an_exhausted_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path(), 9000, 3);
        let uid = pool.claim(Uuid::new_v4(), |uid| uid == 9000).unwrap();
        assert_eq!(uid, 9001);
        assert_eq!(pool.claim(Uuid::new_v4(), |_| false).unwrap(), 9000);
        assert_eq!(pool.claim(Uuid::new_v4(), |_| false).unwrap(), 9002);
        assert!(matches!(
            pool.claim(Uuid::new_v4(), |_| false),
            Err(UidError::Exhausted {
                first: 9000,
                count: 3
            })
        ));
    }

    #[test]
    fn a_released_uid_is_handed_out_again_and_a_broken_claim_frees_its_uid() {
        let dir = tempfile::tempdir().unwrap();
        let pool_dir = dir.path().join("uids");
        let pool = UidPool::open(&pool_dir, 3000, 2).unwrap();
        let gone = Uuid::new_v4();
        assert_eq!(pool.claim(gone, |_| false).unwrap(), 3000);
        pool.release(gone).unwrap();
        pool.release(gone).unwrap();
        assert!(!pool_dir.join("3000").exists());
        assert_eq!(pool.claim(Uuid::new_v4(), |_| false).unwrap(), 3000);
        // A crash between creating a claim and writing it leaves an empty file.
        std::fs::write(pool_dir.join("3001"), "").unwrap();
        let reopened = UidPool::open(&pool_dir, 3000, 2).unwrap();
        assert_eq!(reopened.claim(Uuid::new_v4(), |_| false).unwrap(), 3001);
    }

    #[test]
    fn the_range_stays_clear_of_system_accounts_and_of_the_no_uid_value() {
        assert!(check_range(2_000_000_000, 65_536).is_ok());
        assert!(check_range(0, 10).is_err());
        assert!(check_range(999, 10).is_err());
        assert!(check_range(1000, 0).is_err());
        assert!(check_range(u32::MAX - 10, 10).is_err());
        assert!(check_range(u32::MAX - 10, 9).is_ok());
    }

    #[test]
    fn the_machine_check_knows_root_and_this_process() {
        let in_use = used_by_the_machine();
        assert!(in_use(0), "root is an account");
        assert!(
            !in_use(2_000_065_535),
            "no account or process holds this uid"
        );
    }
}
