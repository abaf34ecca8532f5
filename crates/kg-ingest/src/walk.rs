//! Walking input paths as a lazy stream of files.
//!
//! The walk holds one directory listing per level of depth, never the list of
//! all files: memory follows the depth and width of the tree, not the number
//! of files in it. Entries of a directory are visited in byte order of their
//! names so that two runs over the same tree produce records in the same
//! order. Symbolic links to files are followed; links to directories are not
//! (that is how cycles are avoided).
//!
//! Junk that operating systems and editors leave behind (hidden files such as
//! macOS `._*` resource forks and `.DS_Store`, `Thumbs.db`, `__MACOSX`
//! folders) is skipped with a note when found inside a directory. A path the
//! caller names explicitly is always read, a named pipe included (read to
//! its end, like `cat` would); inside directories, anything but regular
//! files and links to them is skipped.

use std::fs;
use std::path::{Path, PathBuf};

/// What the walk found at one path.
#[derive(Debug)]
pub(crate) enum WalkItem {
    /// A regular file to read.
    File(PathBuf),
    /// Junk skipped on purpose, with why.
    Skipped(PathBuf, &'static str),
    /// A directory or entry that could not be listed.
    Unreadable(PathBuf, std::io::Error),
}

/// Why a directory entry is junk, or `None` if it should be read.
pub(crate) fn junk_reason(name: &str) -> Option<&'static str> {
    if name.starts_with("._") {
        Some("macos_resource_fork")
    } else if name == "__MACOSX" {
        Some("macos_archive_metadata")
    } else if name.starts_with('.') {
        Some("hidden")
    } else if name.eq_ignore_ascii_case("Thumbs.db") || name.eq_ignore_ascii_case("desktop.ini") {
        Some("windows_metadata")
    } else if name.ends_with('~') {
        Some("editor_backup")
    } else {
        None
    }
}

/// Extensions of the formats kg reads. Other files found inside a directory
/// (images, archives, the CSV mapping itself) are skipped with a note; a file
/// named explicitly is always handed to the readers, which decide by content.
pub(crate) const KNOWN_EXTENSIONS: &[&str] = &[
    "pdf", "txt", "text", "rst", "log", "adoc", "org", "md", "markdown", "mdown", "mkd", "csv",
    "tsv",
];

/// True for a named pipe (FIFO).
#[cfg(unix)]
fn is_fifo(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_fifo()
}

/// True for a named pipe (FIFO).
#[cfg(not(unix))]
fn is_fifo(_meta: &fs::Metadata) -> bool {
    false
}

fn has_known_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| KNOWN_EXTENSIONS.iter().any(|k| e.eq_ignore_ascii_case(k)))
}

/// A lazy depth-first walk over the given roots.
pub(crate) struct Walk {
    roots: std::vec::IntoIter<PathBuf>,
    /// One sorted, partly consumed listing per open directory.
    stack: Vec<std::vec::IntoIter<PathBuf>>,
}

impl Walk {
    pub(crate) fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots: roots.into_iter(),
            stack: Vec::new(),
        }
    }

    fn open_dir(&mut self, dir: &Path) -> Option<WalkItem> {
        let listing = match fs::read_dir(dir) {
            Ok(listing) => listing,
            Err(e) => return Some(WalkItem::Unreadable(dir.to_path_buf(), e)),
        };
        let mut entries = Vec::new();
        for entry in listing {
            match entry {
                Ok(entry) => entries.push(entry.path()),
                Err(e) => return Some(WalkItem::Unreadable(dir.to_path_buf(), e)),
            }
        }
        entries.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
        self.stack.push(entries.into_iter());
        None
    }

    /// Classifies one path; `explicit` is true for roots named by the caller.
    fn visit(&mut self, path: PathBuf, explicit: bool) -> Option<WalkItem> {
        if !explicit {
            if let Some(reason) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(junk_reason)
            {
                return Some(WalkItem::Skipped(path, reason));
            }
        }
        // symlink_metadata: a link to a directory is not descended into.
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => return Some(WalkItem::Unreadable(path, e)),
        };
        if meta.is_dir() {
            return self.open_dir(&path);
        }
        if meta.file_type().is_symlink() {
            return match fs::metadata(&path) {
                Ok(target) if target.is_file() && (explicit || has_known_extension(&path)) => {
                    Some(WalkItem::File(path))
                }
                Ok(target) if target.is_file() => {
                    Some(WalkItem::Skipped(path, "unsupported_file_type"))
                }
                Ok(target) if target.is_dir() && explicit => self.open_dir(&path),
                Ok(target) if is_fifo(&target) && explicit => Some(WalkItem::File(path)),
                Ok(_) => Some(WalkItem::Skipped(path, "symlink_to_directory")),
                Err(e) => Some(WalkItem::Unreadable(path, e)),
            };
        }
        if meta.is_file() {
            if !explicit && !has_known_extension(&path) {
                return Some(WalkItem::Skipped(path, "unsupported_file_type"));
            }
            Some(WalkItem::File(path))
        } else if explicit && is_fifo(&meta) {
            Some(WalkItem::File(path))
        } else {
            Some(WalkItem::Skipped(path, "not_a_regular_file"))
        }
    }
}

