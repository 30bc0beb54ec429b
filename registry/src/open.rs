//! Opening a registry: the sled lock, the audit head check, the sweep of a killed writer's temporary files.

use crate::error::{Error, Result};
use crate::{BlobStore, OpenOptions, Registry, head, sweep};
use std::path::Path;

impl Registry {
    /// Opens (or creates) a registry at `root` with the stores it was last opened with (`root/stores.json`,
    /// written by [`Registry::open_with_stores`]), by default every data zone on the local filesystem under
    /// `root/blobs`; refuses a damaged one ([`Error::Damaged`]) and removes stale temporary files (see
    /// [`OpenOptions`] for the choices).
    pub fn open(root: &Path) -> Result<Registry> {
        Self::open_opts(root, &OpenOptions::default())
    }

    /// [`Registry::open`] with options.
    pub fn open_opts(root: &Path, options: &OpenOptions) -> Result<Registry> {
        let stores = crate::stores::read_recorded(root)?;
        let blobs = BlobStore::configured(&root.join("blobs"), &root.join("keys"), &stores)?;
        Self::open_with_blobs_opts(root, blobs, options)
    }

    /// Opens (or creates) a registry whose data zones live in the stores of a `stores:` map (the promotion
    /// config's; zones without an entry under `root/blobs`), and records the map in `root/stores.json` so that
    /// commands that do not read the promotion config ([`Registry::open`]) find the same stores.
    pub fn open_with_stores(root: &Path, stores: &crate::Stores, options: &OpenOptions) -> Result<Registry> {
        let blobs = BlobStore::configured(&root.join("blobs"), &root.join("keys"), stores)?;
        let reg = Self::open_with_blobs_opts(root, blobs, options)?;
        if !options.inspect {
            crate::stores::record(root, stores)?;
        }
        Ok(reg)
    }

    /// Opens (or creates) the metadata at `root/meta.sled` with any blob store (e.g. S3).
    pub fn open_with_blobs(root: &Path, blobs: BlobStore) -> Result<Registry> {
        Self::open_with_blobs_opts(root, blobs, &OpenOptions::default())
    }

    /// Switches an open registry to the stores of a `stores:` map (the promotion config's): removes the
    /// temporary files of killed writers in any new local store, and records the map in `root/stores.json` so
    /// that commands that do not read the promotion config ([`Registry::open`]) find the same stores. Nothing
    /// changes when the map is the one in use.
    pub fn use_stores(&mut self, stores: &crate::Stores) -> Result<()> {
        if self.blobs.stores() == stores {
            return crate::stores::record(&self.root, stores);
        }
        let blobs = BlobStore::configured(&self.root.join("blobs"), &self.root.join("keys"), stores)?;
        self.swept.extend(sweep::sweep_dirs(&self.root, &blobs.local_dirs(), true)?);
        crate::stores::record(&self.root, stores)?;
        self.blobs = blobs;
        Ok(())
    }

    /// [`Registry::open_with_blobs`] with options.
    pub fn open_with_blobs_opts(root: &Path, blobs: BlobStore, options: &OpenOptions) -> Result<Registry> {
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            path: root.to_path_buf(),
            action: "cannot create the registry directory",
            source,
        })?;
        let path = root.join("meta.sled");
        if !path.exists()
            && let Some(h) = head::read(&root.join(head::HEAD_FILE))?.filter(|h| h.count > 0)
        {
            // Never create an empty database where the head says entries were written.
            return Err(Error::Damaged {
                path: root.to_path_buf(),
                message: format!(
                    "meta.sled is missing but {} records {} audit entries ending in {}; restore meta.sled from a \
                     backup",
                    head::HEAD_FILE,
                    h.count,
                    h.hash
                ),
            });
        }
        // One process holds a registry at a time (sled's file lock); wait up to 10 s for another sovra command
        // (e.g. a parallel CI job) to finish before giving up.
        let mut attempts = 0;
        let db = loop {
            // sled may panic on a damaged file instead of returning an error; that is damage, not a crash.
            let opened = std::panic::catch_unwind(|| sled::open(&path)).map_err(|p| {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Error::Damaged {
                    path: path.clone(),
                    message: format!("the metadata store cannot be read ({why}); restore meta.sled from a backup"),
                }
            })?;
            match opened {
                Ok(db) => break db,
                Err(e) if attempts < 100 && e.to_string().contains("could not acquire lock") => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    return Err(Error::Store {
                        path: path.clone(),
                        message: format!("{e} (is another sovra process using this registry?)"),
                    });
                }
                Err(e) => {
                    return Err(Error::Damaged {
                        path: path.clone(),
                        message: format!("the metadata store cannot be opened ({e}); restore meta.sled from a backup"),
                    });
                }
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(Error::store(&path));
        let mut reg = Registry {
            versions: tree("versions")?,
            aliases: tree("aliases")?,
            records: tree("records")?,
            audit: tree("audit")?,
            meta: tree("meta")?,
            db,
            root: root.to_path_buf(),
            witness: options.witness.clone(),
            swept: Vec::new(),
            blobs,
        };
        if !options.inspect {
            reg.check_at_open()?;
            // The sled lock is held from here on: no other process writes into this registry, so every
            // temporary file is a dead writer's (see `sweep`).
            reg.swept = sweep::sweep_dirs(root, &reg.blobs.local_dirs(), true)?;
        }
        Ok(reg)
    }
}
