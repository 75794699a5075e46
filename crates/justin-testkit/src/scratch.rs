//! Scratch directories: a fresh, empty directory per test, removed with its contents when the
//! test ends, passing or not.

use std::path::{Path, PathBuf};

/// A new, empty directory under the system's temporary directory, removed at drop. It derefs
/// to its [`Path`], so `dir.join("x")` and `&dir` as a `&Path` work.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates one, named `justin-test-<uuid>`.
    ///
    /// # Panics
    /// When the directory cannot be created.
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("justin-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| {
            panic!(
                "cannot create the scratch directory {}: {e}",
                path.display()
            )
        });
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort, and never a panic in Drop: a leftover directory in the temporary
        // directory is harmless and its name says where it came from.
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_directory_exists_empty_until_dropped() {
        let dir = ScratchDir::new();
        let path = dir.path().to_path_buf();
        assert!(path.is_dir());
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
        std::fs::write(dir.join("file"), "x").unwrap();
        assert_ne!(ScratchDir::new().path(), path, "each is new");
        drop(dir);
        assert!(!path.exists(), "removed with its contents");
    }
}