impl Iterator for Walk {
    type Item = WalkItem;

    fn next(&mut self) -> Option<WalkItem> {
        loop {
            if let Some(top) = self.stack.last_mut() {
                match top.next() {
                    Some(path) => {
                        if let Some(item) = self.visit(path, false) {
                            return Some(item);
                        }
                    }
                    None => {
                        self.stack.pop();
                    }
                }
                continue;
            }
            let root = self.roots.next()?;
            if let Some(item) = self.visit(root, true) {
                return Some(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_recognised_and_documents_are_not() {
        assert_eq!(junk_reason("._report.pdf"), Some("macos_resource_fork"));
        assert_eq!(junk_reason(".DS_Store"), Some("hidden"));
        assert_eq!(junk_reason("Thumbs.db"), Some("windows_metadata"));
        assert_eq!(junk_reason("notes.md~"), Some("editor_backup"));
        assert_eq!(junk_reason("report.pdf"), None);
        assert_eq!(junk_reason("_underscore.txt"), None);
    }

    #[test]
    fn walk_is_sorted_recursive_and_skips_junk() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::create_dir_all(dir.path().join("b/sub"))?;
        fs::create_dir_all(dir.path().join("__MACOSX"))?;
        fs::write(dir.path().join("b/sub/z.txt"), "z")?;
        fs::write(dir.path().join("b/a.txt"), "a")?;
        fs::write(dir.path().join("a.md"), "m")?;
        fs::write(dir.path().join("b/mapping.toml"), "x")?;
        fs::write(dir.path().join("._a.md"), "junk")?;
        fs::write(dir.path().join("__MACOSX/x.txt"), "junk")?;
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for item in Walk::new(vec![dir.path().to_path_buf()]) {
            match item {
                WalkItem::File(p) => files.push(p.strip_prefix(dir.path()).map(Path::to_path_buf)),
                WalkItem::Skipped(p, why) => {
                    skipped.push((p.file_name().map(|n| n.to_owned()), why))
                }
                WalkItem::Unreadable(p, e) => panic!("{} unreadable: {e}", p.display()),
            }
        }
        let files: Vec<PathBuf> = files.into_iter().filter_map(Result::ok).collect();
        assert_eq!(
            files,
            vec![
                PathBuf::from("a.md"),
                PathBuf::from("b/a.txt"),
                PathBuf::from("b/sub/z.txt")
            ]
        );
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped
            .iter()
            .any(|(_, why)| *why == "unsupported_file_type"));
        assert!(skipped.iter().any(|(_, why)| *why == "macos_resource_fork"));
        assert!(skipped
            .iter()
            .any(|(_, why)| *why == "macos_archive_metadata"));
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn a_named_pipe_is_read_when_named_and_skipped_inside_a_directory() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let fifo = dir.path().join("stream.pdf");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
        assert!(status.success());
        let named: Vec<WalkItem> = Walk::new(vec![fifo.clone()]).collect();
        assert!(
            matches!(&named[..], [WalkItem::File(p)] if *p == fifo),
            "{named:?}"
        );
        let inside: Vec<WalkItem> = Walk::new(vec![dir.path().to_path_buf()]).collect();
        assert!(
            matches!(&inside[..], [WalkItem::Skipped(p, "not_a_regular_file")] if *p == fifo),
            "{inside:?}"
        );
        Ok(())
    }
}
